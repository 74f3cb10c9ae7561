"""Staged video instruction tuning: `python -m video_llavolta.train CONFIG.yaml [key=value ...] [--resume auto|DIR]`.

Images and videos mix in one run. Launch on several GPUs or nodes with `deepspeed` or `torchrun` (see README);
a single CPU process works for tests. Video runs use DeepSpeed ZeRO-2 (optionally with optimizer offload):
ZeRO-3 is refused before anything starts, because ranks that hold only images or only videos call different
encoder sub-modules, so ZeRO-3's parameter all-gathers deadlock.
"""

from __future__ import annotations

import argparse

from image_llavolta.checkpoint import default_attn_implementation
from image_llavolta.commands import command_main
from image_llavolta.train import (
    add_arguments,
    check_family,
    dataset_options,
    token_id,
    tokenizer_for_run,
    train_on_dataset,
)
from image_llavolta.train_config import TrainConfig, load_config

from .checkpoint import load_pretrained
from .configs import tiny_video_llava_config
from .data import InstructionDataset
from .models.video_llava import VideoLlavoltaForConditionalGeneration, build_model

ZERO3_REFUSAL = (
    "video training runs DeepSpeed ZeRO-2, not ZeRO-3: in a step, ranks holding only images and ranks holding "
    "only videos call different encoder sub-modules (image tower vs video tower), so ZeRO-3's parameter "
    "all-gathers wait on each other forever. Use configs/deepspeed/zero2.json (or zero2_offload.json)."
)


def model_for_run(config: TrainConfig, tokenizer) -> VideoLlavoltaForConditionalGeneration:
    """The run's Video-LLaVA: a local checkpoint (compression off), or a tiny random one sized to the tokenizer."""
    check_family(config, "video_llava")
    m = config.model
    if m.path is not None:
        return load_pretrained(
            m.path,
            compression=None,
            temporal=m.temporal_attention,
            attn_implementation=m.attn_implementation or default_attn_implementation(),
        )
    model_config = tiny_video_llava_config(vocab_size=len(tokenizer), **m.tiny)
    # The tiny config puts <image> and <video> last, as the word tokenizer does; another tokenizer may not.
    wanted = (model_config.image_token_id, model_config.video_token_id)
    if (token_id(tokenizer, "<image>"), token_id(tokenizer, "<video>")) != wanted:
        raise ValueError(f"a tiny Video-LLaVA needs <image> and <video> as the tokenizer's ids {wanted}")
    return build_model(model_config, attn_implementation=m.attn_implementation or "sdpa", seed=config.seed)


def train(config: TrainConfig, resume: str | None = None, callbacks=()) -> dict:
    """Run one configured training; returns the run report."""
    if config.zero_stage() == 3:
        raise ValueError(ZERO3_REFUSAL)
    tokenizer = tokenizer_for_run(config)
    model = model_for_run(config, tokenizer)
    d = config.data
    dataset = InstructionDataset(
        d.train,
        tokenizer,
        model.config,
        image_root=d.image_root,
        video_root=d.video_root,
        frames_root=d.frames_root,
        **dataset_options(config),
    )
    return train_on_dataset(config, model, tokenizer, dataset, resume, callbacks)


def run(args: argparse.Namespace) -> int:
    """Load the run config and train."""
    train(load_config(args.config, args.overrides), args.resume)
    return 0


main = command_main(add_arguments, run, "python -m video_llavolta.train", __doc__)

if __name__ == "__main__":
    raise SystemExit(main())
