"""Staged training of the chat-template families: `python -m video_llavolta.train_chat CONFIG.yaml [key=value ...]`.

LLaVA-OneVision, Qwen2-VL and Qwen2.5-VL (`TRAINED`, by model type). The run's model is a local checkpoint
(`model.path`, the family's Hugging Face layout or the toolkit's own) whose tokenizer carries the chat template;
the scheme YAMLs are the same as for the other families. Records are video instruction records
(`video_llavolta.data`); each turn is the tokenizer's chat template rendering of the history plus the new question
with the generation prompt, as at inference, and the labels are the reply and its end-of-turn token. Image records
are refused: an anyres or dynamic-resolution image's token count depends on its size, which this dataset does not
compute. Qwen-VL training frames are resized to one square size per run (`qwen.training_frame_size`) for the same
reason; its QA inference keeps each video's aspect.
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass

import torch

from image_llavolta.checkpoint import default_attn_implementation
from image_llavolta.commands import command_main
from image_llavolta.conversation import tokenize_prompt
from image_llavolta.data import SampleFailure
from image_llavolta.labels import IGNORE_INDEX, conversation_error
from image_llavolta.train import add_arguments, dataset_options, run_family, tokenizer_for_run, train_on_dataset
from image_llavolta.train_config import TrainConfig, load_config

from . import onevision, qwen
from .configs import num_frames
from .data import InstructionDataset
from .inputs import read_video
from .models.qwen_vl import token_types


def encode_chat(
    tokenizer, conversations, placeholders: dict[str, tuple[int, int]], sample_id: str
) -> tuple[list[int], list[int]]:
    """`(input_ids, labels)` of a conversation through the tokenizer's chat template; labels on the replies only."""
    problem = conversation_error(conversations)
    if problem is None and any("<video>" in t["value"] for t in conversations[1::2]):
        problem = "a gpt turn contains a visual placeholder (the model cannot emit visual tokens)"
    if problem is None and getattr(tokenizer, "chat_template", None) is None:
        problem = "the tokenizer has no chat template (the prompts come from it)"
    if problem:
        raise ValueError(f"sample {sample_id!r}: {problem}")

    def render(messages, prompt=False):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=prompt, tokenize=False) if messages else ""

    def encode(text):  # only the sequence's first piece keeps a BOS, as encode_conversation does
        skip = 1 if ids and tokenizer.bos_token_id is not None else 0
        return tokenize_prompt(tokenizer, text, placeholders)[skip:] if text else []

    messages, ids, labels, done = [], [], [], ""
    for human, gpt in zip(conversations[::2], conversations[1::2]):
        messages.append(onevision.user_message(human["value"]))
        prompt = render(messages, prompt=True)
        if not prompt.startswith(done):
            raise ValueError(f"sample {sample_id!r}: the chat template does not render the history as a prefix")
        piece = encode(prompt[len(done) :])
        ids += piece
        labels += [IGNORE_INDEX] * len(piece)
        reply = encode(gpt["value"]) + [tokenizer.eos_token_id]
        ids += reply
        labels += reply
        messages.append({"role": "assistant", "content": [{"type": "text", "text": gpt["value"]}]})
        done = render(messages)
        # what the template writes after the reply's end-of-turn token (a newline) precedes the next turn
        cut = done.rfind(tokenizer.eos_token)
        if cut < 0:
            raise ValueError(f"sample {sample_id!r}: the chat template ends an assistant turn without the EOS token")
        glue = encode(done[cut + len(tokenizer.eos_token) :]) if len(messages) < len(conversations) else []
        ids += glue
        labels += [IGNORE_INDEX] * len(glue)
    return ids, labels


class ChatInstructionDataset(InstructionDataset):
    """Video instruction records as training samples of a chat-template family (its prompts, its frames)."""

    MEDIA = {"video": ("<video>", "pixel_values_videos")}

    def _read(self, path: str) -> list[dict]:
        records = super()._read(path)
        for index, record in enumerate(records):
            if "image" in record:
                raise ValueError(
                    f"{path}: record {index} (id {record.get('id')!r}): image records are not supported for "
                    f"{type(self).FAMILY} training (an image's token count depends on its size)"
                )
        return records

    def _encode(self, index: int) -> tuple[list[int], list[int]]:
        record = self.records[index]
        return encode_chat(self.tokenizer, record["conversations"], self.placeholders, str(record["id"]))

    def read_frames(self, source: str):
        """The configured frame count of a video (T x H x W x 3 uint8)."""
        frames = read_video(source, self.config).frames
        if len(frames) != num_frames(self.config):
            raise ValueError(f"a video has {len(frames)} frames; the model is configured for {num_frames(self.config)}")
        return frames


class OneVisionInstructionDataset(ChatInstructionDataset):
    """LLaVA-OneVision samples: `<video>` placeholders, frames at the tower's square size."""

    FAMILY = "LLaVA-OneVision"

    @staticmethod
    def placeholder_tokens(config):
        """`<video>` → (id, tokens of one video of the configured frame count, newline included)."""
        return onevision.video_placeholder(config, num_frames(config))

    def load_media(self, kind: str, source: str):
        """(T, 3, S, S) pixels of a video, processed as the model's processor does."""
        return onevision.process_frames(self.read_frames(source), size=self.config.vision_config.image_size)


