"""Video QA inference: a model answers every question of a QA JSONL; predictions are written as they come.

    python -m video_llavolta.qa_inference --model DIR --qa msvd_qa.jsonl --video-root videos/ --out preds.jsonl
    torchrun --nproc-per-node 8 -m video_llavolta.qa_inference ... --out preds.jsonl     # one shard per rank
    python -m video_llavolta.qa_inference merge --qa msvd_qa.jsonl --out preds.jsonl --world-size 8

Input: the unified QA JSONL of `data_prep convert-qa` (`{"question_id", "video", "question", "answer"}`, the
synthetic test split adds "type"). The prompt is `template.render(["<video>\\n" + question])`; the video is read
from its frame directory `frames_root/<video_id>` when finished (`data_prep extract-frames`), else decoded from
`video_root/<video>`. Decoding is greedy (`do_sample=False`, one beam), batched with left padding; the compression
spec is the checkpoint's (`"from_config"`), none, or any `CompressionSpec` (test-time compression).

Output, next to `out` (`preds.jsonl`; with W ranks each rank r writes `preds.rank<r>-of-<W>.jsonl`):

    preds.jsonl                {"question_id", "question", "answer", "pred"} (+ "type", "video" when present)
    preds.failures.jsonl       questions whose video failed to load, with the reason: counted as missing
    preds.settings.json        model, compression, frames, prompt and generation settings, counts

Resuming: predictions are appended and flushed batch by batch, so a killed run loses at most the batch in flight;
a rerun skips the question ids already written (a cut-off last line is dropped) and retries the failed ones.
A rerun with other settings (compression, model, generation) into the same file is refused.

Questions go to ranks by position (rank r takes every W-th question from the r-th); `merge_predictions` then
checks that every question id of the QA file appears exactly once over all shards (predicted or failed) and joins
every reference answer by question id from the QA file, never by position. Any mismatch is an error.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence

import torch
import transformers
from tqdm import tqdm
from transformers import GenerationConfig

from data_prep.io import write_json, write_jsonl
from image_llavolta.compression import CompressionSpec
from image_llavolta.compression.models import FROM_CONFIG
from image_llavolta.conversation import VICUNA_V1, Template

from .frames import video_source
from .frames import VideoError, read_frames
from .inputs import collate, encode_sample
from .judge import failures_path, read_failures, read_jsonl, settings_path
from .modeling import num_frames

logger = logging.getLogger(__name__)

QA_FIELDS = ("question_id", "video", "question", "answer")
EXTRA_FIELDS = ("type", "video")  # carried from the QA record into each prediction when present


def read_qa(path: str | os.PathLike) -> list[dict]:
    """The records of a unified QA JSONL, checked: required fields present, question ids unique (as str)."""
    records, seen = read_jsonl(path), set()
    for number, r in enumerate(records, 1):
        missing = [k for k in QA_FIELDS if k not in r]
        if missing:
            raise ValueError(f"{path}: record {number} lacks {missing}")
        if str(r["question_id"]) in seen:
            raise ValueError(f"{path}: question id {r['question_id']!r} appears more than once")
        seen.add(str(r["question_id"]))
    return records


def parse_compression(text: str) -> CompressionSpec | None | str:
    """`none`, `from_config` or `K,S` (pool after layer K with stride S) as `run_inference` takes it."""
    text = text.strip().lower()
    if text == "none":
        return None
    if text == FROM_CONFIG:
        return FROM_CONFIG
    try:
        layer, stride = (int(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"compression must be 'none', '{FROM_CONFIG}' or 'K,S' (e.g. 2,8), got {text!r}") from None
    return CompressionSpec(layer, stride)


def shard_path(out_path: str | os.PathLike, rank: int, world_size: int) -> str:
    """Where rank `rank` of `world_size` writes: `out_path` itself for one rank, else `<name>.rank<r>-of-<W><ext>`."""
    out_path = os.fspath(out_path)
    if world_size == 1:
        return out_path
    root, ext = os.path.splitext(out_path)
    return f"{root}.rank{rank}-of-{world_size}{ext or '.jsonl'}"




def resolve_compression(model, compression: CompressionSpec | None | str) -> CompressionSpec | None:
    """The spec a run uses: the model config's for "from_config", else the one given (None = no compression)."""
    if isinstance(compression, str):
        if compression != FROM_CONFIG:
            raise ValueError(f"compression must be a CompressionSpec, None or {FROM_CONFIG!r}, got {compression!r}")
        return getattr(model, "compression_spec", None)  # a stock transformers model compresses nothing
    if compression is not None:
        if not isinstance(compression, CompressionSpec):
            raise ValueError(f"compression must be a CompressionSpec, None or {FROM_CONFIG!r}, got {compression!r}")
        if not hasattr(model, "compression_spec"):
            raise ValueError(f"{type(model).__name__} has no compressor: call enable_compression(model, None) first")
        compression.check_fits(model.config.text_config.num_hidden_layers)
    return compression


