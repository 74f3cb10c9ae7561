"""Staged training of any model family: `llavolta train CONFIG.yaml [key=value ...] [--resume auto|DIR]`.

The run config's model family (`model.family`, by default its checkpoint's `model_type`; see
`image_llavolta.train_config`) picks the trainer: `llava` trains as `python -m image_llavolta.train`,
`video_llava` as `python -m video_llavolta.train`, the chat-template families (`llava_onevision`, `qwen2_vl`,
`qwen2_5_vl`) as `python -m video_llavolta.train_chat`, with the same options.
"""

from __future__ import annotations

import argparse
import importlib

from image_llavolta.commands import command_main
from image_llavolta.train import add_arguments, run_family
from image_llavolta.train_config import load_config

__all__ = ["TRAINERS", "add_arguments", "main", "run"]

TRAINERS = {  # model type -> its trainer
    "llava": "image_llavolta.train",
    "video_llava": "video_llavolta.train",
    "llava_onevision": "video_llavolta.train_chat",
    "qwen2_vl": "video_llavolta.train_chat",
    "qwen2_5_vl": "video_llavolta.train_chat",
}


def run(args: argparse.Namespace) -> int:
    """Load the run config, find its family's trainer and train."""
    config = load_config(args.config, args.overrides)
    family = run_family(config)
    if family not in TRAINERS:
        named = "names no model.family" if family is None else f"trains a {family!r} model"
        raise ValueError(f"{args.config}: the run {named}; set model.family to one of {sorted(TRAINERS)}")
    importlib.import_module(TRAINERS[family]).train(config, args.resume)
    return 0


main = command_main(add_arguments, run, "python -m llavolta.train", __doc__)

if __name__ == "__main__":
    raise SystemExit(main())
