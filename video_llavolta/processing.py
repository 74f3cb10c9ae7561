"""Video-frame preprocessing for Video-LLaVA, without torchvision.

Frames follow Video-LLaVA's video transform: /255, normalize (OpenAI CLIP mean/std), short side scaled to
`size` with bilinear `interpolate` (pytorchvideo's ShortSideScale size rule), centre crop. We normalize before
resizing, as Video-LLaVA does; bilinear weights sum to one, so normalizing after the resize gives the same
result up to float rounding.

Flipping is an opt-in training augmentation: `flip=True` mirrors horizontally, the default never does, and
nothing here is random; the caller decides (e.g. `flip=rng.random() < 0.5`). Evaluation never flips.
(Video-LLaVA's video transform flips at random even at evaluation time; we don't copy that.)
Images use `image_llavolta.processing` in LanguageBind's mode for Video-LLaVA models (bicubic on the float
tensor, no antialias).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from image_llavolta.processing import normalize


def process_frames(frames: np.ndarray, size: int = 224, flip: bool = False) -> torch.Tensor:
    """Video frames (T x H x W x 3 uint8) to a normalized float tensor of shape (T, 3, size, size)."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"frames must be uint8 T x H x W x 3, got {frames.dtype} {frames.shape}")
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    video = normalize(video)
    height, width = video.shape[-2:]
    # ShortSideScale: the short side becomes `size`, the long one floor(long / short * size).
    if width < height:
        new_h, new_w = int(math.floor(height / width * size)), size
    else:
        new_h, new_w = size, int(math.floor(width / height * size))
    if (new_h, new_w) != (height, width):  # a frame already at the target size stays bit-exact
        video = F.interpolate(video, size=(new_h, new_w), mode="bilinear", align_corners=False)
    top, left = int(round((new_h - size) / 2)), int(round((new_w - size) / 2))
    video = video[..., top : top + size, left : left + size]
    return video.flip(-1) if flip else video.contiguous()
