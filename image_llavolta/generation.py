"""Batched, resumable greedy answering of question files: the modality-free loop the image and video harnesses share.

A harness (`image_llavolta.evaluate`, `video_llavolta.qa_inference`) says how one question becomes a model sample
and a prediction line; this module does the rest:

- greedy decoding, fully specified (`generation_config`), with the visual placeholder ids never generated;
- batches padded on the left (`generate_answers`), new tokens only;
- `answer_questions`: predictions appended and flushed batch by batch, so a killed run loses at most the batch in
  flight; a rerun skips the question ids already written (a cut-off last line is dropped), retries the failed
  ones and refuses to append when the settings (model, compression, prompt, generation) changed;
- a question whose media fails to load goes to the failures file with the reason, never silently dropped;
- rank shards (`shard_path`) and their merge (`merge_shards`): every question id exactly once over all shards,
  reference fields joined by question id from the question file, never by position.

Files, next to `preds.jsonl`: `preds.failures.jsonl` (failed questions and why) and `preds.settings.json` (what
made the predictions, run facts, counts, status).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Callable, Sequence

import torch
from tqdm import tqdm
from transformers import GenerationConfig

from .compression import (
    FROM_CONFIG,
    GRAMMAR,
    CompressedModelMixin,
    CompressionSpec,
    SpecArgument,
    check_spec_argument,
    parse_spec,
    placeholder_ids,
)
from .conversation import TEMPLATE_KEY, TEMPLATES
from .inputs import collate
from .jsonio import (
    check_settings,
    failures_path,
    read_failures,
    read_jsonl,
    read_settings,
    settings_path,
    write_json,
    write_jsonl,
)

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------
# Files


def shard_path(out_path: str | os.PathLike, rank: int, world_size: int) -> str:
    """Where rank `rank` of `world_size` writes: `out_path` itself for one rank, else `<name>.rank<r>-of-<W><ext>`."""
    out_path = os.fspath(out_path)
    if world_size == 1:
        return out_path
    root, ext = os.path.splitext(out_path)
    return f"{root}.rank{rank}-of-{world_size}{ext or '.jsonl'}"


# ---------------------------------------------------------------------------------------------------
# Compression and decoding


def resolve_compression(model, compression: SpecArgument) -> CompressionSpec | None:
    """The spec a run uses: the model config's for FROM_CONFIG, else the one given (None = no compression)."""
    if isinstance(model, CompressedModelMixin):
        return model.resolve_compression(compression)
    if check_spec_argument(compression) is None or compression is FROM_CONFIG:
        return None  # a stock transformers model compresses nothing
    raise ValueError(f"{type(model).__name__} has no compressor: call enable_compression(model, None) first")


def generation_config(tokenizer, config, max_new_tokens: int) -> GenerationConfig:
    """Greedy decoding, fully specified (the checkpoint's own generation_config is not consulted).

    The visual placeholder ids are never generated: they stand for pixels, and a generated one would be
    taken for a new image or video in the next step.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    pad = next(
        (t for t in (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.eos_token_id) if t is not None), None
    )
    if pad is None:
        raise ValueError("the tokenizer has no pad, unk or eos token to pad batches with")
    return GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        pad_token_id=pad,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        suppress_tokens=placeholder_ids(config),
    )


def generation_settings(generation: GenerationConfig) -> dict:
    """The decoding settings that determine predictions, for a settings file."""
    return {
        "do_sample": generation.do_sample,
        "num_beams": generation.num_beams,
        "max_new_tokens": generation.max_new_tokens,
        "eos_token_id": generation.eos_token_id,
        "pad_token_id": generation.pad_token_id,
        "suppress_tokens": generation.suppress_tokens,
    }


def run_settings(
    model,
    tokenizer,
    compression_arg,
    compression: CompressionSpec | None,
    template,
    generation: GenerationConfig,
    rank: int,
    world_size: int,
    **specific,
) -> dict:
    """What determines a harness's predictions (a rerun into the same file must match it), plus its own fields."""
    return {
        "model": getattr(model, "name_or_path", "") or "",
        "model_class": type(model).__name__,
        "tokenizer": getattr(tokenizer, "name_or_path", "") or "",
        "compression": None if compression is None else compression.to_dict(),
        "compression_from": FROM_CONFIG.value if compression_arg is FROM_CONFIG else "argument",
        **specific,
        "template": template.to_dict(),
        "generation": generation_settings(generation),
        "rank": rank,
        "world_size": world_size,
    }


@torch.inference_mode()
def generate_answers(
    model, tokenizer, samples: Sequence[dict], generation: GenerationConfig, compression: CompressionSpec | None
) -> list[str]:
    """Greedy answers of encoded samples, batched with left padding: new tokens only, special tokens skipped."""
    batch = collate(samples, generation.pad_token_id, padding_side="left")
    batch = {k: v.to(model.device) for k, v in batch.items()}
    for key in batch:
        if key.startswith("pixel_values"):
            batch[key] = batch[key].to(model.dtype)
    extra = {"compression": compression} if hasattr(model, "compression_spec") else {}
    out = model.generate(**batch, generation_config=generation, **extra)
    new_tokens = out[:, batch["input_ids"].shape[1] :]
    return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


