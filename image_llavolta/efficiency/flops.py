"""Analytic FLOP counts of a prefill, part by part, and the paper's Table 5 TFLOPs column fitted on the 7B shape.

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

import torch

from ..compression import CompressionSpec, CompressionStats, pooled_length
from ..configs import llava15_config

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
    """FLOPs (2 per multiply-add) of one decoder layer on `tokens` tokens, no cache; `attention`: see the module."""
    d = config.hidden_size
    head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
    q_dim = config.num_attention_heads * head_dim
    kv_dim = config.num_key_value_heads * head_dim
    projections = 2 * tokens * d * (q_dim + 2 * kv_dim) + 2 * tokens * q_dim * d
    # QKᵀ and AV: each scored query-key pair costs head_dim multiply-adds per head, twice
    attention = 2 * 2 * _attention_pairs(tokens, tokens, attention) * q_dim
    mlp = 2 * tokens * d * config.intermediate_size * 3  # gate, up, down
    return projections + attention + mlp


def prefill_flops(
    config, full_tokens: int, compressed_tokens: int, layer: int, logits_tokens: int = 1, attention: str = "causal"
) -> int:
    """FLOPs of one sequence's prefill: `layer` layers on the full sequence, the rest on the compressed one, LM head."""
    n = config.num_hidden_layers
    k = min(layer, n)
    body = k * decoder_layer_flops(config, full_tokens, attention) + (n - k) * decoder_layer_flops(
        config, compressed_tokens, attention
    )
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
    patch_embedding = 2 * images * patches * channels * vision_config.patch_size**2 * d
    per_layer = (
        2 * images * tokens * 4 * d * d  # q, k, v, out
        + 2 * 2 * images * tokens * tokens * d  # QKᵀ, AV
        + 2 * images * tokens * 2 * d * vision_config.intermediate_size
    )  # fc1, fc2
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


def compressed_length(inputs: dict, stats: CompressionStats) -> int:
    """Padded length of the decoder's sequence after pooling: every sample keeps its text, its visual tokens shrink."""
    ids = inputs["input_ids"]
    mask = inputs.get("attention_mask")
    valid = mask.sum(1) if mask is not None else torch.full((ids.shape[0],), ids.shape[1])
    kept = valid.cpu() - stats.visual_tokens_in.cpu() + stats.visual_tokens_out.cpu()
    return int(kept.max())


def language_model_flops(config, inputs: dict, stats: CompressionStats, attention: str = "full") -> int:
    """Analytic FLOPs of a batch's decoder pass and LM head (logits of the last position), as the batch runs.

    The batch counts at its padded shape: every sample is `input_ids.shape[1]` long for layers 1..K, and as long
    as the longest pooled sample after. `attention` is the decoder's convention (see the module note).
    """
    text = config.get_text_config(decoder=True)
    batch, length = inputs["input_ids"].shape
    compressing = stats.stride > 1 and stats.layer < stats.num_layers
    short = compressed_length(inputs, stats) if compressing else length
    layer = stats.layer if compressing else text.num_hidden_layers
    return batch * prefill_flops(text, length, short, layer, logits_tokens=1, attention=attention)


def analytic_flops(family, model, inputs: dict, stats: CompressionStats, attention: str = "full") -> dict[str, int]:
    """Analytic prefill FLOPs of `inputs` split into vision encoder(s), projector and language model (with LM head).

    `family` (`image_llavolta.family.ModelFamily`) counts its vision encoders; their attention is not causal and
    always counts in full. One projector row per visual placeholder unless the family counts them.
    """
    rows = stats.tokens_in if family.projector_rows is None else family.projector_rows(model.config, inputs)
    parts = {
        "vision": family.vision_flops(model.config, inputs),
        "projector": (family.projector_flops or projector_flops)(model.config, rows),
        "language_model": language_model_flops(model.config, inputs, stats, attention),
    }
    return {**parts, "total": sum(parts.values())}


# ---- the paper's TFLOPs column on the real 7B shape --------------------------------------------------------------

# The paper's Table 5 (LLaVA-1.5-7B: N=32 layers, 576 visual tokens): (K, S) → (#Tokens, CR %, TFLOPs, latency ms).
PAPER_TABLE5 = {
    (2, 8): (3312, 557, 2.14, 37.9),
    (2, 2): (9792, 188, 4.77, 48.6),
    (16, 8): (10368, 178, 5.00, 51.3),
    (16, 2): (13824, 133, 6.40, 58.8),
    None: (18432, 100, 8.26, 68.5),
}
PAPER_LAYERS, PAPER_VISUAL_TOKENS = 32, 576


def paper_setting_label(key: tuple[int, int] | None) -> str:
    """How the report names a Table 5 row: 'stock' or 'K=2,S=8'."""
    return "stock" if key is None else CompressionSpec(*key).label()


def paper_7b_flops(text_tokens: int) -> dict:
    """Analytic TFLOPs of LLaVA-1.5-7B prefills for Table 5's settings, in each attention convention, vs the paper.

    The paper's prompt length is not stated; `text_tokens` is assumed, and for each convention the text length
    that makes the stock row equal the paper's 8.26 is fitted, with the worst relative error over the other rows.
    """
    config = llava15_config()
    text = config.text_config
    vision = vision_tower_flops(config.vision_config, 1) + projector_flops(config, PAPER_VISUAL_TOKENS)

    def tflops(key, t, attention, with_vision):
        layer, stride = key if key else (PAPER_LAYERS, 1)
        full, short = PAPER_VISUAL_TOKENS + t, pooled_length(PAPER_VISUAL_TOKENS, stride) + t
        llm = prefill_flops(text, full, short, layer, logits_tokens=1, attention=attention)
        return (llm + (vision if with_vision else 0)) / 1e12

    conventions = {}
    for attention in ATTENTION_MODES:
        for with_vision in (False, True):
            name = f"attention={attention}" + (", with vision tower+projector" if with_vision else ", LLM only")
            rows = {
                paper_setting_label(k): round(tflops(k, text_tokens, attention, with_vision), 3) for k in PAPER_TABLE5
            }
            stock = PAPER_TABLE5[None][2]
            fit = min(range(0, 1025), key=lambda t: abs(tflops(None, t, attention, with_vision) - stock))
            worst = max(abs(tflops(k, fit, attention, with_vision) / v[2] - 1) for k, v in PAPER_TABLE5.items())
            conventions[name] = {"tflops": rows, "fitted_text_tokens": fit, "fitted_max_rel_error": worst}
    return {
        "text_tokens": text_tokens,
        "paper_tflops": {paper_setting_label(k): v[2] for k, v in PAPER_TABLE5.items()},
        "conventions": conventions,
    }
