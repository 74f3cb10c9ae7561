"""Loading checkpoints from local paths, strictly, with their compression setting: the shared loader and LLaVA's."""

from __future__ import annotations

import importlib.util
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable

import torch
from transformers import AutoConfig, PretrainedConfig

from .compression import CONFIG_KEY, FROM_CONFIG, CompressionSpec, SpecArgument, check_spec_argument, enable_compression
from .models.llava import LlavoltaForConditionalGeneration


class CheckpointMismatchError(ValueError):
    """A checkpoint's weights do not match the model built from its config (missing, unexpected or reshaped)."""


def default_attn_implementation() -> str:
    """flash_attention_2 when flash-attn is installed and a GPU is present, else SDPA (never required)."""
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def key_pattern(key: str) -> str:
    """A state-dict key with its layer numbers as '*': 'a.layers.*.w'."""
    return re.sub(r"\.\d+\.", ".*.", key)


def summarize_keys(keys: Iterable[str]) -> list[str]:
    """State-dict keys grouped by pattern, layer numbers as '*': 'a.layers.*.w (32 keys)'."""
    counts = Counter(key_pattern(k) for k in keys)
    return [p if n == 1 else f"{p} ({n} keys)" for p, n in sorted(counts.items())]


def read_config(path: str | os.PathLike) -> PretrainedConfig:
    """The config of a Hugging Face-format checkpoint directory, with errors that name the path."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no checkpoint directory at {path}")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{path} has no config.json: not a Hugging Face-format checkpoint")
    return AutoConfig.from_pretrained(path)


def stored_compression(path, config: PretrainedConfig) -> CompressionSpec | None:
    """The compression spec saved in a checkpoint's config (None if there is none)."""
    stored = getattr(config, CONFIG_KEY, None)
    try:
        return None if stored is None else CompressionSpec.from_dict(dict(stored))
    except ValueError as err:
        raise ValueError(f"{path}/config.json: bad {CONFIG_KEY}: {err}") from None


def load_model(cls, path, config: PretrainedConfig, allow: Callable[[str], bool] = lambda key: False, **kwargs):
    """`cls.from_pretrained`, refusing any missing, unexpected or reshaped weight that `allow` does not excuse.

    transformers only warns and random-initialises such weights; a model silently half-loaded is worse than an error.
    Returns the model and the excused (missing, unexpected) keys.
    """
    kwargs.setdefault("attn_implementation", default_attn_implementation())
    model, info = cls.from_pretrained(path, config=config, output_loading_info=True, **kwargs)
    missing, unexpected = set(info["missing_keys"]), set(info["unexpected_keys"])
    mismatched = [f"{k}: checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in info["mismatched_keys"]]
    problems = []
    if bad := [k for k in missing if not allow(k)]:
        problems.append("missing from the checkpoint: " + "; ".join(summarize_keys(bad)))
    if bad := [k for k in unexpected if not allow(k)]:
        problems.append("in the checkpoint but not in the model: " + "; ".join(summarize_keys(bad)))
    if mismatched:
        problems.append("shape mismatch: " + "; ".join(mismatched))
    if problems:
        raise CheckpointMismatchError(
            f"{path}: weights do not match the {cls.__name__} config:\n  " + "\n  ".join(problems)
        )
    return model, missing, unexpected


def load_pretrained(
    path: str | os.PathLike, compression: SpecArgument = FROM_CONFIG, **kwargs
) -> LlavoltaForConditionalGeneration:
    """Load a Hugging Face-format LLaVA directory; compression comes from its config unless given.

    Both the current layout and the one older transformers saved (`llava-1.5-7b-hf`) load.
    """
    config = read_config(path)
    if config.model_type != "llava":
        raise ValueError(
            f"{path}: model_type {config.model_type!r} is not 'llava' (Video-LLaVA checkpoints load "
            "with video_llavolta.checkpoint.load_pretrained)"
        )
    if check_spec_argument(compression) is FROM_CONFIG:
        compression = stored_compression(path, config)
    model, _, _ = load_model(LlavoltaForConditionalGeneration, path, config, **kwargs)
    return enable_compression(model, compression)
