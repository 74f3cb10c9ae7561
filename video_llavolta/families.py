"""Every model family of the toolkit (`image_llavolta.family.ModelFamily`): LLaVA-1.5, Video-LLaVA, LLaVA-OneVision
(`video_llavolta.onevision`), Qwen2-VL and Qwen2.5-VL (`video_llavolta.qwen`).

`FAMILIES` maps model types to families for the command lines that take any checkpoint; `family_for` finds a
config's or a checkpoint directory's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from transformers import PretrainedConfig

from image_llavolta.efficiency.flops import vision_tower_flops
from image_llavolta.family import LLAVA, ModelFamily, find_family, synthetic_ids

from .checkpoint import load_pretrained
from .configs import DEFAULT_FRAMES, num_frames, placeholder_tokens, temporal_attention, tiny_video_llava_config
from .models.video_llava import build_model
from .onevision import LLAVA_ONEVISION
from .qwen import QWEN2_5_VL, QWEN2_VL


def _inputs(config, batch: int = 1, text_tokens: int = 64, seed: int = 0) -> dict:
    """Text, one video of the configured frame count, text per sample."""
    g = torch.Generator().manual_seed(seed)
    ids = synthetic_ids(config, batch, text_tokens, *placeholder_tokens(config)["<video>"], g)
    size = config.vision_config.image_size
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values_videos": torch.randn(batch, num_frames(config), 3, size, size, generator=g),
    }


def _vision_flops(config, inputs: Mapping) -> int:
    """The image tower on images, the video tower (with LanguageBind's temporal branch when configured) on frames."""
    flops = LLAVA.vision_flops(config, inputs)  # images: the same CLIP tower count as LLaVA's
    if (videos := inputs.get("pixel_values_videos")) is not None:
        count, frames = videos.shape[:2]
        flops += vision_tower_flops(
            config.vision_config, count * frames, temporal_frames=frames if temporal_attention(config) else 0
        )
    return flops


def _tiny(
    layers: int,
    hidden: int,
    image_size: int,
    patch_size: int,
    seed: int = 0,
    num_frames: int = DEFAULT_FRAMES,
    temporal_attention: bool = False,
):
    config = tiny_video_llava_config(
        layers=layers,
        hidden=hidden,
        image_size=image_size,
        patch_size=patch_size,
        num_frames=num_frames,
        temporal_attention=temporal_attention,
    )
    return build_model(config, seed=seed)


VIDEO_LLAVA = ModelFamily(
    name="Video-LLaVA",
    model_type="video_llava",
    load_pretrained=load_pretrained,
    tiny_model=_tiny,
    synthetic_inputs=_inputs,
    vision_flops=_vision_flops,
    image_size=224,  # LanguageBind's CLIP ViT-L/14 at 224 px: 256 tokens per image, 257 per frame
    tiny_options=("num_frames", "temporal_attention"),
)

FAMILIES: dict[str, ModelFamily] = {
    f.model_type: f for f in (LLAVA, VIDEO_LLAVA, LLAVA_ONEVISION, QWEN2_VL, QWEN2_5_VL)
}


def family_for(config_or_path: PretrainedConfig | str | os.PathLike) -> ModelFamily:
    """The family of a config or checkpoint directory; a ValueError naming it and the known model types otherwise."""
    return find_family(config_or_path, FAMILIES)