# ---------------------------------------------------------------------------------------------------
# The resumable loop


def load_done(path: str, shard_ids: set[str]) -> dict[str, dict]:
    """Predictions already in `path` (id -> record); rewrites the file without a cut-off last line."""
    if not os.path.exists(path):
        return {}
    records = read_jsonl(path)
    done = {}
    for r in records:
        key = str(r.get("question_id"))
        if key not in shard_ids:
            raise ValueError(
                f"{path} holds a prediction for question id {r.get('question_id')!r}, which is not "
                "in this shard of the question file: another question file, --limit or world size?"
            )
        if key in done:
            raise ValueError(f"{path} holds question id {r['question_id']!r} twice")
        done[key] = r
    with open(path, "rb") as f:
        data = f.read()
    if data and (not data.endswith(b"\n") or data.count(b"\n") != len(records)):
        write_jsonl(path, records)  # drop the partial line before appending after it
    return done


def append_records(f, records: Sequence[dict]) -> None:
    """Append JSON lines to an open file and make them durable."""
    if records:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())  # the batch survives even a machine crash


def error_reason(err: BaseException) -> str:
    """`Type: message` of a media error (a typed error's `.message` leaves out the path the failure records)."""
    return f"{type(err).__name__}: {getattr(err, 'message', None) or err}"