def generation_config(tokenizer, config, max_new_tokens: int) -> GenerationConfig:
    """Greedy decoding, fully specified (the checkpoint's own generation_config is not consulted).

    The visual placeholder ids are never generated: they stand for pixels, and a generated one would be
    taken for a new video in the next step.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    pad = next((t for t in (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.eos_token_id) if t is not None),
               None)
    if pad is None:
        raise ValueError("the tokenizer has no pad, unk or eos token to pad batches with")
    placeholders = sorted({config.image_token_id, config.video_token_id})
    return GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, pad_token_id=pad,
                            eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                            suppress_tokens=placeholders)


@torch.inference_mode()
def generate_answers(model, tokenizer, samples: Sequence[dict], generation: GenerationConfig,
                     compression: CompressionSpec | None) -> list[str]:
    """Greedy answers of encoded samples, batched with left padding: new tokens only, special tokens skipped."""
    batch = collate(samples, generation.pad_token_id, padding_side="left")
    batch = {k: v.to(model.device) for k, v in batch.items()}
    batch["pixel_values_videos"] = batch["pixel_values_videos"].to(model.dtype)
    extra = {"compression": compression} if hasattr(model, "compression_spec") else {}
    out = model.generate(**batch, generation_config=generation, **extra)
    new_tokens = out[:, batch["input_ids"].shape[1]:]
    return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def _settings(model, tokenizer, compression_arg, spec, template: Template, generation: GenerationConfig,
              rank: int, world_size: int) -> dict:
    """What determines the predictions: a rerun into the same file must match it."""
    return {
        "model": getattr(model, "name_or_path", "") or "",
        "model_class": type(model).__name__,
        "tokenizer": getattr(tokenizer, "name_or_path", "") or "",
        "compression": None if spec is None else spec.to_dict(),
        "compression_from": FROM_CONFIG if isinstance(compression_arg, str) else "argument",
        "num_frames": num_frames(model.config),
        "template": {"system": template.system, "roles": list(template.roles), "sep": template.sep,
                     "sep2": template.sep2},
        "prompt": "<video>\\n{question}",
        "generation": {"do_sample": generation.do_sample, "num_beams": generation.num_beams,
                       "max_new_tokens": generation.max_new_tokens, "eos_token_id": generation.eos_token_id,
                       "pad_token_id": generation.pad_token_id, "suppress_tokens": generation.suppress_tokens},
        "rank": rank,
        "world_size": world_size,
    }


def _check_resumable(path: str, settings: dict) -> None:
    """Refuse to append to predictions made with other settings."""
    sidecar = settings_path(path)
    if not os.path.exists(sidecar):
        return
    with open(sidecar, encoding="utf-8") as f:
        stored = json.load(f).get("settings", {})
    changed = sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))
    if changed:
        details = "; ".join(f"{k}: {stored.get(k)!r} -> {settings.get(k)!r}" for k in changed)
        raise ValueError(f"{path} holds predictions made with other settings ({details}); "
                         "write to another file or delete it to start over")


def _load_done(path: str, shard_ids: set[str]) -> dict[str, dict]:
    """Predictions already in `path` (id -> record); rewrites the file without a cut-off last line."""
    if not os.path.exists(path):
        return {}
    records = read_jsonl(path)
    done = {}
    for r in records:
        key = str(r.get("question_id"))
        if key not in shard_ids:
            raise ValueError(f"{path} holds a prediction for question id {r.get('question_id')!r}, which is not "
                             "in this shard of the QA file: another QA file or world size?")
        if key in done:
            raise ValueError(f"{path} holds question id {r['question_id']!r} twice")
        done[key] = r
    with open(path, "rb") as f:
        data = f.read()
    if data and (not data.endswith(b"\n") or data.count(b"\n") != len(records)):
        write_jsonl(path, records)  # drop the partial line before appending after it
    return done


def _prediction(record: dict, pred: str) -> dict:
    out = {k: record[k] for k in ("question_id", "question", "answer")}
    out["pred"] = pred
    out.update({k: record[k] for k in EXTRA_FIELDS if k in record})
    return out


def _append(f, records: list[dict]) -> None:
    if records:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())  # the batch survives even a machine crash


def run_inference(
    model,
    tokenizer,
    qa_path: str | os.PathLike,
    out_path: str | os.PathLike,
    video_root: str | os.PathLike,
    frames_root: str | os.PathLike | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 16,
    compression: CompressionSpec | None | str = FROM_CONFIG,
    template: Template = VICUNA_V1,
    rank: int = 0,
    world_size: int = 1,
) -> dict:
    """Answer this rank's share of a QA file into `shard_path(out_path, rank, world_size)`; returns a summary."""
    if not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    shard = read_qa(qa_path)[rank::world_size]
    path = shard_path(out_path, rank, world_size)
    spec = resolve_compression(model, compression)
    generation = generation_config(tokenizer, model.config, max_new_tokens)
    settings = _settings(model, tokenizer, compression, spec, template, generation, rank, world_size)
    done = _load_done(path, {str(r["question_id"]) for r in shard})
    if done:
        _check_resumable(path, settings)
    pending = [r for r in shard if str(r["question_id"]) not in done]  # failures of earlier runs are retried
    run = {"qa": os.path.abspath(qa_path), "video_root": os.path.abspath(video_root),
           "frames_root": None if frames_root is None else os.path.abspath(frames_root), "batch_size": batch_size,
           "device": str(model.device), "dtype": str(model.dtype), "torch": torch.__version__,
           "transformers": transformers.__version__, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json(settings_path(path), {"settings": settings, "run": run, "status": "running"})

    frames_per_video = num_frames(model.config)
    model.eval()
    failures, written = {}, 0
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", encoding="utf-8") as out, open(failures_path(path), "a", encoding="utf-8") as fail, \
            tqdm(total=len(pending), desc=f"qa rank {rank}" if world_size > 1 else "qa", unit="q",
                 disable=not pending) as bar:
        for start in range(0, len(pending), batch_size):
            samples, answered, failed = [], [], []
            for record in pending[start : start + batch_size]:
                source = video_source(record["video"], video_root, frames_root)
                try:
                    frames = read_frames(source, frames_per_video)
                except Exception as err:  # decoders raise many types on bad files: fail this question only
                    message = err.message if isinstance(err, VideoError) else str(err)
                    failed.append({**{k: record[k] for k in ("question_id", "question", "answer")},
                                   **{k: record[k] for k in EXTRA_FIELDS if k in record},
                                   "path": source, "reason": f"{type(err).__name__}: {message}"})
                    continue
                prompt = template.render(["<video>\n" + record["question"]])
                samples.append(encode_sample(tokenizer, model.config, prompt, videos=[frames]))
                answered.append(record)
            preds = generate_answers(model, tokenizer, samples, generation, spec) if samples else []
            _append(out, [_prediction(r, p) for r, p in zip(answered, preds)])
            _append(fail, failed)
            written += len(preds)
            failures.update((str(f["question_id"]), f) for f in failed)
            bar.update(len(samples) + len(failed))
    # Every failure of earlier runs was retried above, so this run's failures are the complete list.
    write_jsonl(failures_path(path), failures.values())
    for f in failures.values():
        logger.warning("question %s: video failed: %s", f["question_id"], f["reason"])

    counts = {"questions": len(shard), "predicted": len(done) + written, "resumed": len(done), "new": written,
              "failed": len(failures)}
    run["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json(settings_path(path), {"settings": settings, "run": run, "status": "complete", "counts": counts,
                                     "failed_question_ids": [f["question_id"] for f in failures.values()]})
    return {"predictions": path, "failures": failures_path(path), "settings": settings_path(path), **counts}


