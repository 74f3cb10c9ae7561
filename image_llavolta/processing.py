"""Image preprocessing for LLaVA-1.5 and Video-LLaVA, without torchvision: two named modes.

Both: optional "pad" aspect handling (`expand2square` with the CLIP mean as background, as both LLaVA-1.5 and
Video-LLaVA train and evaluate), shortest side resized to `size` (long side `int(size * long / short)`), centre
crop, /255, OpenAI CLIP mean/std normalization. They differ in the resize and the crop:

- "clip": transformers' CLIPImageProcessor as LLaVA-1.5 configures it: PIL's bicubic resize of the uint8 image
  (antialiased: its filter widens when shrinking), crop offsets floored.
- "languagebind": LanguageBind's image transform, which Video-LLaVA uses (torchvision 0.15 `ToTensor`,
  `Resize(224, BICUBIC)`, `CenterCrop(224)`, `Normalize`): the float tensor in [0, 1] is resized by bicubic
  interpolation (a = -0.75, half-pixel centres) without antialiasing and without clamping, and the crop offsets
  are `int(round((side - size) / 2))` (Python's round: halves go to even). On large images the two modes differ by
  up to ~0.7 in normalised units.

A model config names its mode in `llavolta_image_preprocessing`; without it, LLaVA models use "clip" and
Video-LLaVA models "languagebind" (`preprocessing_mode`). `flip=True` mirrors horizontally (an opt-in training
augmentation; nothing here is random, and evaluation never flips).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PAD_COLOR = tuple(int(x * 255) for x in CLIP_MEAN)  # LLaVA-1.5's background for "pad"
PREPROCESSING_KEY = "llavolta_image_preprocessing"  # config.json field naming the mode
DEFAULT_PREPROCESSING = {"llava": "clip", "video_llava": "languagebind"}  # by model_type: what each trained with


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
    mode: str = "clip",
) -> torch.Tensor:
    """One image (PIL or H x W x 3 uint8) to a normalized float tensor of shape (3, size, size)."""
    if mode not in IMAGE_PREPROCESSING:
        raise ValueError(f"unknown image preprocessing mode {mode!r}; known: {sorted(IMAGE_PREPROCESSING)}")
    image = _to_pil_rgb(image)
    if pad_to_square:
        image = expand2square(image)
    pixels = normalize(IMAGE_PREPROCESSING[mode](image, size))
    return pixels.flip(-1) if flip else pixels.contiguous()


def _resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) with the short side at `size`, the long one `int(size * long / short)` (both libraries)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def _clip_resize_crop(image: Image.Image, size: int) -> torch.Tensor:
    """CLIPImageProcessor: PIL bicubic on uint8, floored crop offsets; (3, size, size) in [0, 1]."""
    width, height = image.size
    new_w, new_h = _resized_size(width, height, size)
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)  # uint8 result, as transformers'
    top, left = (new_h - size) // 2, (new_w - size) // 2
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32)[top : top + size, left : left + size])
    return pixels.permute(2, 0, 1) / 255.0


def _languagebind_resize_crop(image: Image.Image, size: int) -> torch.Tensor:
    """LanguageBind: bicubic on the float tensor, no antialias, rounded crop offsets; (3, size, size) in [0, 1]."""
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0  # ToTensor
    height, width = pixels.shape[-2:]
    new_w, new_h = _resized_size(width, height, size)
    if (new_w, new_h) != (width, height):  # torchvision returns the input unchanged when the size already fits
        pixels = F.interpolate(pixels[None], size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=False)[
            0
        ]
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return pixels[:, top : top + size, left : left + size]


IMAGE_PREPROCESSING = {"clip": _clip_resize_crop, "languagebind": _languagebind_resize_crop}


def preprocessing_mode(config) -> str:
    """The image preprocessing mode a model config names, else its family's (Video-LLaVA: languagebind)."""
    mode = getattr(config, PREPROCESSING_KEY, None) or DEFAULT_PREPROCESSING.get(
        getattr(config, "model_type", None), "clip"
    )
    if mode not in IMAGE_PREPROCESSING:
        raise ValueError(f"the model config's {PREPROCESSING_KEY} {mode!r} is not one of {sorted(IMAGE_PREPROCESSING)}")
    return mode


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