def answer_questions(
    questions: Sequence[dict],
    path: str | os.PathLike,
    settings: dict,
    run: dict,
    encode: Callable[[dict], dict],
    answer: Callable[[list[dict]], list[str]],
    prediction: Callable[[dict, str], dict],
    failure: Callable[[dict, BaseException], dict],
    batch_size: int = 8,
    desc: str = "answering",
) -> dict:
    """Answer `questions` into the predictions JSONL `path`, resuming what is there; returns counts and paths.

    `encode(question)` builds a model sample (an exception fails that question only, recorded by
    `failure(question, error)`); `answer(samples)` returns one prediction per sample; `prediction(question, pred)`
    is the line written. `settings` must be equal on a rerun into the same file; `run` is informational.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    path = os.fspath(path)
    done = load_done(path, {str(q["question_id"]) for q in questions})
    if done:
        check_settings(path, read_settings(path), settings)
    pending = [q for q in questions if str(q["question_id"]) not in done]  # failures of earlier runs are retried
    run = {**run, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json(settings_path(path), {"settings": settings, "run": run, "status": "running"})

    failures, written = {}, 0
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with (
        open(path, "a", encoding="utf-8") as out,
        open(failures_path(path), "a", encoding="utf-8") as fail,
        tqdm(total=len(pending), desc=desc, unit="q", disable=not pending) as bar,
    ):
        for start in range(0, len(pending), batch_size):
            samples, answered, failed = [], [], []
            for question in pending[start : start + batch_size]:
                try:
                    samples.append(encode(question))
                except Exception as err:  # image/video readers raise many types on bad files: fail this one only
                    failed.append(failure(question, err))
                    continue
                answered.append(question)
            preds = answer(samples) if samples else []
            if len(preds) != len(samples):
                raise RuntimeError(f"answer() returned {len(preds)} predictions for {len(samples)} samples")
            append_records(out, [prediction(q, p) for q, p in zip(answered, preds)])
            append_records(fail, failed)
            written += len(preds)
            failures.update((str(f["question_id"]), f) for f in failed)
            bar.update(len(samples) + len(failed))
    # Every failure of earlier runs was retried above, so this run's failures are the complete list.
    write_jsonl(failures_path(path), failures.values())
    for f in failures.values():
        logger.warning("question %s failed: %s", f["question_id"], f.get("reason"))

    counts = {
        "questions": len(questions),
        "predicted": len(done) + written,
        "resumed": len(done),
        "new": written,
        "failed": len(failures),
    }
    run["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(
        settings_path(path),
        {
            "settings": settings,
            "run": run,
            "status": "complete",
            "counts": counts,
            "failed_question_ids": [f["question_id"] for f in failures.values()],
        },
    )
    return {"predictions": path, "failures": failures_path(path), "settings": settings_path(path), **counts}


# ---------------------------------------------------------------------------------------------------
# Merging rank shards


def merge_shards(
    shard_paths: Sequence[str | os.PathLike],
    questions: Sequence[dict],
    out_path: str | os.PathLike,
    prediction: Callable[[dict, str], dict],
    reference_fields: Sequence[str],
    source: str | os.PathLike,
) -> dict:
    """Merge rank shards into `out_path` in question order: every question id exactly once, references by id.

    `questions` are the records of the question file `source`; an entry whose `reference_fields` differ from the
    question file's is an error. Predictions are rewritten by `prediction(question, pred)`, so the references in
    the merged file come from the question file.
    """
    qa = {str(r["question_id"]): r for r in questions}
    shard_paths = [os.fspath(p) for p in shard_paths]
    if not shard_paths:
        raise ValueError("no shard files to merge")
    where: dict[str, str] = {}  # question id -> the shard that holds it
    preds, failures = {}, {}
    duplicates, unknown, mismatched = [], [], []
    for path in shard_paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such shard file")
        shard_preds = read_jsonl(path)
        shard_ids = {str(p.get("question_id")) for p in shard_preds}
        entries = [(p, "pred") for p in shard_preds] + [(f, "fail") for f in read_failures(path, shard_ids).values()]
        for entry, kind in entries:
            key = str(entry.get("question_id"))
            if key in where:
                duplicates.append(f"{entry.get('question_id')!r} ({where[key]} and {path})")
                continue
            where[key] = path
            ref = qa.get(key)
            if ref is None:
                unknown.append(f"{entry.get('question_id')!r} ({path})")
            elif any(k in ref and entry.get(k, ref[k]) != ref[k] for k in reference_fields):
                mismatched.append(f"{entry.get('question_id')!r} ({path})")
            elif kind == "pred":
                preds[key] = entry
            else:
                failures[key] = entry
    missing = [repr(r["question_id"]) for key, r in qa.items() if key not in where]
    problems = [
        (duplicates, "question ids appear more than once"),
        (unknown, "question ids are not in the QA file"),
        (mismatched, "predictions have another question or reference answer than the QA file"),
        (missing, "question ids of the QA file have neither a prediction nor a failure (an unfinished shard?)"),
    ]
    errors = [
        f"{len(items)} {what}: {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}"
        for items, what in problems
        if items
    ]
    stored = [read_settings(p) for p in shard_paths]
    common = [{k: v for k, v in s.items() if k != "rank"} for s in stored if s is not None]
    if any(c != common[0] for c in common):
        errors.append("the shards were made with different settings (model, compression or generation)")
    if common and common[0].get("world_size") != len(shard_paths):
        errors.append(
            f"the shards were written by {common[0].get('world_size')} ranks but {len(shard_paths)} "
            "shard files were given"
        )
    if errors:
        raise ValueError(f"cannot merge {len(shard_paths)} shard(s) against {source}:\n  " + "\n  ".join(errors))

    merged, merged_failures = [], []
    for key, ref in qa.items():  # question order; the reference fields come from the question file
        if key in preds:
            merged.append(prediction(ref, preds[key]["pred"]))
        else:
            merged_failures.append(
                {**failures[key], **{k: ref[k] for k in ("question_id", *reference_fields) if k in ref}}
            )
    write_jsonl(out_path, merged)
    write_jsonl(failures_path(out_path), merged_failures)
    counts = {"questions": len(qa), "predicted": len(merged), "failed": len(merged_failures)}
    write_json(
        settings_path(out_path),
        {
            "settings": common[0] if common else None,
            "shards": shard_paths,
            "qa": os.path.abspath(source),
            "status": "complete",
            "counts": counts,
            "failed_question_ids": [f["question_id"] for f in merged_failures],
        },
    )
    return {"predictions": os.fspath(out_path), "failures": failures_path(out_path), **counts}


# ---------------------------------------------------------------------------------------------------
# Command lines


def spec_argument(text: str) -> SpecArgument:
    """argparse's `type` for a compression option: `parse_spec`, its message shown on a bad value."""
    try:
        return parse_spec(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_model_arguments(parser, what: str, compression: bool = True) -> None:
    """The options every answering command shares: --model, --tokenizer, --template, --device, --dtype (and
    --compression)."""
    parser.add_argument("--model", required=True, help=f"{what} checkpoint directory (Hugging Face layout)")
    parser.add_argument("--tokenizer", help="tokenizer directory (default: --model)")
    if compression:
        parser.add_argument(
            "--compression",
            default=FROM_CONFIG,
            type=spec_argument,
            help=f"test-time compression: {GRAMMAR}; default from_config, the checkpoint's",
        )
    parser.add_argument(
        "--template",
        choices=sorted(TEMPLATES),
        help=f"conversation template (default: the one the checkpoint records in {TEMPLATE_KEY}, else vicuna_v1)",
    )
    parser.add_argument("--device", help="default: cuda:<LOCAL_RANK> when a GPU is present, else cpu")
    parser.add_argument(
        "--dtype",
        choices=("auto", "float32", "float16", "bfloat16"),
        default="auto",
        help="auto: bfloat16 on a GPU, float32 on CPU",
    )


def load_for_generation(args, load_pretrained: Callable, **load_kwargs):
    """(model, tokenizer) from parsed `add_model_arguments` options, with the checkpoint loader of the modality."""
    from transformers import AutoTokenizer

    device = args.device or (f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if device.startswith("cuda") else "float32")
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
    model = load_pretrained(args.model, dtype=getattr(torch, dtype), **load_kwargs).to(device)
    return model, tokenizer
