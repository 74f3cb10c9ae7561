"""Model inputs from a prompt and its media: frames sampled and processed, placeholders expanded, batches padded."""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from image_llavolta.conversation import tokenize_prompt
from image_llavolta.processing import process_image

from .configs import placeholder_tokens
from .frames import SampledFrames, read_frames
from .modeling import num_frames
from .processing import process_frames

Media = str | os.PathLike | SampledFrames | np.ndarray | Image.Image


def load_video(video: Media, config) -> torch.Tensor:
    """(T, 3, S, S) pixels of a video file, frame dir, `SampledFrames` or T×H×W×3 uint8 array."""
    if isinstance(video, (str, os.PathLike)):
        video = read_frames(video, num_frames=num_frames(config))
    frames = video.frames if isinstance(video, SampledFrames) else video
    if len(frames) != num_frames(config):
        raise ValueError(f"a video has {len(frames)} frames; the model is configured for {num_frames(config)}")
    return process_frames(frames, size=config.vision_config.image_size)


def load_image(image: Media, config, pad_to_square: bool = True) -> torch.Tensor:
    """(3, S, S) pixels of an image file, PIL image or H×W×3 uint8 array (LLaVA-1.5's "pad" aspect by default)."""
    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(image) as opened:
                image = opened.convert("RGB")
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read image {image}: {err}") from None
    return process_image(image, size=config.vision_config.image_size, pad_to_square=pad_to_square)


def encode_sample(tokenizer, config, text: str, videos: Sequence[Media] = (), images: Sequence[Media] = ()) -> dict:
    """One sample: `input_ids` (list) with expanded placeholders, and `pixel_values_videos` / `pixel_values`.

    `text` is the full prompt (e.g. `VICUNA_V1.render([...])`); its `<video>` and `<image>` placeholders are
    matched in order to `videos` and `images`.
    """
    for tag, media in (("<video>", videos), ("<image>", images)):
        if text.count(tag) != len(media):
            raise ValueError(f"the prompt has {text.count(tag)} {tag} placeholder(s) but {len(media)} were given")
    sample = {"input_ids": tokenize_prompt(tokenizer, text, placeholder_tokens(config))}
    if videos:
        sample["pixel_values_videos"] = torch.stack([load_video(v, config) for v in videos])
    if images:
        sample["pixel_values"] = torch.stack([load_image(i, config) for i in images])
    return sample


def collate(samples: Sequence[dict], pad_token_id: int, padding_side: str = "left") -> dict:
    """Pad `input_ids` into a batch with an attention mask; stack the pixel tensors in sample order."""
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
    for key in ("pixel_values_videos", "pixel_values"):
        parts = [s[key] for s in samples if key in s]
        if parts:
            batch[key] = torch.cat(parts)
    return batch
