"""Video-LLaVA configs: the fields the toolkit adds to them, the real 7B shape and tiny ones for tests.

Fields saved in `config.json`: `video_temporal_attention` (LanguageBind's temporal branch in the video tower,
default off as in the HF port), `num_frames` (frames per video, 8 by default) and `llavolta_short_clip` (how a
clip with fewer frames is sampled, `video_llavolta.frames.SHORT_CLIP_POLICIES`, default Video-LLaVA's "linspace").
"""

from __future__ import annotations

from transformers import CLIPVisionConfig, LlamaConfig, VideoLlavaConfig

from image_llavolta.configs import CLIP_VIT_L14, VICUNA_7B, image_tokens, tiny_text_config, tiny_vision_config

from .frames import DEFAULT_SHORT_CLIP, SHORT_CLIP_POLICIES

TEMPORAL_KEY = "video_temporal_attention"
FRAMES_KEY = "num_frames"
DEFAULT_FRAMES = 8
SHORT_CLIP_KEY = "llavolta_short_clip"


def temporal_attention(config: VideoLlavaConfig) -> bool:
    """Whether the config asks for LanguageBind's temporal attention in the video tower."""
    return bool(getattr(config, TEMPORAL_KEY, False))


def num_frames(config: VideoLlavaConfig) -> int:
    """Frames per video the model is configured for."""
    return int(getattr(config, FRAMES_KEY, None) or DEFAULT_FRAMES)


def short_clip_policy(config: VideoLlavaConfig) -> str:
    """How the model's videos with fewer than `num_frames` frames are sampled (default: Video-LLaVA's linspace)."""
    policy = getattr(config, SHORT_CLIP_KEY, None) or DEFAULT_SHORT_CLIP
    if policy not in SHORT_CLIP_POLICIES:
        raise ValueError(f"the model config's {SHORT_CLIP_KEY} {policy!r} is not one of {SHORT_CLIP_POLICIES}")
    return policy


def frame_tokens(config: VideoLlavaConfig) -> int:
    """Visual tokens per video frame: every patch plus the CLS token (Video-LLaVA keeps it for frames)."""
    vision = config.vision_config
    return (vision.image_size // vision.patch_size) ** 2 + 1


def _finish(cfg: VideoLlavaConfig, frames: int, temporal: bool) -> VideoLlavaConfig:
    setattr(cfg, FRAMES_KEY, frames)
    setattr(cfg, TEMPORAL_KEY, temporal)
    cfg.image_seq_length = image_tokens(cfg)
    cfg.video_seq_length = frames * frame_tokens(cfg)
    return cfg


def video_llava_config(num_frames: int = DEFAULT_FRAMES, temporal_attention: bool = False) -> VideoLlavaConfig:
    """Video-LLaVA-7B: LanguageBind CLIP ViT-L/14 at 224 px (256 image tokens, 257 per frame), Vicuna-7B."""
    vision = CLIPVisionConfig(image_size=224, **CLIP_VIT_L14)
    cfg = VideoLlavaConfig(
        vision_config=vision,
        text_config=LlamaConfig(**VICUNA_7B),
        image_token_index=32000,
        video_token_index=32001,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    return _finish(cfg, num_frames, temporal_attention)


def tiny_video_llava_config(
    layers: int = 4,
    vocab_size: int = 128,
    num_frames: int = DEFAULT_FRAMES,
    temporal_attention: bool = False,
    image_size: int = 28,
    patch_size: int = 7,
    hidden: int = 64,
    vision: dict | None = None,
    text: dict | None = None,
) -> VideoLlavaConfig:
    """A tiny Video-LLaVA: <image> and <video> are the last two vocabulary ids.

    `vision` sizes both towers: {hidden, layers, heads} of `tiny_vision_config` (default 32, 2, 2); `text` sets
    further LlamaConfig fields of the decoder, e.g. {initializer_range: 0.06}.
    """
    cfg = VideoLlavaConfig(
        vision_config=tiny_vision_config(image_size, patch_size, **(vision or {})),
        text_config=tiny_text_config(layers, hidden, vocab_size=vocab_size, **(text or {})),
        image_token_index=vocab_size - 2,
        video_token_index=vocab_size - 1,
        projector_hidden_act="gelu",
    )
    return _finish(cfg, num_frames, temporal_attention)


def placeholder_tokens(config: VideoLlavaConfig) -> dict[str, tuple[int, int]]:
    """`<image>` / `<video>` → (token id, visual tokens per image / per video of `num_frames` frames)."""
    return {
        "<image>": (config.image_token_id, image_tokens(config)),
        "<video>": (config.video_token_id, num_frames(config) * frame_tokens(config)),
    }
