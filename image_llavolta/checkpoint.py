"""Loading LLaVA / Video-LLaVA checkpoints from local paths with their compression setting."""
from __future__ import annotations

import importlib.util
import os

import torch
from transformers import AutoConfig

from .compression import CONFIG_KEY, CompressionSpec, enable_compression
from .compression.models import LlavoltaForConditionalGeneration, VideoLlavoltaForConditionalGeneration

_CLASSES = {"llava": LlavoltaForConditionalGeneration, "video_llava": VideoLlavoltaForConditionalGeneration}
FROM_CONFIG = "from_config"


def default_attn_implementation() -> str:
    """flash_attention_2 when flash-attn is installed and a GPU is present, else SDPA (never required)."""
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def load_pretrained(path: str | os.PathLike, compression: CompressionSpec | None | str = FROM_CONFIG, **kwargs):
    """Load a Hugging Face-format LLaVA or Video-LLaVA directory; compression comes from its config unless given."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no checkpoint directory at {path}")
    config = AutoConfig.from_pretrained(path)
    cls = _CLASSES.get(config.model_type)
    if cls is None:
        raise ValueError(f"{path}: model_type {config.model_type!r} is not one of {sorted(_CLASSES)}")
    if compression == FROM_CONFIG:
        stored = getattr(config, CONFIG_KEY, None)
        try:
            compression = None if stored is None else CompressionSpec.from_dict(dict(stored))
        except ValueError as err:
            raise ValueError(f"{path}/config.json: bad {CONFIG_KEY}: {err}") from None
    kwargs.setdefault("attn_implementation", default_attn_implementation())
    model = cls.from_pretrained(path, **kwargs)
    return enable_compression(model, compression)
