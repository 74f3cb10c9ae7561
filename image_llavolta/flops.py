"""Analytic FLOP count of a Llama-style decoder prefill, for ideal speedups and the efficiency report."""
from __future__ import annotations


def decoder_layer_flops(config, tokens: int) -> int:
    """FLOPs (2 per multiply-add) of one decoder layer on `tokens` tokens with causal attention, no cache."""
    d = config.hidden_size
    head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
    q_dim = config.num_attention_heads * head_dim
    kv_dim = config.num_key_value_heads * head_dim
    projections = 2 * tokens * d * (q_dim + 2 * kv_dim) + 2 * tokens * q_dim * d
    # QKᵀ and AV over the causal triangle: tokens·(tokens+1)/2 query-key pairs per head
    attention = 2 * 2 * (tokens * (tokens + 1) // 2) * q_dim
    mlp = 2 * tokens * d * config.intermediate_size * 3  # gate, up, down
    return projections + attention + mlp


def prefill_flops(config, full_tokens: int, compressed_tokens: int, layer: int, logits_tokens: int = 1) -> int:
    """FLOPs of a prefill: `layer` layers on the full sequence, the rest on the compressed one, plus the LM head."""
    n = config.num_hidden_layers
    k = min(layer, n)
    body = k * decoder_layer_flops(config, full_tokens) + (n - k) * decoder_layer_flops(config, compressed_tokens)
    return body + 2 * logits_tokens * config.hidden_size * config.vocab_size
