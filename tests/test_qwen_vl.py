"""The Qwen2-VL and Qwen2.5-VL adapters against stock transformers and an independent reference."""

import copy

import pytest
import torch
import torch.nn.functional as F
from qwen_models import STOCK, batch_inputs, reference_logits, sample, segments_of, tiny_qwen, type_ids
from transformers.modeling_outputs import BaseModelOutputWithPooling

from image_llavolta.compression import CompressionSpec, enable_compression, pooled_length
from image_llavolta.compression.cache import CompressedCache

FAMILIES = ["qwen2_vl", "qwen2_5_vl"]
TEXT_VOCAB = 156  # the tiny configs' placeholder and vision start/end ids follow


def mixed_samples(config):
    """Different resolutions, frame counts, images and videos, a text-only row."""
    return [
        sample(config, 3, ("image", 4, 6), 5, seed=1),
        sample(config, 2, ("video", 4, 4, 4), 3, ("image", 2, 4), 2, seed=2),
        sample(config, 9, seed=3),
        sample(config, 4, ("video", 2, 4, 6), 2, seed=4),
    ]


def valid_rows(logits_b, n, side):
    return logits_b[-n:] if side == "left" else logits_b[:n]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("layer,stride", [(2, 2), (0, 3), (1, 4)])
@torch.no_grad()
def test_batched_forward_matches_unbatched_reference(family, side, layer, stride):
    model = tiny_qwen(family)
    batch, per_sample = batch_inputs(mixed_samples(model.config), side)
    refs = [reference_logits(model, s, layer, stride, **v) for s, v in per_sample]
    enable_compression(model, CompressionSpec(layer, stride))
    out = model(**batch, mm_token_type_ids=type_ids(model.config, batch["input_ids"]))
    assert out.logits.shape[1] == max(r.shape[0] for r in refs)
    for b, ref in enumerate(refs):
        torch.testing.assert_close(valid_rows(out.logits[b], ref.shape[0], side), ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_segments_are_images_and_temporal_patches(family):
    model = enable_compression(tiny_qwen(family), CompressionSpec(1, 4))
    batch, per_sample = batch_inputs(mixed_samples(model.config), "left")
    out = model(**batch)  # mm_token_type_ids derived from the ids
    expected = []
    for s, v in per_sample:
        grids = [v.get(f"{k}_grid_thw", torch.zeros(0, 3)).tolist() for k in ("image", "video")]
        segments = segments_of(model.config, s, *grids)
        expected.append(sum(pooled_length(len(seg), 4) for seg in segments))
    # sample 1: 4 temporal patches of 4 tokens and an image of 2; sample 3: 2 temporal patches of 6 tokens give
    # 2 windows each (4 + 2), where windows across the patches would give 12 / 4 = 3
    assert out.compression.visual_tokens_out.tolist() == expected == [2, 5, 0, 4]
    assert out.compression.visual_tokens_in.tolist() == [6, 18, 0, 12]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("spec", [None, CompressionSpec(4, 8), CompressionSpec(1, 1)])
@torch.no_grad()
def test_noop_specs_give_stock_logits(family, spec):
    stock = tiny_qwen(family)
    batch, _ = batch_inputs(mixed_samples(stock.config), "left")
    batch["mm_token_type_ids"] = type_ids(stock.config, batch["input_ids"])
    expected = stock(**batch, compression=None).logits
    model = enable_compression(copy.deepcopy(stock), CompressionSpec(2, 4))
    enable_compression(model, spec)
    torch.testing.assert_close(model(**batch).logits, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_sdpa_and_eager_agree(family):
    outs = {}
    for attn in ("sdpa", "eager"):
        model = enable_compression(tiny_qwen(family, attn=attn), CompressionSpec(2, 3))
        batch, _ = batch_inputs(mixed_samples(model.config), "left")
        outs[attn] = model(**batch)
    valid = outs["sdpa"].attention_mask.bool()
    assert (~valid).any()
    torch.testing.assert_close(outs["sdpa"].logits[valid], outs["eager"].logits[valid], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_loss_is_text_only_and_aligned(family):
    model = tiny_qwen(family)
    config = model.config
    batch, per_sample = batch_inputs(mixed_samples(config), "right")
    visual_ids = (config.image_token_id, config.video_token_id)
    labels = batch["input_ids"].masked_fill(torch.isin(batch["input_ids"], torch.tensor(visual_ids)), -100)
    labels[batch["attention_mask"] == 0] = -100
    enable_compression(model, CompressionSpec(1, 4))
    loss = model(**batch, labels=labels).loss
    total, count = 0.0, 0
    for s, v in per_sample:
        ref = reference_logits(model, s, 1, 4, **v)
        grids = [v.get(f"{k}_grid_thw", torch.zeros(0, 3)).tolist() for k in ("image", "video")]
        starts = {seg[0]: seg for seg in segments_of(config, s, *grids)}
        kept, i = [], 0  # last original index of each compressed position
        while i < len(s):
            if i in starts:
                seg = starts[i]
                kept += [seg[min(w + 3, len(seg) - 1)] for w in range(0, len(seg), 4)]
                i = seg[-1] + 1
            else:
                kept.append(i)
                i += 1
        for row, last in enumerate(kept):
            if last + 1 < len(s) and s[last + 1] not in visual_ids:
                total += F.cross_entropy(ref[row], torch.tensor(s[last + 1]), reduction="sum")
                count += 1
    torch.testing.assert_close(loss, total / count, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layer", [0, 2])
@torch.no_grad()
def test_cached_decoding_matches_recompute(family, layer):
    model = enable_compression(tiny_qwen(family), CompressionSpec(layer, 2))
    batch, _ = batch_inputs(mixed_samples(model.config), "left")
    out = model(**batch, use_cache=True)
    cache = out.past_key_values
    assert isinstance(cache, CompressedCache)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    pixels = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
    for _ in range(3):
        new = out.logits[:, -1, :TEXT_VOCAB].argmax(-1, keepdim=True)  # a generated placeholder would not recompute
        ids, mask = torch.cat([ids, new], 1), torch.cat([mask, torch.ones_like(new)], 1)
        out = model(input_ids=new, attention_mask=mask, past_key_values=cache, use_cache=True)
        full = model(input_ids=ids, attention_mask=mask, **pixels)
        torch.testing.assert_close(out.logits[:, -1], full.logits[:, -1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_generate_matches_recomputed_greedy_decoding(family):
    model = enable_compression(tiny_qwen(family), CompressionSpec(1, 2))
    samples = mixed_samples(model.config)[:2]
    batch, _ = batch_inputs(samples, "left")
    batch["mm_token_type_ids"] = type_ids(model.config, batch["input_ids"])
    special = list(range(TEXT_VOCAB, model.config.text_config.vocab_size))
    generated = model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=0, suppress_tokens=special)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    pixels = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
    for _ in range(4):
        logits = model(input_ids=ids, attention_mask=mask, **pixels).logits[:, -1]
        new = logits[:, :TEXT_VOCAB].argmax(-1, keepdim=True)
        ids, mask = torch.cat([ids, new], 1), torch.cat([mask, torch.ones_like(new)], 1)
    assert generated.tolist() == ids.tolist()
    del batch["mm_token_type_ids"]  # generate() then makes 1-D positions, which the compressed prefill refuses
    with pytest.raises(ValueError, match="generate\\(\\) made 1-D positions for the visual tokens"):
        model.generate(**batch, max_new_tokens=1, pad_token_id=0)


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_noop_generate_equals_stock_generate(family):
    stock = tiny_qwen(family)
    batch, _ = batch_inputs(mixed_samples(stock.config), "left")
    batch["mm_token_type_ids"] = type_ids(stock.config, batch["input_ids"])
    kw = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    plain = STOCK[family]._from_config(stock.config, attn_implementation="sdpa").eval()  # transformers' own class
    plain.load_state_dict(stock.state_dict())
    expected = plain.generate(**batch, **kw)
    model = enable_compression(stock, CompressionSpec(4, 2))
    assert torch.equal(model.generate(**batch, **kw), expected)


@pytest.mark.parametrize("method", ["random", "kmeans", "fastv"])
@torch.no_grad()
def test_every_method_keeps_per_segment_slot_counts(method):
    model = enable_compression(tiny_qwen("qwen2_vl", attn="eager"), CompressionSpec(1, 2, method))
    batch, per_sample = batch_inputs(mixed_samples(model.config), "left")
    out = model(**batch)
    avg = enable_compression(copy.deepcopy(model), CompressionSpec(1, 2))(**batch)
    assert out.compression.visual_tokens_out.tolist() == avg.compression.visual_tokens_out.tolist() == [3, 9, 0, 6]
    assert out.logits.shape == avg.logits.shape and torch.isfinite(out.logits).all()
    # text-only row: nothing pooled, so every method gives average pooling's logits there
    torch.testing.assert_close(out.logits[2], avg.logits[2], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_spec_is_saved_and_restored(family, tmp_path):
    model = enable_compression(tiny_qwen(family), CompressionSpec(2, 4))
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path).eval()
    assert loaded.compression_spec == CompressionSpec(2, 4)
    batch, _ = batch_inputs(mixed_samples(model.config), "left")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, atol=1e-6, rtol=0)


def test_gradient_checkpointing_and_bf16():
    model = enable_compression(tiny_qwen("qwen2_5_vl"), CompressionSpec(1, 2)).train()
    batch, _ = batch_inputs(mixed_samples(model.config), "right")
    labels = batch["input_ids"].masked_fill(batch["input_ids"] >= model.config.image_token_id, -100)
    loss = model(**batch, labels=labels).loss
    model.gradient_checkpointing_enable()
    torch.testing.assert_close(model(**batch, labels=labels).loss, loss, atol=1e-6, rtol=1e-6)
    model = model.to(torch.bfloat16)
    bf16 = {k: v.bfloat16() if v.is_floating_point() else v for k, v in batch.items()}
    low = model(**bf16, labels=labels).loss
    low.backward()
    assert torch.isfinite(low) and abs(low.item() - loss.item()) < 0.1


def test_bad_inputs_are_clear_errors():
    model = enable_compression(tiny_qwen("qwen2_vl"), CompressionSpec(1, 2))
    config = model.config
    batch, _ = batch_inputs([sample(config, 3, ("image", 4, 6), 2), sample(config, 2, ("video", 4, 4, 4), 2)], "left")
    wrong = dict(batch, image_grid_thw=torch.tensor([[1, 4, 4]]))
    with pytest.raises(ValueError, match="sample 0: image 0 has 6 placeholder tokens .* gives 1·4·4/4 = 4"):
        model(**wrong)
    encoded = {k: v for k, v in batch.items() if k != "pixel_values"}
    encoded["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=(torch.zeros(5, 64),))}
    with pytest.raises(ValueError, match="image features hold 5 tokens for 6 image placeholders"):
        model(**encoded)
    with pytest.raises(ValueError, match="1 runs of video placeholder tokens .* video_grid_thw has 2 rows"):
        model(**dict(batch, video_grid_thw=torch.tensor([[2, 4, 4], [2, 4, 4]])))
    with pytest.raises(ValueError, match=r"position_ids of shape \(2, \d+\) .* M-RoPE positions"):
        model(**batch, position_ids=batch["attention_mask"].cumsum(1) - 1)
    with pytest.raises(ValueError, match="temporal patches of 4 tokens, fewer than one window of 8"):
        model(**batch, compression=CompressionSpec(1, 8))
    with pytest.raises(ValueError, match="second_per_grid_ts is a Qwen2.5-VL input"):
        model(**batch, second_per_grid_ts=torch.tensor([1.0]))
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    other = Qwen3VLForConditionalGeneration(
        Qwen3VLConfig(
            text_config=dict(
                vocab_size=64,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=1,
                head_dim=16,
            ),
            vision_config=dict(
                depth=1,
                hidden_size=16,
                intermediate_size=32,
                num_heads=2,
                out_hidden_size=32,
                deepstack_visual_indexes=[],
            ),
        )
    )
    with pytest.raises(ValueError, match="no compression adapter is registered for Qwen3VLForConditionalGeneration"):
        enable_compression(other, CompressionSpec(1, 2))


@torch.no_grad()
def test_assisted_decoding_crops_keep_the_positions():
    # Prompt-lookup decoding crops the cache into decoded tokens and back; the rope deltas must survive the crops.
    model = enable_compression(tiny_qwen("qwen2_5_vl"), CompressionSpec(1, 2))
    ids, images, videos = sample(model.config, 3, ("video", 2, 4, 6), 4, seed=9)
    ids = ids + ids[-4:] + ids[-4:]  # repeated n-grams: lookup proposes, then rejects
    batch, _ = batch_inputs([(ids, images, videos)], "left")
    batch["mm_token_type_ids"] = type_ids(model.config, batch["input_ids"])
    special = list(range(TEXT_VOCAB, model.config.text_config.vocab_size))
    kw = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0, suppress_tokens=special)
    greedy = model.generate(**batch, **kw)
    assert torch.equal(model.generate(**batch, prompt_lookup_num_tokens=3, **kw), greedy)
