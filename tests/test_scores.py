"""query_attention recomputes one row of a layer's attention map: it must equal the eager map's row."""

import pytest
import torch
from tiny_models import pad_batch, text_config
from transformers import LlamaModel

from image_llavolta.compression.scores import query_attention


@pytest.mark.parametrize("side", ["left", "right"])
def test_query_attention_equals_eager_attention_row(side):
    torch.manual_seed(0)
    cfg = text_config()  # 4 heads over 2 key-value heads: grouped-query attention
    cfg._attn_implementation = "eager"
    model = LlamaModel(cfg).eval()
    seqs = [torch.randint(3, 80, (n,)).tolist() for n in (11, 7, 9)]
    ids, mask, positions = pad_batch(seqs, side)
    with torch.no_grad():
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            output_hidden_states=True,
            output_attentions=True,
        )
        rope = model.rotary_emb(out.hidden_states[0], position_ids=positions)
        last = mask.shape[1] - 1 - mask.flip(1).argmax(1)  # last real token of each row
        for layer in range(cfg.num_hidden_layers):
            for query in (last, last - 2):
                got = query_attention(model.layers[layer], out.hidden_states[layer], rope, query, mask)
                want = out.attentions[layer][torch.arange(3), :, query]  # (B, heads, L)
                torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
                assert torch.allclose(got.sum(-1), torch.ones(3, cfg.num_attention_heads))
                future = torch.arange(mask.shape[1])[None, None] > query[:, None, None]
                assert bool((got[future.expand_as(got)] == 0).all())
