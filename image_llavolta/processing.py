"""Image preprocessing for LLaVA-1.5 (and Video-LLaVA's images), without torchvision.

Follows transformers' CLIPImageProcessor as LLaVA-1.5 configures it: optional "pad" aspect handling
(`expand2square` with the CLIP mean as background), shortest side resized to `size` with PIL bicubic, centre
crop, /255, CLIP mean/std normalization. `flip=True` mirrors horizontally (an opt-in training augmentation;
nothing here is random, and evaluation never flips).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PAD_COLOR = tuple(int(x * 255) for x in CLIP_MEAN)  # LLaVA-1.5's background for "pad"


def expand2square(image: Image.Image, background: tuple[int, int, int] = PAD_COLOR) -> Image.Image:
    """Pad an image to a square of its longer side, centred on a solid background (LLaVA's "pad")."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    square = Image.new(image.mode, (side, side), background)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


def process_image(
    image: Image.Image | np.ndarray,
    size: int = 224,
    pad_to_square: bool = False,
    flip: bool = False,
) -> torch.Tensor:
    """One image (PIL or H x W x 3 uint8) to a normalized float tensor of shape (3, size, size)."""
    image = _to_pil_rgb(image)
    if pad_to_square:
        image = expand2square(image)
    width, height = image.size
    # transformers' shortest_edge rule: short side -> size, long side -> int(size * long / short).
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)  # uint8 result, as transformers'
    top, left = (new_h - size) // 2, (new_w - size) // 2  # transformers' crop offsets (floor)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32)[top : top + size, left : left + size])
    pixels = pixels.permute(2, 0, 1) / 255.0
    pixels = normalize(pixels)
    return pixels.flip(-1) if flip else pixels.contiguous()


def process_images(images: Sequence[Image.Image | np.ndarray], **kwargs) -> torch.Tensor:
    """A list of images to a (N, 3, size, size) tensor; kwargs as for `process_image`."""
    return torch.stack([process_image(image, **kwargs) for image in images])


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """CLIP mean/std normalization of a (..., 3, H, W) tensor in [0, 1]."""
    mean = torch.tensor(CLIP_MEAN, dtype=pixels.dtype).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=pixels.dtype).view(3, 1, 1)
    return (pixels - mean) / std


def _to_pil_rgb(image: Image.Image | np.ndarray) -> Image.Image:
    """Accept a PIL image (any mode, converted like LLaVA's .convert("RGB")) or an H x W x 3 uint8 array."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"image must be a PIL image or uint8 H x W x 3 array, got {array.dtype} {array.shape}")
    return Image.fromarray(np.ascontiguousarray(array))
