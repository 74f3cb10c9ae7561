"""Model inputs from a prompt and its media: frames sampled and processed, placeholders expanded, batches padded."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from image_llavolta.conversation import tokenize_prompt
from image_llavolta.inputs import Media as ImageMedia
from image_llavolta.inputs import collate, load_image

from .configs import num_frames, placeholder_tokens, short_clip_policy
from .frames import SampledFrames, read_frames
from .processing import process_frames

__all__ = [
    "Media",
    "collate",
    "encode_sample",
    "load_image",
    "load_video",
    "read_video",
]  # collate and load_image: the image side's

Media = ImageMedia | SampledFrames


def read_video(source: str | os.PathLike, config) -> SampledFrames:
    """The model's `num_frames` frames of a video file or frame dir, short clips sampled by its policy."""
    return read_frames(source, num_frames=num_frames(config), short_clip=short_clip_policy(config))


def load_video(video: Media, config) -> torch.Tensor:
    """(T, 3, S, S) pixels of a video file, frame dir, `SampledFrames` or T×H×W×3 uint8 array."""
    if isinstance(video, (str, os.PathLike)):
        video = read_video(video, config)
    frames = video.frames if isinstance(video, SampledFrames) else video
    if len(frames) != num_frames(config):
        raise ValueError(f"a video has {len(frames)} frames; the model is configured for {num_frames(config)}")
    return process_frames(frames, size=config.vision_config.image_size)


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
