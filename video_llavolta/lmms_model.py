"""The lmms-eval model "llavolta" for every model family: images and videos, compressed at test time or not.

    python -m lmms_eval --model llavolta --model_args pretrained=CKPT,compression=2:8 --tasks videomme --batch_size 4
    python -m lmms_eval --model llavolta --model_args pretrained=CKPT --include_path configs/lmms_tasks \\
        --tasks llavolta_msvd_qa

`image_llavolta.lmms_model.Llavolta` says how to install lmms-eval and what the model arguments are
(`pretrained`, `tokenizer`, `compression=none|from_config|K:S[:method]`, `batch_size`, `device`, `dtype`,
`template`); this model takes the same, loads any family's checkpoint (`video_llavolta.families`: LLaVA-1.5,
Video-LLaVA, LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL), and answers videos as well as images (the chat-template
families: one video per request, its prompt through the tokenizer's chat template, as `qa_inference` encodes it).

A visual that is a video file (`video_llavolta.frames.VIDEO_EXTENSIONS`) or a frame directory (`llavolta
extract-frames`) is a video, as lmms-eval's video tasks pass them (paths); it is read by the toolkit's frame sampler
with the checkpoint's frame count and short-clip policy and processed as in training and `qa_inference`
(`video_llavolta.inputs.read_video` and `encode_sample`). A text without placeholders gets one "<video>\\n" per
video, then one "<image>\\n" per image, in front of it (Video-LLaVA's video QA prompt is "<video>\\n{question}").
Requests of one call are batched by generation length and by their kinds of media, so that images, videos and
text-only requests never share a batch. A LLaVA-1.5 checkpoint answers images exactly as the image model does,
and refuses videos.

Registered under "llavolta" through the `lmms_eval.models` entry point of pyproject.toml (lmms-eval 0.7's model
registry; `manifest()` is its payload) and through `register_model`, for lmms-eval versions that look models up
there.
"""

from __future__ import annotations

import os

import torch

from image_llavolta.lmms_model import Llavolta, _as_image

from .families import family_for
from .frames import VIDEO_EXTENSIONS
from .inputs import encode_sample, read_video
from .qa_inference import QUESTION_ENCODERS, question_encoder

try:  # the optional `eval` extra
    from lmms_eval.api.registry import register_model
except ImportError:
    register_model = None

MODEL_NAME = "llavolta"


def is_video(visual) -> bool:
    """Whether a task visual is a video: a path to a video file or to a frame directory."""
    if not isinstance(visual, (str, os.PathLike)):
        return False
    path = os.fspath(visual)
    return path.lower().endswith(VIDEO_EXTENSIONS) or os.path.isdir(path)


class VideoLlavolta(Llavolta):
    """lmms-eval model: a local checkpoint of any family with LLaVolta compression; images and videos."""

    def load_model(self, pretrained: str, dtype: torch.dtype) -> torch.nn.Module:
        """The checkpoint, by its family, loaded strictly with the compression spec its config stores."""
        return family_for(pretrained).load_pretrained(pretrained, dtype=dtype)

    @property
    def answers_videos(self) -> bool:
        """Whether the checkpoint has a video placeholder (Video-LLaVA) or answers images only (LLaVA-1.5)."""
        return getattr(self.model.config, "video_token_id", None) is not None

    def read_visual(self, visual):
        """A video path as it is (read when encoded), anything else as an image."""
        if is_video(visual):
            if not self.answers_videos:
                raise ValueError(f"{visual}: a {self.model.config.model_type} checkpoint answers images, not videos")
            return os.fspath(visual)
        return _as_image(visual)

    def visual_kind(self, visual) -> str:
        """The kind of a visual: "video" or "image"."""
        return "video" if is_video(visual) else "image"

    def batch_key(self, request) -> tuple:
        """The kinds of a request's visuals, in order: images, videos and text only never share a batch."""
        _, _, doc_to_visual, doc_id, task, split = request.args
        return tuple(self.visual_kind(v) for v in self._visuals(doc_to_visual, doc_id, task, split))

    def encode(self, context: str, visuals) -> dict:
        """A model sample: frames sampled by the checkpoint's settings, placeholders added, template rendered."""
        if not self.answers_videos:
            return super().encode(context, visuals)
        videos = [v for v in visuals if self.visual_kind(v) == "video"]
        images = [v for v in visuals if self.visual_kind(v) == "image"]
        config = self.model.config
        if config.model_type in QUESTION_ENCODERS:  # a chat-template family (LLaVA-OneVision): one video per prompt
            if images or len(videos) != 1:
                raise ValueError(
                    f"a {config.model_type} checkpoint answers one video per request here, got {len(videos)} "
                    f"video(s) and {len(images)} image(s)"
                )
            frames = read_video(videos[0], config)
            return question_encoder(config)(self.tokenizer, config, self.template, context, frames)
        if "<video>" not in context and "<image>" not in context:
            context = "<video>\n" * len(videos) + "<image>\n" * len(images) + context
        text = self.template.render([context])
        frames = [read_video(v, self.model.config) for v in videos]  # the sampler's errors name the file
        # Video-LLaVA's images as its own pipeline reads them (encode_sample: resized, not padded).
        return encode_sample(self.tokenizer, self.model.config, text, videos=frames, images=images)


def manifest():
    """The `lmms_eval.models` entry point's payload: "llavolta" -> `VideoLlavolta`."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_NAME, simple_class_path=f"{__name__}.VideoLlavolta")


if register_model is not None:
    register_model(MODEL_NAME)(VideoLlavolta)  # the decorator registry, for versions that still consult it
