"""Staged LLaVA-1.5 instruction tuning: `python -m image_llavolta.train CONFIG.yaml [key=value ...] [--resume DIR]`.

Image and text-only records (LLaVA-1.5 format, see `image_llavolta.data`). Launch on several GPUs or nodes with
`deepspeed` or `torchrun`; a single CPU process works for tests. Unlike video runs, image runs may use DeepSpeed
ZeRO-3: every global batch holds one modality, so in a step all ranks run the vision tower or all skip it, and
a short batch is cycled so no rank is left without a sample. (A micro-batch whose samples all fail to load runs,
under ZeRO-3, a stand-in sample of its modality weighted zero, since the other ranks' parameter gathers wait for
its forward.)

The pieces shared with `video_llavolta.train` (tokenizer, dataset options, the training call, the options, the
family check) live here.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from transformers import AutoTokenizer, LlavaForConditionalGeneration

from .checkpoint import default_attn_implementation, load_pretrained, read_config
from .commands import command_main
from .compression import enable_compression
from .configs import tiny_llava_config
from .conversation import get_template
from .data import InstructionDataset, ModalityLengthGroupedSampler, TrainCollator
from .models.llava import LlavoltaForConditionalGeneration
from .tokenizer import build_word_tokenizer
from .train_config import TrainConfig, load_config
from .trainer import run_training


def conversation_texts(paths: list[str]) -> list[str]:
    """Every conversation value of instruction JSON files (to build a tiny model's word tokenizer)."""
    texts = []
    for path in paths:
        with open(path) as f:
            texts += [turn["value"] for record in json.load(f) for turn in record.get("conversations", [])]
    return texts


def tokenizer_for_run(config: TrainConfig):
    """The run's tokenizer: `model.tokenizer` or the checkpoint's, else a word tokenizer of the data (tiny models)."""
    m = config.model
    if m.tokenizer is not None or m.path is not None:
        source = m.tokenizer or m.path
        if not os.path.isdir(source):  # else transformers would take it for a Hub name and try to download
            raise FileNotFoundError(f"model: no local tokenizer directory at {source}")
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    else:
        template = get_template(config.template)
        texts = [template.system, *template.roles, template.sep2] + conversation_texts(config.data.train)
        tokenizer = build_word_tokenizer(texts)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.unk_token  # LLaVA's choice for Llama tokenizers
    return tokenizer


def token_id(tokenizer, token: str) -> int:
    """The id of `token`, which the tokenizer must hold as a single token (a tiny model's placeholder)."""
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or tid == tokenizer.unk_token_id:
        raise ValueError(f"the tokenizer has no {token} token, which a tiny model's placeholder id must come from")
    return tid


def run_family(config: TrainConfig) -> str | None:
    """The model type a run trains: `model.family`, else its checkpoint's (None: a tiny model naming none).

    A `model.family` that contradicts the checkpoint is an error naming both.
    """
    m = config.model
    stored = read_config(m.path).model_type if m.path is not None else None
    if m.family is not None and stored is not None and m.family != stored:
        raise ValueError(f"model.family is {m.family!r}, but {m.path} holds a {stored!r} checkpoint")
    return m.family or stored


def check_family(config: TrainConfig, family: str) -> None:
    """Refuse a run of another model family than `family` (a family's trainer calls it before building the model)."""
    found = run_family(config)
    if found not in (None, family):
        raise ValueError(f"this run trains a {found!r} model, not {family!r}: run it with `llavolta train`")


def model_for_run(config: TrainConfig, tokenizer) -> LlavoltaForConditionalGeneration:
    """The run's LLaVA: a local checkpoint (compression off), or a tiny random one sized to the tokenizer."""
    check_family(config, "llava")
    m = config.model
    if m.path is not None:
        return load_pretrained(
            m.path, compression=None, attn_implementation=m.attn_implementation or default_attn_implementation()
        )
    # The placeholder id is the tokenizer's own <image> id, not a position assumed in the vocabulary.
    model_config = tiny_llava_config(
        vocab_size=len(tokenizer), image_token_index=token_id(tokenizer, "<image>"), **m.tiny
    )
    torch.manual_seed(config.seed)
    model = LlavaForConditionalGeneration._from_config(
        model_config, attn_implementation=m.attn_implementation or "sdpa"
    )
    return enable_compression(model, None)


def dataset_options(config: TrainConfig) -> dict:
    """The `InstructionDataset` keyword arguments of a run, beyond the media roots."""
    d = config.data
    return dict(
        max_length=d.max_length, template=get_template(config.template), flip_prob=d.flip_prob, seed=config.seed
    )


def batch_sampler(config: TrainConfig, dataset):
    """The run's `(global_batch_size, seed) -> ModalityLengthGroupedSampler` over `dataset`."""
    # One global batch per megabatch sorts nothing across batches: random batches of one modality.
    grouping = {} if config.data.group_by_length else {"megabatch": 1}

    def sampler(global_batch_size: int, seed: int):
        return ModalityLengthGroupedSampler(
            dataset.lengths(), dataset.modalities(), global_batch_size, seed, **grouping
        )

    return sampler


def train_on_dataset(config: TrainConfig, model, tokenizer, dataset, resume: str | None = None, callbacks=()) -> dict:
    """Staged training on an `InstructionDataset`: modality-grouped batches, failures logged; returns the report."""
    return run_training(
        config,
        model,
        tokenizer,
        dataset,
        TrainCollator(tokenizer.pad_token_id),
        batch_sampler(config, dataset),
        resume,
        callbacks,
    )


def train(config: TrainConfig, resume: str | None = None, callbacks=()) -> dict:
    """Run one configured image training; returns the run report."""
    tokenizer = tokenizer_for_run(config)
    model = model_for_run(config, tokenizer)
    dataset = InstructionDataset(
        config.data.train, tokenizer, model.config, image_root=config.data.image_root, **dataset_options(config)
    )
    return train_on_dataset(config, model, tokenizer, dataset, resume, callbacks)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """A training run's options: `CONFIG.yaml [key=value ...] [--resume auto|DIR]` (video training's too)."""
    parser.add_argument("config", help="run config (YAML)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. optim.lr=1e-4 scheme=two")
    parser.add_argument("--resume", default=None, help="'auto' (latest checkpoint in output_dir) or a checkpoint dir")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # set by the deepspeed launcher


def run(args: argparse.Namespace) -> int:
    """Load the run config and train."""
    train(load_config(args.config, args.overrides), args.resume)
    return 0


main = command_main(add_arguments, run, "python -m image_llavolta.train", __doc__)

if __name__ == "__main__":
    raise SystemExit(main())
