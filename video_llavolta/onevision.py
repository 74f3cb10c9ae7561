"""LLaVA-OneVision configs: the real 7B shape (llava-onevision-qwen2-7b-ov-hf) and tiny ones for tests."""

from __future__ import annotations

from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

# Qwen2-7B-Instruct as the llava-hf port ships it (151646 <image>, 151647 <video>)
QWEN2_7B = dict(
    vocab_size=152128,
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    max_position_embeddings=32768,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    bos_token_id=151643,
    eos_token_id=151645,
    tie_word_embeddings=False,
)
# SigLIP so400m/14 at 384 px without its pooling head: 27 × 27 = 729 tokens per image or tile
SIGLIP_SO400M = dict(
    hidden_size=1152,
    intermediate_size=4304,
    num_hidden_layers=26,
    num_attention_heads=16,
    image_size=384,
    patch_size=14,
    vision_use_head=False,
)


def onevision_7b_config() -> LlavaOnevisionConfig:
    """LLaVA-OneVision-7B: SigLIP at 384 px (729 tokens per tile, 196 per frame), Qwen2-7B, anyres_max_9."""
    return LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**SIGLIP_SO400M),
        text_config=Qwen2Config(**QWEN2_7B),
        image_token_index=151646,
        video_token_index=151647,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )


def tiny_onevision_config(
    layers: int = 4,
    hidden: int = 64,
    vocab_size: int = 96,
    image_size: int = 28,
    patch_size: int = 4,
    aspect_ratio: str = "anyres_max_9",
) -> LlavaOnevisionConfig:
    """A tiny LLaVA-OneVision: a 7×7-patch SigLIP tower (16 tokens per frame), a Qwen2 decoder, 1×1..2×2 tiles.

    <image> and <video> are the last two vocabulary ids; pads with 0, BOS 1, EOS 2.
    """
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        vision_use_head=False,
    )
    text = Qwen2Config(
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
        tie_word_embeddings=False,
    )
    tiles = [[image_size * h, image_size * w] for h in (1, 2) for w in (1, 2)]
    return LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=vocab_size - 2,
        video_token_index=vocab_size - 1,
        image_grid_pinpoints=tiles,
        vision_aspect_ratio=aspect_ratio,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
