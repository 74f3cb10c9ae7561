import pytest
import torch

from image_llavolta.compression import CompressionSpec, CompressionStats, compression_ratio, pooled_length


@pytest.mark.parametrize("layer,stride,percent", [(2, 8, 557), (2, 2, 188), (16, 8, 178), (16, 2, 133)])
def test_compression_ratio_matches_paper(layer, stride, percent):
    tokens_out = 576 // stride  # 576 divides evenly by both strides
    assert round(100 * compression_ratio(32, layer, 576, tokens_out)) == percent


def test_compression_ratio_formula_by_hand():
    # N=4, K=1, L=10, L_out=3: 40 / (3·3 + 1·10) = 40/19
    assert compression_ratio(4, 1, 10, 3) == pytest.approx(40 / 19)
    assert compression_ratio(32, 32, 576, 72) == 1.0  # pooling after the last layer compresses nothing
    assert compression_ratio(32, 0, 576, 72) == pytest.approx(8.0)


def test_pooled_length_keeps_partial_window():
    assert pooled_length(257, 8) == 33  # 32 full windows + 1 token
    assert pooled_length(256, 8) == 32
    assert pooled_length(5, 8) == 1


def test_stats_tokens_over_layers_matches_tables():
    full = CompressionStats(32, 32, 1, torch.tensor([576]), torch.tensor([576]))
    assert full.tokens_over_layers == 18432  # the tables' uncompressed #Tokens
    k2s8 = CompressionStats(32, 2, 8, torch.tensor([576]), torch.tensor([72]))
    assert k2s8.tokens_over_layers == 2 * 576 + 30 * 72
    assert k2s8.ratio == pytest.approx(18432 / k2s8.tokens_over_layers)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(layer=2, stride=0), "stride must be >= 1"),
        (dict(layer=-1, stride=2), "layer must be >= 0"),
        (dict(layer=2, stride=2, method="maxpool"), "method must be one of"),
        (dict(layer=2.0, stride=2), "layer must be an int"),
    ],
)
def test_bad_spec_is_a_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CompressionSpec(**kwargs)


def test_spec_dict_roundtrip_rejects_unknown_keys():
    spec = CompressionSpec(layer=2, stride=8)
    assert spec.method == "avgpool"
    assert CompressionSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="unknown CompressionSpec field"):
        CompressionSpec.from_dict({"layer": 2, "strde": 8})


def test_layer_outside_model():
    CompressionSpec(4, 2).check_fits(4)  # K = N: compress nothing, allowed
    with pytest.raises(ValueError, match="outside the model: it has 4 decoder layers"):
        CompressionSpec(5, 2).check_fits(4)
