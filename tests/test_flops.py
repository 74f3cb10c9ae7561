from types import SimpleNamespace

import pytest
import torch

from image_llavolta.compression import CompressionStats
from image_llavolta.efficiency.flops import (
    compressed_length,
    decoder_layer_flops,
    language_model_flops,
    prefill_flops,
    projector_flops,
    vision_tower_flops,
)

CFG = SimpleNamespace(
    hidden_size=4,
    num_attention_heads=2,
    num_key_value_heads=1,
    intermediate_size=8,
    num_hidden_layers=2,
    vocab_size=10,
    head_dim=None,
)


def test_layer_flops_by_hand():
    # q,k,v: 2·3·4·(4+2+2) = 192; o: 2·3·4·4 = 96; QKᵀ+AV over 6 causal pairs: 4·6·4 = 96; MLP: 2·3·4·8·3 = 576
    assert decoder_layer_flops(CFG, 3) == 192 + 96 + 96 + 576
    # one layer on 3 tokens, one on 1 token, and the LM head on the last position
    one_token = 2 * 1 * 4 * 8 + 2 * 4 * 4 + 4 * 1 * 4 + 2 * 4 * 8 * 3
    assert prefill_flops(CFG, 3, 1, layer=1) == 960 + one_token + 2 * 4 * 10


def test_attention_conventions_by_hand():
    # 3 tokens: 9 query-key pairs in full, 6 causal, none; each pair costs 4·q_dim = 16 FLOPs
    linear = 192 + 96 + 576
    assert decoder_layer_flops(CFG, 3, attention="full") == linear + 16 * 9
    assert decoder_layer_flops(CFG, 3, attention="causal") == linear + 16 * 6
    assert decoder_layer_flops(CFG, 3, attention="none") == linear
    assert prefill_flops(CFG, 3, 3, layer=2, attention="full") == 2 * (linear + 144) + 80
    with pytest.raises(ValueError, match="attention must be one of"):
        decoder_layer_flops(CFG, 3, attention="dense")


def test_vision_tower_by_hand():
    vision = SimpleNamespace(
        hidden_size=2, intermediate_size=4, num_hidden_layers=3, image_size=4, patch_size=2, num_channels=3
    )
    # 4 patches + CLS = 5 tokens. Patch conv: 2·4 patches·(3·2·2)·2 = 192 per image.
    # Per layer and image: q,k,v,o 2·5·4·2·2 = 160; QKᵀ+AV 4·25·2 = 200; fc1+fc2 2·5·2·(2·4) = 160 → 520
    assert vision_tower_flops(vision, 1) == 192 + 3 * 520
    assert vision_tower_flops(vision, 6) == 6 * (192 + 3 * 520)
    # temporal branch, videos of 3 frames (6 frames = 2 videos): per layer 2·6·5·4·2·2 = 960 for the projections,
    # attention over 3 frames at each of 2·5 positions: 4·(2·5)·3·3·2 = 720
    assert vision_tower_flops(vision, 6, temporal_frames=3) == 6 * (192 + 3 * 520) + 3 * (960 + 720)
    with pytest.raises(ValueError, match="do not split into videos"):
        vision_tower_flops(vision, 5, temporal_frames=3)


def test_projector_by_hand():
    config = SimpleNamespace(
        vision_config=SimpleNamespace(hidden_size=3),
        text_config=SimpleNamespace(hidden_size=5),
        vision_feature_layer=-2,
    )
    assert projector_flops(config, 7) == 2 * 7 * (3 * 5 + 5 * 5)
    config.vision_feature_layer = [-2, -5]  # two feature layers concatenated: twice the input width
    assert projector_flops(config, 7) == 2 * 7 * (6 * 5 + 5 * 5)


def test_language_model_flops_count_the_padded_batch():
    # Two samples padded to 5 tokens; K=1, S=2 pools 2 → 1 and 4 → 2 visual tokens: the samples keep 3 - 2 + 1 = 2
    # and 5 - 4 + 2 = 3 tokens, so layer 2 runs on the longest, 3. One CFG layer on t tokens with the full
    # attention matrix: 64t (q,k,v) + 32t (o) + 16t² (QKᵀ, AV) + 192t (MLP); LM head 2·4·10 = 80.
    config = SimpleNamespace(get_text_config=lambda decoder=True: CFG)
    inputs = {
        "input_ids": torch.zeros(2, 5, dtype=torch.long),
        "attention_mask": torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]),
    }
    pooled = CompressionStats(2, 1, 2, torch.tensor([2, 4]), torch.tensor([1, 2]))
    assert compressed_length(inputs, pooled) == 3
    assert language_model_flops(config, inputs, pooled) == 2 * (1840 + 1008 + 80)
    stock = CompressionStats(2, 0, 1, torch.tensor([2, 4]), torch.tensor([2, 4]))
    assert language_model_flops(config, inputs, stock) == 2 * (2 * 1840 + 80)