class QwenInstructionDataset(ChatInstructionDataset):
    """Qwen2-VL / Qwen2.5-VL samples: `<|video_pad|>` placeholders, patches of frames at the run's square size,
    each video's grid and the tokens' `mm_token_type_ids`."""

    FAMILY = "Qwen-VL"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.flip_prob:  # a flip of flattened patches is no mirror of the frame
            raise ValueError("data.flip_prob is not supported for Qwen-VL training (its pixels are patches)")
        self.settings = qwen.patch_settings(self.config)
        self.size = qwen.training_frame_size(self.config, self.settings)
        self.grid = video_grid(self.config, self.settings)

    @staticmethod
    def placeholder_tokens(config):
        """`<|video_pad|>` → (id, t·h·w/merge² tokens of one training video)."""
        settings = qwen.patch_settings(config)
        grid = video_grid(config, settings)
        return {"<|video_pad|>": (config.video_token_id, grid[0] * grid[1] * grid[2] // settings.merge_size**2)}

    def load_media(self, kind: str, source: str) -> torch.Tensor:
        """(t·h·w, 3·tp·p·p) patches of a video at the run's frame size."""
        return qwen.frames_to_patches(self.read_frames(source), self.settings, self.size)[0]

    def __getitem__(self, index: int) -> dict | SampleFailure:
        sample = super().__getitem__(index)
        if isinstance(sample, SampleFailure):
            return sample
        if (videos := sample.get("pixel_values_videos")) is not None:  # (V, t·h·w, D): the model takes rows
            sample["pixel_values_videos"] = videos.flatten(0, 1)  # (V·t·h·w, D)
            sample["video_grid_thw"] = torch.tensor([self.grid] * len(videos))
        sample["mm_token_type_ids"] = token_types(self.config, sample["input_ids"])
        return sample


def video_grid(config, settings) -> list[int]:
    """[t, h, w] of every training video of a Qwen-VL run."""
    return qwen.video_grid(num_frames(config), qwen.training_frame_size(config, settings), settings)


@dataclass(frozen=True)
class ChatFamily:
    """What staged training needs of a chat-template family."""

    load_pretrained: Callable
    dataset: type[ChatInstructionDataset]
    video_tag: str  # what its chat template writes for a video part
    carried: tuple[str, ...] = ()  # files of the checkpoint the trained one needs too (how its pixels are made)


QWEN_VL = ChatFamily(qwen.load_pretrained, QwenInstructionDataset, "<|video_pad|>", ("preprocessor_config.json",))
TRAINED = {  # model type -> its family's training pieces
    "llava_onevision": ChatFamily(onevision.load_pretrained, OneVisionInstructionDataset, "<video>"),
    "qwen2_vl": QWEN_VL,
    "qwen2_5_vl": QWEN_VL,
}


def model_for_run(config: TrainConfig, tokenizer):
    """The run's model: a local checkpoint (compression off) of a chat-template family, its tokenizer's video id
    matching its config."""
    m = config.model
    if m.path is None:
        raise ValueError(
            f"a run of {sorted(TRAINED)} trains a local checkpoint: set model.path (its tokenizer has the chat "
            "template)"
        )
    family = run_family(config)
    if family not in TRAINED:
        raise ValueError(
            f"this run trains a {family!r} model, not one of {sorted(TRAINED)}: run it with `llavolta train`"
        )
    model = TRAINED[family].load_pretrained(
        m.path, compression=None, attn_implementation=m.attn_implementation or default_attn_implementation()
    )
    tag = TRAINED[family].video_tag
    if tokenizer.convert_tokens_to_ids(tag) != model.config.video_token_id:
        raise ValueError(f"{m.path}: the tokenizer's {tag} id is not the config's video_token_id")
    return model


def train(config: TrainConfig, resume: str | None = None, callbacks=()) -> dict:
    """Run one configured training of a chat-template family; returns the run report."""
    tokenizer = tokenizer_for_run(config)
    model = model_for_run(config, tokenizer)
    d = config.data
    options = {k: v for k, v in dataset_options(config).items() if k != "template"}
    dataset = TRAINED[model.config.model_type].dataset(
        d.train, tokenizer, model.config, video_root=d.video_root, frames_root=d.frames_root, **options
    )
    os.makedirs(config.output_dir, exist_ok=True)
    for name in TRAINED[model.config.model_type].carried:
        if os.path.isfile(source := os.path.join(config.model.path, name)):
            shutil.copyfile(source, os.path.join(config.output_dir, name))
    return train_on_dataset(config, model, tokenizer, dataset, resume, callbacks)


def run(args: argparse.Namespace) -> int:
    """Load the run config and train."""
    train(load_config(args.config, args.overrides), args.resume)
    return 0


main = command_main(add_arguments, run, "python -m video_llavolta.train_chat", __doc__)

if __name__ == "__main__":
    raise SystemExit(main())
