"""Staged training of LLaVA-OneVision: `python -m video_llavolta.train_onevision CONFIG.yaml [key=value ...]`.

The run's model is a local checkpoint (`model.path`, the llava-onevision-qwen2-7b-ov-hf layout or the toolkit's
own) whose tokenizer carries the chat template; the scheme YAMLs are the same as for the other families. Records
are video instruction records (`video_llavolta.data`); each turn is the tokenizer's chat template rendering of the
history plus the new question with the generation prompt, as at inference, and the labels are the reply and its
end-of-turn token. Image records are refused: an anyres image's token count depends on its size, which this
dataset does not compute.
"""

from __future__ import annotations

import argparse

from image_llavolta.checkpoint import default_attn_implementation
from image_llavolta.commands import command_main
from image_llavolta.conversation import tokenize_prompt
from image_llavolta.labels import IGNORE_INDEX, conversation_error
from image_llavolta.train import add_arguments, check_family, dataset_options, tokenizer_for_run, train_on_dataset
from image_llavolta.train_config import TrainConfig, load_config

from .configs import num_frames
from .data import InstructionDataset
from .inputs import read_video
from .models.llava_onevision import LlavaOnevisionLlavoltaForConditionalGeneration
from .onevision import load_pretrained, process_frames, user_message, video_placeholder


def encode_chat(
    tokenizer, conversations, placeholders: dict[str, tuple[int, int]], sample_id: str
) -> tuple[list[int], list[int]]:
    """`(input_ids, labels)` of a conversation through the tokenizer's chat template; labels on the replies only."""
    problem = conversation_error(conversations)
    if problem is None and any("<video>" in t["value"] for t in conversations[1::2]):
        problem = "a gpt turn contains a visual placeholder (the model cannot emit visual tokens)"
    if problem is None and getattr(tokenizer, "chat_template", None) is None:
        problem = "the tokenizer has no chat template (LLaVA-OneVision prompts come from it)"
    if problem:
        raise ValueError(f"sample {sample_id!r}: {problem}")

    def render(messages, prompt=False):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=prompt, tokenize=False) if messages else ""

    def encode(text):  # only the sequence's first piece keeps a BOS, as encode_conversation does
        skip = 1 if ids and tokenizer.bos_token_id is not None else 0
        return tokenize_prompt(tokenizer, text, placeholders)[skip:] if text else []

    messages, ids, labels, done = [], [], [], ""
    for human, gpt in zip(conversations[::2], conversations[1::2]):
        messages.append(user_message(human["value"]))
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


class OneVisionInstructionDataset(InstructionDataset):
    """Video instruction records as LLaVA-OneVision training samples (chat-template prompts, its frames)."""

    MEDIA = {"video": ("<video>", "pixel_values_videos")}

    @staticmethod
    def placeholder_tokens(config):
        """`<video>` → (id, tokens of one video of the configured frame count, newline included)."""
        return video_placeholder(config, num_frames(config))

    def _read(self, path: str) -> list[dict]:
        records = super()._read(path)
        for index, record in enumerate(records):
            if "image" in record:
                raise ValueError(
                    f"{path}: record {index} (id {record.get('id')!r}): image records are not supported for "
                    "LLaVA-OneVision training (an anyres image's token count depends on its size)"
                )
        return records

    def _encode(self, index: int) -> tuple[list[int], list[int]]:
        record = self.records[index]
        return encode_chat(self.tokenizer, record["conversations"], self.placeholders, str(record["id"]))

    def load_media(self, kind: str, source: str):
        """(T, 3, S, S) pixels of a video: the configured frame count, processed as the model's processor does."""
        frames = read_video(source, self.config).frames
        if len(frames) != num_frames(self.config):
            raise ValueError(f"a video has {len(frames)} frames; the model is configured for {num_frames(self.config)}")
        return process_frames(frames, size=self.config.vision_config.image_size)


def model_for_run(config: TrainConfig, tokenizer) -> LlavaOnevisionLlavoltaForConditionalGeneration:
    """The run's LLaVA-OneVision: a local checkpoint (compression off), its tokenizer's ids matching its config."""
    check_family(config, "llava_onevision")
    m = config.model
    if m.path is None:
        raise ValueError(
            "a LLaVA-OneVision run trains a local checkpoint: set model.path (its tokenizer has the chat template)"
        )
    model = load_pretrained(
        m.path, compression=None, attn_implementation=m.attn_implementation or default_attn_implementation()
    )
    if tokenizer.convert_tokens_to_ids("<video>") != model.config.video_token_id:
        raise ValueError(f"{m.path}: the tokenizer's <video> id is not the config's video_token_id")
    return model


def train(config: TrainConfig, resume: str | None = None, callbacks=()) -> dict:
    """Run one configured LLaVA-OneVision training; returns the run report."""
    tokenizer = tokenizer_for_run(config)
    model = model_for_run(config, tokenizer)
    d = config.data
    options = {k: v for k, v in dataset_options(config).items() if k != "template"}
    dataset = OneVisionInstructionDataset(
        d.train, tokenizer, model.config, video_root=d.video_root, frames_root=d.frames_root, **options
    )
    return train_on_dataset(config, model, tokenizer, dataset, resume, callbacks)


def run(args: argparse.Namespace) -> int:
    """Load the run config and train."""
    train(load_config(args.config, args.overrides), args.resume)
    return 0


main = command_main(add_arguments, run, "python -m video_llavolta.train_onevision", __doc__)

if __name__ == "__main__":
    raise SystemExit(main())
