"""Model inputs for LLaVA-1.5: images loaded and processed, samples padded into batches."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from .processing import preprocessing_mode, process_image

Media = str | os.PathLike | np.ndarray | Image.Image


def load_image(image: Media, config, pad_to_square: bool = True) -> torch.Tensor:
    """(3, S, S) pixels of an image file, PIL image or H×W×3 uint8 array ("pad" aspect by default), processed in
    the model config's preprocessing mode."""
    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(image) as opened:
                image = opened.convert("RGB")
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read image {image}: {err}") from None
    return process_image(
        image, size=config.vision_config.image_size, pad_to_square=pad_to_square, mode=preprocessing_mode(config)
    )


def collate(samples: Sequence[dict], pad_token_id: int, padding_side: str = "left") -> dict:
    """Pad `input_ids` (and `mm_token_type_ids`) into a batch with an attention mask; concatenate each
    `pixel_values*` and `*_grid_thw` tensor in sample order."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    width = max(len(s["input_ids"]) for s in samples)
    ids = torch.full((len(samples), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(samples), width, dtype=torch.long)
    for row, s in enumerate(samples):
        n = len(s["input_ids"])
        cols = slice(width - n, width) if padding_side == "left" else slice(0, n)
        ids[row, cols] = torch.as_tensor(s["input_ids"])
        mask[row, cols] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if any("mm_token_type_ids" in s for s in samples):  # Qwen-VL: per-token modality, padded as text (0)
        types = torch.zeros_like(ids)
        for row, s in enumerate(samples):
            n = len(s["input_ids"])
            types[row, slice(width - n, width) if padding_side == "left" else slice(0, n)] = s["mm_token_type_ids"]
        batch["mm_token_type_ids"] = types
    # Every pixel kind the samples carry (images; videos too for Video-LLaVA), and the per-item grids of
    # dynamic-resolution families (Qwen-VL's image_grid_thw, video_grid_thw), keys in first-seen order.
    for key in dict.fromkeys(k for s in samples for k in s if k.startswith("pixel_values") or k.endswith("_grid_thw")):
        batch[key] = torch.cat([s[key] for s in samples if key in s])
    return batch