def _shard_settings(path: str) -> dict | None:
    sidecar = settings_path(path)
    if not os.path.exists(sidecar):
        return None
    with open(sidecar, encoding="utf-8") as f:
        return json.load(f)


def merge_predictions(shard_paths: Sequence[str | os.PathLike], qa_path: str | os.PathLike,
                      out_path: str | os.PathLike) -> dict:
    """Merge rank shards into `out_path` in QA order: every question id exactly once, references joined by id."""
    qa = {str(r["question_id"]): r for r in read_qa(qa_path)}
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
            elif any(entry.get(k, ref[k]) != ref[k] for k in ("question", "answer")):
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
    errors = [f"{len(items)} {what}: {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}"
              for items, what in problems if items]
    sidecars = [_shard_settings(p) for p in shard_paths]
    common = [{k: v for k, v in s["settings"].items() if k != "rank"} for s in sidecars if s]
    if any(c != common[0] for c in common):
        errors.append("the shards were made with different settings (model, compression or generation)")
    if common and common[0].get("world_size") != len(shard_paths):
        errors.append(f"the shards were written by {common[0].get('world_size')} ranks but {len(shard_paths)} "
                      "shard files were given")
    if errors:
        raise ValueError(f"cannot merge {len(shard_paths)} shard(s) against {qa_path}:\n  " + "\n  ".join(errors))

    merged, merged_failures = [], []
    for key, ref in qa.items():  # QA order; the reference answer comes from the QA file
        if key in preds:
            merged.append(_prediction(ref, preds[key]["pred"]))
        else:
            merged_failures.append({**failures[key], **{k: ref[k] for k in ("question_id", "question", "answer")}})
    write_jsonl(out_path, merged)
    write_jsonl(failures_path(out_path), merged_failures)
    counts = {"questions": len(qa), "predicted": len(merged), "failed": len(merged_failures)}
    write_json(settings_path(out_path), {
        "settings": common[0] if common else None, "shards": shard_paths, "qa": os.path.abspath(qa_path),
        "status": "complete", "counts": counts,
        "failed_question_ids": [f["question_id"] for f in merged_failures],
    })
    return {"predictions": os.fspath(out_path), "failures": failures_path(out_path), **counts}


