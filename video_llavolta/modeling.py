"""The Video-LLaVA-style model: transformers' Video-LLaVA with LanguageBind towers and the compressor.

Everything but the video tower is transformers' `VideoLlavaForConditionalGeneration` (image tower, 2-layer
GELU projector shared by images and frames, Llama/Vicuna decoder); the compressed forward comes from
`image_llavolta.compression`. Two config fields, saved in `config.json`, choose the video tower:
`video_temporal_attention` (LanguageBind's temporal branch, default off as in the HF port) and `num_frames`
(frames per video, 8 by default); `llavolta_short_clip` names how a clip with fewer frames is sampled
(`video_llavolta.frames.SHORT_CLIP_POLICIES`, default Video-LLaVA's "linspace").
"""
from __future__ import annotations

import torch
from image_llavolta.compression import CompressionSpec, enable_compression
from image_llavolta.compression.models import VideoLlavoltaForConditionalGeneration
from transformers import VideoLlavaConfig

from .frames import DEFAULT_SHORT_CLIP, SHORT_CLIP_POLICIES
from .towers import LanguageBindVideoTower

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


class VideoLlavaLanguageBindForConditionalGeneration(VideoLlavoltaForConditionalGeneration):
    """Video-LLaVA with the compressor, whose video tower keeps LanguageBind's temporal attention when configured."""

    def __init__(self, config: VideoLlavaConfig):
        super().__init__(config)
        if temporal_attention(config):
            self.model.video_tower = LanguageBindVideoTower(config.vision_config, num_frames(config))


def build_model(config: VideoLlavaConfig, compression: CompressionSpec | None = None, attn_implementation: str = "sdpa",
                seed: int | None = None) -> VideoLlavaLanguageBindForConditionalGeneration:
    """A randomly initialised model for `config` (tiny configs for tests and the quickstart), compression applied."""
    if seed is not None:
        torch.manual_seed(seed)
    model = VideoLlavaLanguageBindForConditionalGeneration._from_config(config, attn_implementation=attn_implementation)
    return enable_compression(model, compression)
