"""An lmms-eval model for LLaVolta checkpoints: lmms-eval's benchmarks on compressed LLaVA-1.5 models.

This module holds the image side (LLaVA-1.5 checkpoints, images); `video_llavolta.lmms_model` extends it to every
model family and to videos, and is what lmms-eval finds under the name "llavolta".

Install the optional extra and lmms-eval itself without its declared dependencies (their torchvision is a CUDA
build that breaks transformers on the CPU torch; see the README)::

    pip install -c constraints.txt -e ".[eval]"
    pip install -c constraints.txt --no-deps lmms-eval==0.7.3
    # lmms-eval's command line also prints a table with pytablewriter (pinned in constraints.txt, also --no-deps):
    pip install -c constraints.txt --no-deps pytablewriter typepy DataProperty tabledata tcolorpy mbstrdecoder \
        chardet pathvalidate

then (lmms-eval's own tasks fetch their data from the Hugging Face Hub; a local task needs no download)

    python -m lmms_eval --model llavolta --model_args pretrained=CKPT,compression=2:8 --tasks gqa --batch_size 8

or, from Python, hand an instance to `lmms_eval.evaluator.simple_evaluate(model=Llavolta(pretrained=CKPT), ...)`.
The name "llavolta" is registered by `video_llavolta.lmms_model` (the `lmms_eval.models` entry point of
pyproject.toml), whose model takes LLaVA-1.5 checkpoints as this one does.

Model arguments: `pretrained` (a local Hugging Face-format LLaVA checkpoint, loaded strictly by
`image_llavolta.checkpoint.load_pretrained`), `tokenizer` (default: `pretrained`), `compression` (`from_config`: the
checkpoint's own spec, default; `none`; or `K:S[:method]` for test-time compression: lmms-eval splits its model
arguments on commas, so `2:8` stands for `2,8`), `batch_size`, `device`, `dtype` (auto: bfloat16 on a GPU, float32
on CPU), `template` (conversation template; default: the one the checkpoint records, else vicuna_v1).

Requests are answered as LLaVA-1.5 evaluates: one "<image>\\n" per visual in front of the task's text unless the
text already holds "<image>" placeholders, the checkpoint's template (vicuna_v1 for LLaVA-1.5), images padded to a
square, greedy decoding (a task's sampling settings are ignored, with a warning), visual placeholder ids never
generated, the output cut at the task's `until` strings. `loglikelihood` scores a continuation after the rendered
prompt (the continuation is tokenized on its own, without special tokens); its logits come from the compressed
forward when compression is on. One process: requests are not split over ranks.

Without lmms-eval installed this module still imports: `Llavolta` then derives from `object` and answers any
request objects with an lmms-eval style `args` tuple, which is how its tests run without the extra.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from .compression import FROM_CONFIG, CompressionSpec, SpecArgument, parse_spec
from .configs import placeholder_tokens
from .conversation import resolve_template, tokenize_prompt
from .generation import generate_answers, generation_config, resolve_compression
from .inputs import collate, load_image

try:  # the optional `eval` extra
    from lmms_eval.api.model import lmms as _Base
except ImportError:
    _Base = object

logger = logging.getLogger(__name__)

SAMPLING_KEYS = ("do_sample", "temperature", "top_p", "top_k", "num_beams")


def parse_compression_arg(value) -> SpecArgument:
    """`from_config`, `none`, or `K:S[:method]` (also `K,S`): lmms-eval splits model arguments on commas."""
    if value is None or value is FROM_CONFIG or isinstance(value, CompressionSpec):
        return FROM_CONFIG if value is None else value
    return parse_spec(str(value).replace(":", ","))


def cut_at_stops(text: str, until: Sequence[str] | str | None) -> str:
    """`text` up to the first of the stop strings `until` (none: unchanged), stripped."""
    stops = [until] if isinstance(until, str) else list(until or [])
    cut = min((text.find(s) for s in stops if s and s in text), default=len(text))
    return text[:cut].strip()


def _as_image(visual) -> Image.Image | np.ndarray | str:
    """A task visual as something `load_image` takes; videos and audio are refused with a clear error."""
    if isinstance(visual, (Image.Image, np.ndarray)):
        return visual
    if isinstance(visual, (str, os.PathLike)):
        if os.fspath(visual).lower().endswith((".mp4", ".avi", ".mov", ".mkv", ".webm")):
            raise ValueError(f"{visual}: the llavolta lmms-eval model answers images only, not videos")
        return os.fspath(visual)
    raise ValueError(f"the llavolta lmms-eval model answers images only, got a {type(visual).__name__}")


class Llavolta(_Base):
    """lmms-eval model: a local LLaVA-1.5 checkpoint with LLaVolta compression, greedy and batched."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        tokenizer: str | None = None,
        compression=FROM_CONFIG,
        batch_size=1,
        device: str | None = None,
        dtype: str = "auto",
        template: str | None = None,
        max_batch_size=None,
        **unknown,
    ):
        if _Base is not object:
            super().__init__()
        if unknown:
            raise ValueError(
                f"unknown llavolta model argument(s) {sorted(unknown)}; known: pretrained, tokenizer, "
                "compression, batch_size, device, dtype, template"
            )
        from transformers import AutoTokenizer

        self._rank, self._world_size = 0, 1
        self.task_dict = getattr(self, "task_dict", {})
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype == "auto":
            dtype = "bfloat16" if str(device).startswith("cuda") else "float32"
        if dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"dtype must be auto, float32, float16 or bfloat16, got {dtype!r}")
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 1  # "auto" is not supported: 1
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer or pretrained)
        self.model = self.load_model(pretrained, getattr(torch, dtype)).to(device).eval()
        self.template = resolve_template(self.model.config, template)
        self.compression = resolve_compression(self.model, parse_compression_arg(compression))
        self._warned_sampling = False

    # -------------------------------------------------------------------------------------------
    # Inputs: the hooks a subclass for other families and media overrides

    def load_model(self, pretrained: str, dtype: torch.dtype) -> torch.nn.Module:
        """The checkpoint, loaded strictly with the compression spec its config stores."""
        from .checkpoint import load_pretrained

        return load_pretrained(pretrained, dtype=dtype)

    def read_visual(self, visual):
        """A task visual as `encode` takes it (here: an image; videos are refused)."""
        return _as_image(visual)

    def visual_kind(self, visual) -> str:
        """What a read visual is ("image" here)."""
        return "image"

    def batch_key(self, request) -> tuple:
        """What requests must share to be batched beside their generation length: nothing more here (images only)."""
        return ()

    def _visuals(self, doc_to_visual, doc_id, task, split) -> list:
        if doc_to_visual is None:
            return []
        visuals = doc_to_visual(self.task_dict[task][split][doc_id])
        if visuals is None:
            return []
        return [self.read_visual(v) for v in (visuals if isinstance(visuals, (list, tuple)) else [visuals])]

    def encode(self, context: str, visuals: Sequence) -> dict:
        """A model sample for a task's text and visuals: "<image>" placeholders added, template rendered."""
        if "<image>" not in context:
            context = "<image>\n" * len(visuals) + context
        if context.count("<image>") != len(visuals):
            raise ValueError(
                f"the text holds {context.count('<image>')} <image> placeholder(s) but the task gave "
                f"{len(visuals)} visual(s)"
            )
        prompt = self.template.render([context])
        sample = {"input_ids": tokenize_prompt(self.tokenizer, prompt, placeholder_tokens(self.model.config))}
        if visuals:
            sample["pixel_values"] = torch.stack(
                [load_image(v, self.model.config, pad_to_square=True) for v in visuals]
            )
        return sample

    # -------------------------------------------------------------------------------------------
    # lmms-eval's model interface

    def generate_until(self, requests) -> list[str]:
        """Greedy answers of generate_until requests (context, gen_kwargs, doc_to_visual, doc_id, task, split)."""
        from tqdm import tqdm

        answers: list[str | None] = [None] * len(requests)
        # One generation config per batch, and one batch_key (for videos: one kind of media) per batch.
        groups: dict[tuple, list[int]] = {}  # (max_new_tokens, batch_key) -> request indices
        for i, request in enumerate(requests):
            gen_kwargs = request.args[1] or {}
            self._warn_sampling(gen_kwargs)
            groups.setdefault((int(gen_kwargs.get("max_new_tokens", 128)), self.batch_key(request)), []).append(i)
        with tqdm(total=len(requests), desc="llavolta", disable=self.rank != 0) as bar:
            for (max_new_tokens, _), indices in groups.items():
                generation = generation_config(self.tokenizer, self.model.config, max_new_tokens)
                for start in range(0, len(indices), self.batch_size):
                    batch = indices[start : start + self.batch_size]
                    samples = []
                    for i in batch:  # visuals read batch by batch: a whole benchmark's images never sit in memory
                        context, _, doc_to_visual, doc_id, task, split = requests[i].args
                        samples.append(self.encode(context, self._visuals(doc_to_visual, doc_id, task, split)))
                    outputs = generate_answers(self.model, self.tokenizer, samples, generation, self.compression)
                    for i, text in zip(batch, outputs):
                        answers[i] = cut_at_stops(text, (requests[i].args[1] or {}).get("until"))
                        if hasattr(self, "cache_hook"):
                            self.cache_hook.add_partial("generate_until", requests[i].args[:2], answers[i])
                    bar.update(len(batch))
        return answers

    @torch.inference_mode()
    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        """(log p(continuation | prompt), whether greedy decoding gives it) for each loglikelihood request."""
        out = []
        for request in requests:
            if len(request.args) != 6:
                raise ValueError(
                    "llavolta answers loglikelihood requests of (context, continuation, doc_to_visual, "
                    f"doc_id, task, split), got {len(request.args)} arguments"
                )
            context, target, doc_to_visual, doc_id, task, split = request.args
            continuation = target if isinstance(target, str) else target(self.task_dict[task][split][doc_id])
            sample = self.encode(context, self._visuals(doc_to_visual, doc_id, task, split))
            cont_ids = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
            if not cont_ids:
                raise ValueError(f"the continuation {continuation!r} has no tokens")
            full = {**sample, "input_ids": [int(i) for i in sample["input_ids"]] + cont_ids}
            if "mm_token_type_ids" in sample:  # Qwen-VL: the continuation is text
                full["mm_token_type_ids"] = torch.cat(
                    [types := sample["mm_token_type_ids"], types.new_zeros(len(cont_ids))]
                )
            # one unpadded row with its pixels (images, videos) and, for Qwen-VL, its grids and token types
            inputs = {k: v.to(self.model.device) for k, v in collate([full], 0).items() if k != "attention_mask"}
            for key in (k for k in inputs if k.startswith("pixel_values")):
                inputs[key] = inputs[key].to(self.model.dtype)
            extra = {"compression": self.compression} if hasattr(self.model, "compression_spec") else {}
            logits = self.model(**inputs, use_cache=False, **extra).logits[0]
            # The continuation is text at the end, so its predicting positions are the last ones even when
            # pooling has shortened the visual part of the sequence.
            n = len(cont_ids)
            logprobs = torch.log_softmax(logits[-n - 1 : -1].float(), dim=-1)
            target_ids = torch.tensor(cont_ids, device=logprobs.device)
            total = float(logprobs.gather(1, target_ids[:, None]).sum())
            greedy = bool((logprobs.argmax(-1) == target_ids).all())
            out.append((total, greedy))
            if hasattr(self, "cache_hook"):
                self.cache_hook.add_partial("loglikelihood", (context, continuation), (total, greedy))
        return out

    def generate_until_multi_round(self, requests) -> list[str]:
        """Not supported: LLaVA-1.5's benchmarks are single-turn."""
        raise NotImplementedError("the llavolta lmms-eval model answers single-turn tasks only")

    @property
    def rank(self) -> int:
        """This process's rank (always 0: one process)."""
        return self._rank

    @property
    def world_size(self) -> int:
        """Number of processes (always 1)."""
        return self._world_size

    def _warn_sampling(self, gen_kwargs: dict) -> None:
        asked = {k: gen_kwargs[k] for k in SAMPLING_KEYS if k in gen_kwargs}
        sampling = asked.get("do_sample") or (asked.get("temperature") or 0) > 0 or (asked.get("num_beams") or 1) > 1
        if sampling and not self._warned_sampling:
            logger.warning("the task asks for %s; llavolta decodes greedily (one beam, no sampling)", asked)
            self._warned_sampling = True
