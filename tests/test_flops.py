from types import SimpleNamespace

from image_llavolta.flops import decoder_layer_flops, prefill_flops


def test_layer_flops_by_hand():
    cfg = SimpleNamespace(hidden_size=4, num_attention_heads=2, num_key_value_heads=1, intermediate_size=8,
                          num_hidden_layers=2, vocab_size=10, head_dim=None)
    # q,k,v: 2·3·4·(4+2+2) = 192; o: 2·3·4·4 = 96; QKᵀ+AV over 6 causal pairs: 4·6·4 = 96; MLP: 2·3·4·8·3 = 576
    assert decoder_layer_flops(cfg, 3) == 192 + 96 + 96 + 576
    # one layer on 3 tokens, one on 1 token, and the LM head on the last position
    one_token = 2 * 1 * 4 * 8 + 2 * 4 * 4 + 4 * 1 * 4 + 2 * 4 * 8 * 3
    assert prefill_flops(cfg, 3, 1, layer=1) == 960 + one_token + 2 * 4 * 10
