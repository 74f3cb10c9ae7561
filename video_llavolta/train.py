"""Staged video instruction tuning: `python -m video_llavolta.train CONFIG.yaml [key=value ...] [--resume auto|DIR]`.

Images and videos mix in one run. Launch on several GPUs or nodes with `deepspeed` or `torchrun` (see README);
a single CPU process works for tests. Video runs use DeepSpeed ZeRO-2 (optionally with optimizer offload):
ZeRO-3 is refused before anything starts, because ranks that hold only images or only videos call different
encoder sub-modules, so ZeRO-3's parameter all-gathers deadlock.
"""
from __future__ import annotations

import argparse
import json
import sys

from image_llavolta.conversation import get_template
from image_llavolta.tokenizer import build_word_tokenizer
from image_llavolta.train_config import TrainConfig, load_config
from image_llavolta.trainer import run_training

from .checkpoint import load_pretrained
from .configs import tiny_video_llava_config
from .data import InstructionDataset, ModalityLengthGroupedSampler, TrainCollator
from .modeling import build_model

ZERO3_REFUSAL = (
    "video training runs DeepSpeed ZeRO-2, not ZeRO-3: in a step, ranks holding only images and ranks holding "
    "only videos call different encoder sub-modules (image tower vs video tower), so ZeRO-3's parameter "
    "all-gathers wait on each other forever. Use configs/deepspeed/zero2.json (or zero2_offload.json)."
)


def conversation_texts(paths: list[str]) -> list[str]:
    """Every conversation value of instruction JSON files (to build a tiny model's word tokenizer)."""
    texts = []
    for path in paths:
        with open(path) as f:
            texts += [turn["value"] for record in json.load(f) for turn in record.get("conversations", [])]
    return texts


def build_tokenizer_and_model(config: TrainConfig):
    """The tokenizer and model of a run: a local checkpoint, or a tiny model sized to the data's vocabulary."""
    m = config.model
    if m.path is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(m.tokenizer or m.path)
        kwargs = {"attn_implementation": m.attn_implementation} if m.attn_implementation else {}
        model = load_pretrained(m.path, compression=None, temporal=m.temporal_attention, **kwargs)
    else:
        template = get_template(config.template)
        texts = [template.system, *template.roles, template.sep2] + conversation_texts(config.data.train)
        if m.tokenizer is not None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(m.tokenizer)
        else:
            tokenizer = build_word_tokenizer(texts)
        model_config = tiny_video_llava_config(vocab_size=len(tokenizer), **m.tiny)
        model = build_model(model_config, attn_implementation=m.attn_implementation or "sdpa", seed=config.seed)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.unk_token  # LLaVA's choice for Llama tokenizers
    return tokenizer, model


def train(config: TrainConfig, resume: str | None = None, callbacks=()) -> dict:
    """Run one configured training; returns the run report."""
    if config.zero_stage() == 3:
        raise ValueError(ZERO3_REFUSAL)
    tokenizer, model = build_tokenizer_and_model(config)
    d = config.data
    dataset = InstructionDataset(d.train, tokenizer, model.config, image_root=d.image_root, video_root=d.video_root,
                                 frames_root=d.frames_root, max_length=d.max_length,
                                 template=get_template(config.template), flip_prob=d.flip_prob, seed=config.seed)

    def sampler(global_batch_size: int, seed: int):
        return ModalityLengthGroupedSampler(dataset.lengths(), dataset.modalities(), global_batch_size, seed)

    return run_training(config, model, tokenizer, dataset, TrainCollator(tokenizer.pad_token_id), sampler, resume,
                        callbacks)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="run config (YAML)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. optim.lr=1e-4 scheme=two")
    parser.add_argument("--resume", default=None, help="'auto' (latest checkpoint in output_dir) or a checkpoint dir")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # set by the deepspeed launcher
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        train(config, args.resume)
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
