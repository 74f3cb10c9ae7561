"""Instruction-tuning data with videos: the image pipeline's dataset (`image_llavolta.data`) plus video records.

Records follow the Video-LLaVA instruction format (one JSON list per file)::

    {"id": "v_123", "video": "cats/a.mp4" | ["a.mp4", ...],     ("image" the same way; neither: text only)
     "conversations": [{"from": "human", "value": "<video>\\nWhat happens?"}, {"from": "gpt", "value": "..."}]}

Media paths are relative to `video_root` / `image_root`. With a `frames_root`, a video whose frame directory
`frames_root/<video_id>/frames.json` exists (written by `data_prep extract-frames`) is read from there instead
of being decoded; `video_id` is the path relative to the video root without extension, separators -> "__".
Failures, batching and the modality sampler are the image side's, re-exported here.
"""

from __future__ import annotations

import os

import torch

from image_llavolta import data as image_data
from image_llavolta.data import ModalityLengthGroupedSampler, SampleFailure, TrainCollator

from .configs import placeholder_tokens
from .frames import frame_dir_name, video_source
from .inputs import load_video

__all__ = ["InstructionDataset", "ModalityLengthGroupedSampler", "SampleFailure", "TrainCollator", "frame_dir_name"]


class InstructionDataset(image_data.InstructionDataset):
    """LLaVA / Video-LLaVA instruction records (videos, images, text) as labelled, pixel-ready training samples.

    Takes the image dataset's arguments (`max_length`, `template`, `flip_prob`, `seed` by keyword) plus the
    video roots.
    """

    # videos first: a record with both is a video sample, and its video is loaded (and fails) first
    MEDIA = {"video": ("<video>", "pixel_values_videos"), **image_data.InstructionDataset.MEDIA}
    placeholder_tokens = staticmethod(placeholder_tokens)

    def __init__(
        self,
        data_files,
        tokenizer,
        config,
        image_root: str | os.PathLike | None = None,
        video_root: str | os.PathLike | None = None,
        frames_root: str | os.PathLike | None = None,
        **kwargs,
    ):
        super().__init__(data_files, tokenizer, config, image_root, **kwargs)
        self.video_root = os.fspath(video_root) if video_root is not None else ""
        self.frames_root = os.fspath(frames_root) if frames_root is not None else None

    def video_source(self, video: str) -> str:
        """Where a video is read from: its frame directory under frames_root when finished, else the file."""
        return video_source(video, self.video_root, self.frames_root)

    def media_source(self, kind: str, media: str) -> str:
        """Where a record's video or image is read from."""
        return self.video_source(media) if kind == "video" else super().media_source(kind, media)

    def load_media(self, kind: str, source: str) -> torch.Tensor:
        """(T, 3, S, S) pixels of a video, or an image's pixels."""
        return load_video(source, self.config) if kind == "video" else super().load_media(kind, source)
