"""The Qwen2-VL and Qwen2.5-VL families: loading local checkpoints, frames to patches, chat prompts, measurement.

Checkpoints are Hugging Face directories in the `Qwen2.5-VL-7B-Instruct` layout: `config.json` (model_type
`qwen2_vl` / `qwen2_5_vl`), safetensors weights, the tokenizer with its chat template, and
`preprocessor_config.json` (patch, merge and temporal patch sizes, pixel bounds, mean and std).

Frames become patches as transformers' Qwen2-VL image processor makes them (`Qwen2VLImageProcessorPil`, which
needs no torchvision; its video processor does): each frame resized with PIL bicubic to the `smart_resize` size
(sides multiples of patch x merge, pixels within the bounds), /255, normalized, then frames grouped in temporal
patches (the last frame repeated to fill one) and flattened per patch in the merger's 2x2 order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

from image_llavolta.checkpoint import load_model, read_config, stored_compression
from image_llavolta.compression import FROM_CONFIG, SpecArgument, check_spec_argument, enable_compression
from image_llavolta.family import ModelFamily, synthetic_ids

from .models.qwen_vl import ADAPTER_OF_TYPE, build_model, tiny_config, token_types

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's, the Qwen processors' defaults
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
FRAME_SIZE_KEY = "llavolta_frame_size"  # config fields of tiny models: frame side in pixels, and frames per video,
FRAMES_KEY = "num_frames"  # of their synthetic inputs
DEFAULT_FRAMES = 8


@dataclass(frozen=True)
class PatchSettings:
    """What `preprocessor_config.json` says about turning pixels into patches (the Qwen processors' defaults)."""

    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    image_mean: tuple[float, ...] = CLIP_MEAN
    image_std: tuple[float, ...] = CLIP_STD

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> PatchSettings:
        """The settings of a checkpoint's `preprocessor_config.json` (defaults where it is silent)."""
        file = os.path.join(path, "preprocessor_config.json")
        if not os.path.isfile(file):
            raise FileNotFoundError(f"{path} has no preprocessor_config.json (the Qwen-VL layout has one)")
        with open(file) as f:
            data = json.load(f)
        size = data.get("size") or {}
        return cls(
            patch_size=data.get("patch_size", cls.patch_size),
            merge_size=data.get("merge_size", cls.merge_size),
            temporal_patch_size=data.get("temporal_patch_size", cls.temporal_patch_size),
            min_pixels=data.get("min_pixels", size.get("shortest_edge", cls.min_pixels)),
            max_pixels=data.get("max_pixels", size.get("longest_edge", cls.max_pixels)),
            image_mean=tuple(data.get("image_mean", cls.image_mean)),
            image_std=tuple(data.get("image_std", cls.image_std)),
        )


def frames_to_patches(
    frames: np.ndarray, settings: PatchSettings = PatchSettings(), size: tuple[int, int] | None = None
) -> tuple[torch.Tensor, list[int]]:
    """Frames (T x H x W x 3 uint8) to (pixel_values (t·h·w, 3·tp·p·p), grid [t, h, w]); one frame is an image.

    Frames are resized to `size` (height, width) when given, else to the `smart_resize` size of their own."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 or not len(frames):
        raise ValueError(f"frames must be uint8 T x H x W x 3 with T >= 1, got {frames.dtype} {frames.shape}")
    p, m, tp = settings.patch_size, settings.merge_size, settings.temporal_patch_size
    height, width = size or smart_resize(
        frames.shape[1], frames.shape[2], p * m, settings.min_pixels, settings.max_pixels
    )
    if height % (p * m) or width % (p * m):
        raise ValueError(f"frame size {height}x{width} is not a multiple of patch x merge = {p * m}")
    resized = np.stack(
        [np.asarray(Image.fromarray(f).resize((width, height), Image.BICUBIC), dtype=np.float32) for f in frames]
    )  # (T, H, W, 3)
    mean, std = np.asarray(settings.image_mean, np.float32), np.asarray(settings.image_std, np.float32)
    video = ((resized * np.float32(1 / 255) - mean) / std).transpose(0, 3, 1, 2)  # (T, 3, H, W)
    if len(video) % tp:  # fill the last temporal patch with copies of the last frame
        video = np.concatenate([video, np.repeat(video[-1:], tp - len(video) % tp, axis=0)])
    t, gh, gw = len(video) // tp, height // p, width // p
    patches = video.reshape(t, tp, 3, gh // m, m, p, gw // m, m, p)
    patches = patches.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)  # (t, gh/m, gw/m, m, m, C, tp, p, p): merger order
    return torch.from_numpy(np.ascontiguousarray(patches).reshape(t * gh * gw, 3 * tp * p * p)), [t, gh, gw]


def video_prompt(tokenizer, question: str, grid: list[int], merge: int = 2, system: str | None = None) -> str:
    """One user turn with one video, through the tokenizer's chat template, its video pad token expanded to the
    grid's t·h·w/merge² placeholders (as transformers' Qwen-VL processors expand it)."""
    messages = [] if system is None else [{"role": "system", "content": system}]
    messages.append({"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    pad = "<|video_pad|>"
    if text.count(pad) != 1:
        raise ValueError(f"the chat template gave {text.count(pad)} {pad} tokens for one video, not 1")
    t, h, w = grid
    return text.replace(pad, pad * (t * h * w // merge**2))


def video_inputs(tokenizer, config, question: str, frames: np.ndarray, settings: PatchSettings) -> dict:
    """Model inputs for one question about one video: ids, mask, mm_token_type_ids, pixels and grid."""
    pixels, grid = frames_to_patches(frames, settings)
    ids = tokenizer(video_prompt(tokenizer, question, grid, settings.merge_size), return_tensors="pt").input_ids
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "mm_token_type_ids": token_types(config, ids),
        "pixel_values_videos": pixels,
        "video_grid_thw": torch.tensor([grid]),
    }


def patch_settings(config) -> PatchSettings:
    """The patch settings of the checkpoint a config was loaded from (the defaults without its file)."""
    path = getattr(config, "_name_or_path", "")
    has_file = bool(path) and os.path.isfile(os.path.join(path, "preprocessor_config.json"))
    return PatchSettings.from_dir(path) if has_file else PatchSettings()


def training_frame_size(config, settings: PatchSettings) -> tuple[int, int]:
    """(height, width) of every training frame: the config's square frame side (448 px without one) through
    `smart_resize`, so every video of a run has the same grid and its token count is known without decoding it."""
    side = getattr(config, FRAME_SIZE_KEY, QWEN2_5_VL.image_size)
    unit = settings.patch_size * settings.merge_size
    return smart_resize(side, side, unit, settings.min_pixels, settings.max_pixels)


def video_segments(config, frames: np.ndarray) -> list[int]:
    """Visual tokens of each temporal patch of a video of `frames` (T x H x W x 3) as QA inference encodes it."""
    settings = patch_settings(config)
    unit = settings.patch_size * settings.merge_size
    size = smart_resize(frames.shape[1], frames.shape[2], unit, settings.min_pixels, settings.max_pixels)
    t, h, w = video_grid(len(frames), size, settings)
    return [h * w // settings.merge_size**2] * t


def video_grid(frames: int, size: tuple[int, int], settings: PatchSettings) -> list[int]:
    """[t, h, w] of `frames` frames of `size` px: temporal patches (the last one filled), patches per side."""
    p = settings.patch_size
    return [-(-frames // settings.temporal_patch_size), size[0] // p, size[1] // p]


def qa_sample(tokenizer, config, text: str, frames: np.ndarray) -> dict:
    """One QA sample (unbatched ids) for `image_llavolta.inputs.collate`: the prompt without its `<video>`
    tag (the chat template puts the video first), the checkpoint's patch settings (defaults without a file)."""
    question = text.replace("<video>", "").strip()
    inputs = video_inputs(tokenizer, config, question, frames, patch_settings(config))
    return {**inputs, "input_ids": inputs["input_ids"][0], "mm_token_type_ids": inputs["mm_token_type_ids"][0]}


