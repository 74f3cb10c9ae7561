"""Analytic FLOP counts of a LLaVA / Video-LLaVA prefill, for ideal speedups and the efficiency report.

Convention: 2 FLOPs per multiply-add of the matrix products (linear layers, the patch convolution, QKᵀ and AV);
norms, activations, softmax, RoPE and residual adds are left out (they are O(tokens·hidden), a fraction of a
percent at real widths). The attention scores (QKᵀ, AV) are counted one of three ways, `attention=`:

- "causal": the causal triangle only (what a kernel that skips fully masked blocks does);
- "full": the whole query×key matrix, which SDPA computes when it is given a mask, and which the DeepSpeed
  flops profiler counts for every `scaled_dot_product_attention` call (the efficiency report's cross-check);
- "none": not at all, which is what the DeepSpeed profiler reports when attention runs in flash-attn kernels
  (it patches torch functions, and flash-attn calls none of them).
"""
from __future__ import annotations


ATTENTION_MODES = ("causal", "full", "none")


def _attention_pairs(queries: int, keys: int, attention: str) -> int:
    """Query-key pairs counted: the causal triangle (queries are the last `queries` of `keys`), all, or none."""
    if attention not in ATTENTION_MODES:
        raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {attention!r}")
    if attention == "none":
        return 0
    if attention == "full":
        return queries * keys
    past = keys - queries
    return queries * past + queries * (queries + 1) // 2


def decoder_layer_flops(config, tokens: int, attention: str = "causal") -> int:
    """FLOPs (2 per multiply-add) of one decoder layer on `tokens` tokens, no cache; `attention` as in the module note."""
    d = config.hidden_size
    head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
    q_dim = config.num_attention_heads * head_dim
    kv_dim = config.num_key_value_heads * head_dim
    projections = 2 * tokens * d * (q_dim + 2 * kv_dim) + 2 * tokens * q_dim * d
    # QKᵀ and AV: each scored query-key pair costs head_dim multiply-adds per head, twice
    attention = 2 * 2 * _attention_pairs(tokens, tokens, attention) * q_dim
    mlp = 2 * tokens * d * config.intermediate_size * 3  # gate, up, down
    return projections + attention + mlp


def prefill_flops(config, full_tokens: int, compressed_tokens: int, layer: int, logits_tokens: int = 1,
                  attention: str = "causal") -> int:
    """FLOPs of one sequence's prefill: `layer` layers on the full sequence, the rest on the compressed one, LM head."""
    n = config.num_hidden_layers
    k = min(layer, n)
    body = (k * decoder_layer_flops(config, full_tokens, attention)
            + (n - k) * decoder_layer_flops(config, compressed_tokens, attention))
    return body + 2 * logits_tokens * config.hidden_size * config.vocab_size


def vision_tower_flops(vision_config, images: int, temporal_frames: int = 0) -> int:
    """FLOPs of a CLIP ViT on `images` images: patch convolution and every encoder layer (attention is not causal).

    `temporal_frames` = T > 0 adds LanguageBind's temporal branch (each patch position attends over the T frames
    of its video; `images` then counts frames, T per video). transformers runs every layer even when the
    features are read from an earlier one (LLaVA's layer -2), so all layers are counted.
    """
    d = vision_config.hidden_size
    patches = (vision_config.image_size // vision_config.patch_size) ** 2
    tokens = patches + 1  # CLS
    channels = getattr(vision_config, "num_channels", 3)
    patch_embedding = 2 * images * patches * channels * vision_config.patch_size ** 2 * d
    per_layer = (2 * images * tokens * 4 * d * d  # q, k, v, out
                 + 2 * 2 * images * tokens * tokens * d  # QKᵀ, AV
                 + 2 * images * tokens * 2 * d * vision_config.intermediate_size)  # fc1, fc2
    if temporal_frames:
        if images % temporal_frames:
            raise ValueError(f"vision_tower_flops: {images} frames do not split into videos of {temporal_frames}")
        per_layer += 2 * images * tokens * 4 * d * d + 2 * 2 * images * tokens * temporal_frames * d
    return patch_embedding + vision_config.num_hidden_layers * per_layer


def projector_flops(config, tokens: int) -> int:
    """FLOPs of the 2-layer MLP projector of LLaVA / Video-LLaVA on `tokens` visual tokens."""
    layers = config.vision_feature_layer
    width_in = config.vision_config.hidden_size * (1 if isinstance(layers, int) else len(layers))
    d = config.text_config.hidden_size
    return 2 * tokens * (width_in * d + d * d)
