"""Model families: what the pipelines need of a family beside its adapter, one `ModelFamily` value each.

A family's adapter (`image_llavolta.models.llava`, ...) is what the compressor drives; the family is what
command lines, measurements and tests need around it. Its fields:

- `name`: how reports name the family ("LLaVA-1.5");
- `model_type`: the `model_type` of its configs ("llava"), by which a checkpoint finds its family;
- `load_pretrained(path, compression=FROM_CONFIG, **kwargs)`: a local checkpoint, loaded strictly, compressed per
  `compression` (FROM_CONFIG: the spec its config stores); kwargs go to `from_pretrained` (dtype, ...);
- `tiny_model(layers, hidden, image_size, patch_size, seed, **options)`: a random-initialised model with
  compression off, for tests and measurements; `tiny_options` names the `options` the family takes;
- `synthetic_inputs(config, batch, text_tokens, seed)`: one batch of random model inputs: per sample, text
  around one visual block in the family's placeholder layout (one image, one video, ...), and its pixels;
- `vision_flops(config, inputs)`: analytic FLOPs of the vision encoder(s) on those inputs' pixels, counted as
  `image_llavolta.efficiency.flops` counts (the efficiency report adds projector and decoder);
- `image_size`: the real model's input size in pixels, the default of tiny models, so that they get the real
  number of visual tokens per image or frame;
- `projector_flops(config, tokens)`: the projector's analytic FLOPs, for families whose projector is not
  LLaVA's 2-layer MLP (None: that one).
- `projector_rows(config, inputs)`: the rows the projector runs on, where that is not one per visual placeholder
  (a family that pools features after projecting them); None: one per placeholder.

A new family is one more `ModelFamily` value, in the package of its adapter, and one more entry in
`video_llavolta.families.FAMILIES`, which lists every family; `LLAVA` is the base package's own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from transformers import PretrainedConfig

from .checkpoint import load_pretrained as load_llava
from .checkpoint import read_config
from .compression import enable_compression, placeholder_ids
from .configs import placeholder_tokens, tiny_llava_config
from .efficiency.flops import vision_tower_flops
from .models.llava import LlavoltaForConditionalGeneration


@dataclass(frozen=True)
class ModelFamily:
    """One model family (see the module note for what each field holds)."""

    name: str
    model_type: str
    load_pretrained: Callable[..., torch.nn.Module]
    tiny_model: Callable[..., torch.nn.Module]
    synthetic_inputs: Callable[..., dict]
    vision_flops: Callable[[PretrainedConfig, Mapping], int]
    image_size: int
    tiny_options: tuple[str, ...] = ()
    # analytic FLOPs of the projector on `tokens` visual tokens; None: LLaVA's 2-layer MLP
    projector_flops: Callable[[PretrainedConfig, int], int] | None = None
    projector_rows: Callable[[PretrainedConfig, Mapping], int] | None = None


def family_named(model_type: str, families: Mapping[str, ModelFamily], where: str) -> ModelFamily:
    """`families[model_type]`, or a ValueError naming `where` (a path, an option) and the known model types."""
    family = families.get(model_type)
    if family is None:
        raise ValueError(
            f"{where}: model_type {model_type!r} is not a family known here (known: {', '.join(sorted(families))})"
        )
    return family


def find_family(source: PretrainedConfig | str | os.PathLike, families: Mapping[str, ModelFamily]) -> ModelFamily:
    """The family of a config or of a checkpoint directory, among `families` (model_type → family)."""
    if isinstance(source, (str, os.PathLike)):
        return family_named(read_config(source).model_type, families, os.fspath(source))
    return family_named(source.model_type, families, type(source).__name__)


def synthetic_ids(
    config, batch: int, text_tokens: int, placeholder: int, visual_tokens: int, generator: torch.Generator
) -> torch.Tensor:
    """(batch, text_tokens + visual_tokens) random ids: half the text, `visual_tokens` × `placeholder`, the rest.

    Costs do not depend on content; text ids avoid the placeholder and special ids, and stay below 32000, where
    real vocabularies put their added tokens.
    """
    if text_tokens < 1:
        raise ValueError(f"text_tokens must be >= 1 (the prompt ends with text), got {text_tokens}")
    text = config.get_text_config(decoder=True)
    avoid = set(placeholder_ids(config)) | {
        getattr(text, a, None) for a in ("pad_token_id", "bos_token_id", "eos_token_id")
    }
    allowed = torch.tensor([i for i in range(3, min(text.vocab_size, 32000)) if i not in avoid])
    ids = allowed[torch.randint(len(allowed), (batch, text_tokens + visual_tokens), generator=generator)]
    before = text_tokens // 2
    ids[:, before : before + visual_tokens] = placeholder
    return ids


def _llava_inputs(config, batch: int = 1, text_tokens: int = 64, seed: int = 0) -> dict:
    """Text, one image, text per sample."""
    g = torch.Generator().manual_seed(seed)
    ids = synthetic_ids(config, batch, text_tokens, *placeholder_tokens(config)["<image>"], g)
    size = config.vision_config.image_size
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn(batch, 3, size, size, generator=g),
    }


def _llava_vision_flops(config, inputs: Mapping) -> int:
    pixels = inputs.get("pixel_values")
    return 0 if pixels is None else vision_tower_flops(config.vision_config, pixels.shape[0])


def _tiny_llava(layers: int, hidden: int, image_size: int, patch_size: int, seed: int = 0):
    torch.manual_seed(seed)
    config = tiny_llava_config(layers=layers, hidden=hidden, image_size=image_size, patch_size=patch_size)
    return enable_compression(LlavoltaForConditionalGeneration._from_config(config, attn_implementation="sdpa"), None)


LLAVA = ModelFamily(
    name="LLaVA-1.5",
    model_type="llava",
    load_pretrained=load_llava,
    tiny_model=_tiny_llava,
    synthetic_inputs=_llava_inputs,
    vision_flops=_llava_vision_flops,
    image_size=336,  # CLIP ViT-L/14-336: 576 tokens per image
)