def load_pretrained(path: str | os.PathLike, compression: SpecArgument = FROM_CONFIG, **kwargs):
    """A local Qwen2-VL / Qwen2.5-VL directory, loaded strictly, compressed per `compression` (FROM_CONFIG: its own)."""
    config = read_config(path)
    adapter = ADAPTER_OF_TYPE.get(config.model_type)
    if adapter is None:
        raise ValueError(f"{path}: model_type {config.model_type!r} is not one of {sorted(ADAPTER_OF_TYPE)}")
    if check_spec_argument(compression) is FROM_CONFIG:
        compression = stored_compression(path, config)
    model, _, _ = load_model(adapter, path, config, **kwargs)
    return enable_compression(model, compression)


def load_tokenizer(path: str | os.PathLike):
    """The checkpoint's tokenizer, which must carry its chat template (prompts are built through it)."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    if not tokenizer.chat_template:
        raise ValueError(f"{path}: the tokenizer has no chat template (tokenizer_config.json or chat_template.jinja)")
    return tokenizer


def _tiny(model_type: str):
    def tiny(
        layers: int, hidden: int, image_size: int, patch_size: int, seed: int = 0, num_frames: int = DEFAULT_FRAMES
    ):
        config = tiny_config(model_type, layers=layers, hidden=hidden)
        setattr(config, FRAMES_KEY, num_frames)
        config.vision_config.patch_size = patch_size
        if hasattr(config.vision_config, "window_size"):  # Qwen2.5-VL: windows of 2x2 merged patches
            config.vision_config.window_size = 4 * patch_size
        setattr(config, FRAME_SIZE_KEY, image_size)
        return build_model(config, seed=seed)

    return tiny


def _grid(config, frames: int) -> list[int]:
    """The grid of a square video at the config's frame size (the real models': 448 px)."""
    vision = config.vision_config
    side = getattr(config, FRAME_SIZE_KEY, QWEN2_5_VL.image_size)
    unit = vision.patch_size * vision.spatial_merge_size
    patches = max(1, round(side / unit)) * vision.spatial_merge_size
    return [-(-frames // vision.temporal_patch_size), patches, patches]


def _inputs(config, batch: int = 1, text_tokens: int = 64, seed: int = 0, frames: int | None = None) -> dict:
    """Text, vision start, one video of `frames` frames (default: the config's), vision end, text per sample
    (text_tokens + visual + 2 ids)."""
    g = torch.Generator().manual_seed(seed)
    frames = frames or getattr(config, FRAMES_KEY, None) or DEFAULT_FRAMES
    grid = _grid(config, frames)
    merge = config.vision_config.spatial_merge_size
    visual = grid[0] * grid[1] * grid[2] // merge**2
    ids = synthetic_ids(config, batch, text_tokens, config.video_token_id, visual + 2, g)
    before = text_tokens // 2  # the block: vision start, the video's placeholders, vision end
    ids[:, before], ids[:, before + visual + 1] = config.vision_start_token_id, config.vision_end_token_id
    vision = config.vision_config
    row = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "mm_token_type_ids": token_types(config, ids),
        "pixel_values_videos": torch.randn(batch * grid[0] * grid[1] * grid[2], row, generator=g),
        "video_grid_thw": torch.tensor([grid] * batch),
    }


def vision_flops(config, inputs: Mapping) -> int:
    """Analytic FLOPs of the Qwen-VL vision tower (2 per multiply-add): patch embedding, blocks, 2x2 merger.

    Attention runs within each temporal patch (Qwen2-VL) or, in Qwen2.5-VL, within windows of
    `window_size` px except in its `fullatt_block_indexes` blocks.
    """
    vision = config.vision_config
    total = 0
    for kind in ("image", "video"):
        grid = inputs.get(f"{kind}_grid_thw")
        if grid is None:
            continue
        for t, h, w in grid.tolist():
            total += _tower_flops(vision, t, h, w)
    return total


def _tower_flops(vision, t: int, h: int, w: int) -> int:
    n, m = t * h * w, vision.spatial_merge_size
    qwen25 = hasattr(vision, "fullatt_block_indexes")
    d = vision.hidden_size if qwen25 else vision.embed_dim
    out = vision.out_hidden_size if qwen25 else vision.hidden_size
    embed = 2 * n * vision.in_channels * vision.temporal_patch_size * vision.patch_size**2 * d
    mlp = 2 * n * 3 * d * vision.intermediate_size if qwen25 else 2 * n * 2 * d * int(d * vision.mlp_ratio)
    full_pairs = t * (h * w) ** 2  # within each temporal patch
    blocks = 0
    for i in range(vision.depth):
        pairs = full_pairs
        if qwen25 and i not in vision.fullatt_block_indexes:
            side = vision.window_size // vision.patch_size  # window side in patches (a multiple of the merge)
            pairs = sum(
                t * (min(side, h - y) * min(side, w - x)) ** 2 for y in range(0, h, side) for x in range(0, w, side)
            )
        blocks += 2 * n * 4 * d * d + 2 * 2 * pairs * d + mlp
    merger = 2 * (n // m**2) * (d * m**2 * d * m**2 + d * m**2 * out)
    return embed + blocks + merger


def _family(name: str, model_type: str) -> ModelFamily:
    return ModelFamily(
        name=name,
        model_type=model_type,
        load_pretrained=load_pretrained,
        tiny_model=_tiny(model_type),
        synthetic_inputs=_inputs,
        vision_flops=vision_flops,
        image_size=448,  # 7B video setting used here: 448 px frames, 32x32 patches, 256 tokens per temporal patch
        projector_flops=lambda config, tokens: 0,  # the 2x2 merger is part of the tower, counted there
        tiny_options=("num_frames",),
    )


QWEN2_VL = _family("Qwen2-VL", "qwen2_vl")
QWEN2_5_VL = _family("Qwen2.5-VL", "qwen2_5_vl")
