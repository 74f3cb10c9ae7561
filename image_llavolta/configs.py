"""LLaVA-1.5 configs: the real 7B shape (for token counts, FLOPs and benches) and tiny ones for tests and demos."""

from __future__ import annotations

from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

# OpenAI CLIP ViT-L/14 (LLaVA-1.5 uses the 336 px variant, LanguageBind the 224 px one)
CLIP_VIT_L14 = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    patch_size=14,
    projection_dim=768,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
)
# Vicuna-7B v1.5 with the llava-hf vocabulary (32000 + <image> + padding to a multiple of 64)
VICUNA_7B = dict(
    vocab_size=32064,
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)


def image_tokens(config) -> int:
    """Visual tokens one image becomes: the patches with the 'default' strategy (CLS dropped), plus CLS with 'full'."""
    vision = config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    return patches if config.vision_feature_select_strategy == "default" else patches + 1


def tiny_decoder_fields(layers: int = 4, hidden: int = 64, vocab_size: int = 128) -> dict:
    """The fields of a small random-initialisable decoder of any Llama-style family (pads with id 0, BOS 1, EOS 2)."""
    return dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def tiny_text_config(layers: int = 4, hidden: int = 64, vocab_size: int = 128, **overrides) -> LlamaConfig:
    """A small random-initialisable Llama decoder (pads with id 0, BOS 1, EOS 2)."""
    cfg = dict(tiny_decoder_fields(layers, hidden, vocab_size), tie_word_embeddings=False)
    return LlamaConfig(**{**cfg, **overrides})


def tiny_vision_config(
    image_size: int = 28, patch_size: int = 7, hidden: int = 32, layers: int = 2, heads: int = 2
) -> CLIPVisionConfig:
    """A small CLIP vision tower: (image_size / patch_size)² patches."""
    return CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=hidden,
    )


def llava15_config() -> LlavaConfig:
    """LLaVA-1.5-7B: CLIP ViT-L/14-336 (576 image tokens), 2-layer GELU projector, Vicuna-7B."""
    vision = CLIPVisionConfig(image_size=336, **CLIP_VIT_L14)
    return LlavaConfig(
        vision_config=vision,
        text_config=LlamaConfig(**VICUNA_7B),
        image_token_index=32000,
        image_seq_length=576,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        pad_token_id=32001,
    )


def tiny_llava_config(
    layers: int = 4,
    vocab_size: int = 128,
    image_size: int = 28,
    patch_size: int = 7,
    hidden: int = 64,
    image_token_index: int | None = None,
    vision: dict | None = None,
    text: dict | None = None,
) -> LlavaConfig:
    """A tiny LLaVA; the <image> placeholder id is `image_token_index` (default: the last vocabulary id).

    `vision` sizes the tower: {hidden, layers, heads} of `tiny_vision_config` (default 32, 2, 2); `text` sets
    further LlamaConfig fields of the decoder, e.g. {initializer_range: 0.06}.
    """
    if image_token_index is None:
        image_token_index = vocab_size - 1
    if not 0 <= image_token_index < vocab_size:
        raise ValueError(f"image_token_index {image_token_index} is outside the vocabulary (size {vocab_size})")
    cfg = LlavaConfig(
        vision_config=tiny_vision_config(image_size, patch_size, **(vision or {})),
        text_config=tiny_text_config(layers, hidden, vocab_size=vocab_size, **(text or {})),
        image_token_index=image_token_index,
        projector_hidden_act="gelu",
    )
    cfg.image_seq_length = image_tokens(cfg)
    return cfg


def placeholder_tokens(config: LlavaConfig) -> dict[str, tuple[int, int]]:
    """`<image>` → (its token id, visual tokens per image) for a LLaVA config."""
    return {"<image>": (config.image_token_id, image_tokens(config))}