# ---------------------------------------------------------------------------------------------------
# Command line


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m video_llavolta.qa_inference", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Merge the shards of a multi-rank run: python -m video_llavolta.qa_inference "
                                       "merge --help")
    p.add_argument("--model", required=True, help="Video-LLaVA checkpoint directory (Hugging Face layout)")
    p.add_argument("--tokenizer", help="tokenizer directory (default: --model)")
    p.add_argument("--qa", required=True, help="unified QA JSONL (data_prep convert-qa / make-synthetic)")
    p.add_argument("--video-root", required=True, help="folder the QA file's video paths are relative to")
    p.add_argument("--frames-root", help="extract-frames output: frame directories are used when present")
    p.add_argument("--out", required=True, help="predictions JSONL (one shard per rank under torchrun)")
    p.add_argument("--compression", default=FROM_CONFIG, type=parse_compression,
                   help="none, from_config (the checkpoint's, default) or K,S for test-time compression")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--device", help="default: cuda:<LOCAL_RANK> when a GPU is present, else cpu")
    p.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"), default="auto",
                   help="auto: bfloat16 on a GPU, float32 on CPU")
    return p


def _merge_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m video_llavolta.qa_inference merge",
                                description="Merge rank shards: every question id exactly once, answers joined by id.")
    p.add_argument("--qa", required=True, help="the QA JSONL the shards answered")
    p.add_argument("--out", required=True, help="merged predictions JSONL (the --out the ranks were given)")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--world-size", type=int, help="find the shards <out>.rank<r>-of-<W>.jsonl")
    group.add_argument("--shards", nargs="+", help="the shard files")
    return p


def _print_rows(title: str, rows: dict) -> None:
    width = max(map(len, rows))
    print(f"\n{title}")
    for key, value in rows.items():
        print(f"  {key:<{width}}  {value}")


def main(argv: list[str] | None = None) -> int:
    """Run inference (this process's rank from RANK / WORLD_SIZE) or `merge`; bad input exits with code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if argv[:1] == ["merge"]:
            args = _merge_parser().parse_args(argv[1:])
            shards = args.shards or [shard_path(args.out, r, args.world_size) for r in range(args.world_size)]
            _print_rows("merge", merge_predictions(shards, args.qa, args.out))
            return 0
        args = _run_parser().parse_args(argv)
        rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        device = args.device or (f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu")
        dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if device.startswith("cuda") else "float32")

        from transformers import AutoTokenizer

        from .checkpoint import load_pretrained

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
        model = load_pretrained(args.model, dtype=getattr(torch, dtype)).to(device)
        summary = run_inference(model, tokenizer, args.qa, args.out, args.video_root, args.frames_root,
                                args.batch_size, args.max_new_tokens, args.compression, rank=rank,
                                world_size=world_size)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    _print_rows(f"qa inference (rank {rank} of {world_size})", summary)
    if world_size > 1 and rank == 0:
        print(f"\nwhen every rank has finished: python -m video_llavolta.qa_inference merge --qa {args.qa} "
              f"--out {args.out} --world-size {world_size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
