"""Image benchmark evaluation: a model answers a benchmark's local question file, then the answers are scored.

    python -m image_llavolta.evaluate --benchmark configs/benchmarks/gqa.yaml --data gqa.jsonl --image-root images/ \\
        --model CKPT --out results/ [--compression K,S|none|from_config] [--batch-size 8] [--limit 100]
    torchrun --nproc-per-node 8 -m image_llavolta.evaluate ...               # one shard per rank, not scored
    python -m image_llavolta.evaluate merge --benchmark ... --data ... --out results/ --world-size 8   # + score
    python -m image_llavolta.evaluate score --benchmark ... --data ... --out results/  # score existing predictions

The benchmark spec (`image_llavolta.benchmarks`) gives the answer type, the prompt suffix, the metric and the
question file's layout; `image_llavolta.scoring` says how answers are parsed and scored. Generation is greedy,
batched with left padding and resumable (`image_llavolta.generation`); images are padded to a square with the CLIP
mean colour, as LLaVA-1.5 evaluates, and processed in the model's preprocessing mode (`image_llavolta.processing`).

Files in `--out`, named after the benchmark (`gqa` here):

    gqa.predictions.jsonl          {"question_id", "image", "question", answer field(s), ["options", "hint"],
                                    ["category"], "pred"}, appended batch by batch
    gqa.predictions.failures.jsonl questions whose image failed to load, with the reason (scored as wrong)
    gqa.predictions.settings.json  model, compression, benchmark spec, prompt, generation, counts
    gqa.scores.jsonl               one line per question: parsed answer, score, status, why it was unparsed
    gqa.results.json               metrics overall and per category, counts, settings; also printed as a table

Every question of the question file (or of its first `--limit`) counts: a missing, failed or unparsed answer
scores 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence

import torch
import transformers

from .benchmarks import BenchmarkSpec, build_prompt, load_spec, read_questions
from .commands import Job, Jobs, main_for
from .compression import FROM_CONFIG, CompressionSpec, SpecArgument, spec_label
from .configs import placeholder_tokens
from .conversation import Template, resolve_template, tokenize_prompt
from .generation import (
    add_model_arguments,
    answer_questions,
    error_reason,
    generate_answers,
    generation_config,
    load_for_generation,
    merge_shards,
    resolve_compression,
    run_settings,
    shard_path,
)
from .inputs import load_image
from .jsonio import read_failures, read_jsonl, read_settings, write_json, write_jsonl
from .processing import preprocessing_mode
from .scoring import exact_match, extract_choice, normalize_vqa_answer, parse_yes_no, summarize, vqa_accuracy
from .tables import format_table

logger = logging.getLogger(__name__)

COUNT_KEYS = ("questions", "answered", "unparsed", "missing")


def output_paths(out_dir: str | os.PathLike, name: str) -> dict[str, str]:
    """The files of one benchmark's evaluation in `out_dir`."""
    out_dir = os.fspath(out_dir)
    return {
        "predictions": os.path.join(out_dir, f"{name}.predictions.jsonl"),
        "scores": os.path.join(out_dir, f"{name}.scores.jsonl"),
        "results": os.path.join(out_dir, f"{name}.results.json"),
    }


def encode_question(
    tokenizer, config, spec: BenchmarkSpec, record: dict, image_root: str | os.PathLike, template: Template
) -> dict:
    """One model sample: the rendered prompt's ids with the image placeholder expanded, and the image's pixels."""
    prompt = template.render([build_prompt(spec, record)])
    pixels = load_image(os.path.join(image_root, record["image"]), config, pad_to_square=True)
    return {"input_ids": tokenize_prompt(tokenizer, prompt, placeholder_tokens(config)), "pixel_values": pixels[None]}


def _carried(spec: BenchmarkSpec, record: dict) -> dict:
    """The question fields a prediction or failure line carries."""
    keys = ("question_id", "image", *spec.reference_fields, spec.category_field or "category")
    return {k: record[k] for k in dict.fromkeys(keys) if k in record}


def _settings(
    model,
    tokenizer,
    spec: BenchmarkSpec,
    compression_arg,
    compression,
    template,
    generation,
    rank: int,
    world_size: int,
) -> dict:
    """What determines the predictions: a rerun into the same file must match it."""
    return run_settings(
        model,
        tokenizer,
        compression_arg,
        compression,
        template,
        generation,
        rank,
        world_size,
        benchmark={k: v for k, v in spec.to_dict().items() if k != "description"},
        image_processing={
            "size": model.config.vision_config.image_size,
            "pad_to_square": True,
            "mode": preprocessing_mode(model.config),
        },
    )


def run_benchmark(
    model,
    tokenizer,
    spec: BenchmarkSpec,
    data_path: str | os.PathLike,
    image_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    compression: SpecArgument = FROM_CONFIG,
    limit: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    template: Template | str | None = None,
) -> dict:
    """Answer this rank's share of a benchmark; with one rank, score it too. Returns counts, paths and results.

    The conversation template is `template` (a `Template` or a name) if given, else the spec's, else the one the
    checkpoint records (`llavolta_template`, else vicuna_v1).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    questions = read_questions(data_path, spec, limit)
    paths = output_paths(out_dir, spec.name)
    template = resolve_template(model.config, template or spec.template)
    spec_used = resolve_compression(model, compression)
    generation = generation_config(tokenizer, model.config, max_new_tokens or spec.max_new_tokens)
    settings = _settings(model, tokenizer, spec, compression, spec_used, template, generation, rank, world_size)
    run = {
        "data": os.path.abspath(data_path),
        "image_root": os.path.abspath(image_root),
        "limit": limit,
        "batch_size": batch_size,
        "device": str(model.device),
        "dtype": str(model.dtype),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }

    def failure(record: dict, err: BaseException) -> dict:
        return {
            **_carried(spec, record),
            "path": os.path.join(image_root, record["image"]),
            "reason": error_reason(err),
        }

    model.eval()
    summary = answer_questions(
        questions[rank::world_size],
        shard_path(paths["predictions"], rank, world_size),
        settings,
        run,
        lambda record: encode_question(tokenizer, model.config, spec, record, image_root, template),
        lambda samples: generate_answers(model, tokenizer, samples, generation, spec_used),
        lambda record, pred: {**_carried(spec, record), "pred": pred},
        failure,
        batch_size,
        desc=f"{spec.name} rank {rank}" if world_size > 1 else spec.name,
    )
    if world_size == 1:
        summary["results"] = score_benchmark(spec, data_path, out_dir, limit)
    return summary


def merge_benchmark(
    spec: BenchmarkSpec,
    data_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    world_size: int,
    limit: int | None = None,
) -> dict:
    """Merge the rank shards of a benchmark's predictions (every question id once), then score them."""
    questions = read_questions(data_path, spec, limit)
    out = output_paths(out_dir, spec.name)["predictions"]
    shards = [shard_path(out, r, world_size) for r in range(world_size)]
    summary = merge_shards(
        shards,
        questions,
        out,
        lambda record, pred: {**_carried(spec, record), "pred": pred},
        spec.reference_fields,
        data_path,
    )
    summary["results"] = score_benchmark(spec, data_path, out_dir, limit)
    return summary


# ---------------------------------------------------------------------------------------------------
# Scoring


def score_answer(spec: BenchmarkSpec, record: dict, pred: str) -> dict:
    """How one prediction scores: {"parsed", "score", "status", ["reason"]} (status "scored" or "unparsed")."""
    answer = record[spec.answer_field]
    if spec.answer_type == "short_answer":
        score = (
            vqa_accuracy(pred, answer)
            if spec.metric == "vqa_accuracy"
            else exact_match(pred, answer if isinstance(answer, str) else answer[0])
        )
        return {"parsed": normalize_vqa_answer(pred), "score": score, "status": "scored"}
    if spec.answer_type == "yes_no":
        parsed, reason = parse_yes_no(pred)
        truth = answer.strip().lower()
    else:
        parsed, reason = extract_choice(pred, record["options"])
        truth = answer
    if parsed is None:
        return {"parsed": None, "score": 0.0, "status": "unparsed", "reason": reason}
    return {"parsed": parsed, "score": float(parsed == truth), "status": "scored"}


def score_benchmark(
    spec: BenchmarkSpec, data_path: str | os.PathLike, out_dir: str | os.PathLike, limit: int | None = None
) -> dict:
    """Score a benchmark's predictions file against its question file; writes the scores JSONL and results JSON."""
    questions = read_questions(data_path, spec, limit)
    paths = output_paths(out_dir, spec.name)
    by_id = {str(q["question_id"]): q for q in questions}
    preds = {}
    for number, p in enumerate(read_jsonl(paths["predictions"]), 1):
        key = str(p.get("question_id"))
        if key not in by_id:
            raise ValueError(
                f"{paths['predictions']}:{number}: question id {p.get('question_id')!r} is not in "
                f"{data_path}" + (f" (first {limit})" if limit else "") + ": another question file?"
            )
        if not isinstance(p.get("pred"), str):
            raise ValueError(f"{paths['predictions']}:{number}: 'pred' must be a string, got {p.get('pred')!r}")
        ref = by_id[key]
        if any(k in p and p[k] != ref.get(k) for k in spec.reference_fields):
            raise ValueError(
                f"{paths['predictions']}:{number}: question {p['question_id']!r} has another question "
                f"or reference than {data_path}: predictions of another question file?"
            )
        if key in preds:
            raise ValueError(f"{paths['predictions']}:{number}: question id {p['question_id']!r} predicted twice")
        preds[key] = p["pred"]
    failures = read_failures(paths["predictions"], preds)

    rows = []
    for q in questions:
        key = str(q["question_id"])
        row = {"question_id": q["question_id"], "image": q["image"], "answer": q[spec.answer_field]}
        if spec.answer_type == "yes_no":
            row["answer"] = row["answer"].strip().lower()
        if spec.category_field:
            row["category"] = q[spec.category_field]
        if key in preds:
            row.update(pred=preds[key], **score_answer(spec, q, preds[key]))
        else:
            reason = failures[key].get("reason", "failed") if key in failures else "no prediction"
            row.update(pred=None, parsed=None, score=0.0, status="missing", reason=reason)
        rows.append(row)

    metrics = summarize(spec.metric, rows, by_category=spec.category_field is not None)
    counts = _counts(rows)
    by_category = {
        c: {**m, **_counts([r for r in rows if r["category"] == c])} for c, m in metrics["by_category"].items()
    }
    settings = read_settings(paths["predictions"])
    results = {
        "benchmark": spec.name,
        "metric": spec.metric,
        "spec": spec.to_dict(),
        "data": os.path.abspath(data_path),
        "limit": limit,
        "predictions": paths["predictions"],
        "scores": paths["scores"],
        "counts": counts,
        "overall": metrics["overall"],
        "aggregate": metrics["aggregate"],
        "by_category": by_category,
        "settings": settings,
        "note": "every question counts: missing, failed and unparsed answers score 0",
        "unparsed": [
            {"question_id": r["question_id"], "pred": r["pred"], "reason": r["reason"]}
            for r in rows
            if r["status"] == "unparsed"
        ],
        "missing": [{"question_id": r["question_id"], "reason": r["reason"]} for r in rows if r["status"] == "missing"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_jsonl(paths["scores"], rows)
    write_json(paths["results"], results)
    return results


def _counts(rows: Sequence[dict]) -> dict:
    """Questions, answered (not missing), unparsed and missing rows."""
    return {
        "questions": len(rows),
        "answered": sum(r["status"] != "missing" for r in rows),
        "unparsed": sum(r["status"] == "unparsed" for r in rows),
        "missing": sum(r["status"] == "missing" for r in rows),
    }


# ---------------------------------------------------------------------------------------------------
# The table

_PERCENT = {"accuracy", "accuracy_plus", "precision", "recall", "f1", "yes_ratio"}


def _fmt(key: str, value) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    base = key.removesuffix("_mean_over_categories")
    return f"{100 * value:.1f}%" if base in _PERCENT else f"{value:.1f}"


def format_results(results: dict) -> str:
    """The results as a plain-text table: counts and metrics overall and per category, then the aggregates."""
    settings = results.get("settings") or {}
    stored = settings.get("compression")
    compression = spec_label(None if stored is None else CompressionSpec.from_dict(stored)) if settings else "?"
    title = (
        f"{results['benchmark']} ({results['metric']})  model: {settings.get('model') or '?'}  "
        f"compression: {compression}"
    )
    metric_keys = list(results["overall"])

    def row(label: str, counts: dict, metrics: dict) -> list:
        return [label, *(counts[k] for k in COUNT_KEYS), *(_fmt(k, metrics[k]) for k in metric_keys)]

    rows = [row(results["benchmark"], results["counts"], results["overall"])]
    rows += [row(f"  {category}", m, m) for category, m in results["by_category"].items()]
    lines = [format_table(rows, ["", *COUNT_KEYS, *metric_keys], title=title)]
    lines += [f"{key}: {_fmt(key, value)}" for key, value in results["aggregate"].items()]
    for status in ("unparsed", "missing"):
        if items := results[status]:
            ids = ", ".join(str(u["question_id"]) for u in items[:5])
            lines.append(f"{status}: {len(items)} ({ids}{' ...' if len(items) > 5 else ''})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Command line: `run` (the default) answers and scores, `merge` joins the ranks' shards, `score` rescores


def add_score_arguments(p: argparse.ArgumentParser) -> None:
    """The options every job takes, which are all that scoring needs."""
    p.add_argument(
        "--benchmark",
        required=True,
        metavar="NAME|SPEC",
        help="benchmark spec: a shipped one's name (gqa, pope, ...) or a spec YAML's path",
    )
    p.add_argument("--data", required=True, help="the benchmark's question JSONL")
    p.add_argument("--out", required=True, help="output folder (files are named after the benchmark)")
    p.add_argument("--limit", type=int, help="only the first N questions of the question file")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The evaluation run's options."""
    add_score_arguments(p)
    p.add_argument("--image-root", required=True, help="folder the question file's image paths are relative to")
    add_model_arguments(p, "LLaVA")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, help="default: the spec's max_new_tokens")


def run(args: argparse.Namespace) -> int:
    """Answer this rank's share (rank from RANK / WORLD_SIZE); on one process, score and print the results."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    spec = load_spec(args.benchmark)
    from .checkpoint import load_pretrained

    model, tokenizer = load_for_generation(args, load_pretrained)
    summary = run_benchmark(
        model,
        tokenizer,
        spec,
        args.data,
        args.image_root,
        args.out,
        args.batch_size,
        args.max_new_tokens,
        args.compression,
        args.limit,
        rank,
        world_size,
        args.template,
    )
    if "results" in summary:
        _print_results(summary["results"], args.out, spec)
    else:
        print(
            f"rank {rank} of {world_size}: {summary['predicted']} predicted, {summary['failed']} failed "
            f"-> {summary['predictions']}"
        )
        if rank == 0:
            print(
                f"when every rank has finished: python -m image_llavolta.evaluate merge --benchmark "
                f"{args.benchmark} --data {args.data} --out {args.out} --world-size {world_size}"
                + (f" --limit {args.limit}" if args.limit else "")
            )
    return 0


def add_merge_arguments(p: argparse.ArgumentParser) -> None:
    """The merge job's options."""
    add_score_arguments(p)
    p.add_argument("--world-size", type=int, required=True, help="how many ranks wrote shards")


def run_merge(args: argparse.Namespace) -> int:
    """Merge the rank shards of a benchmark's predictions, score them and print the results."""
    spec = load_spec(args.benchmark)
    _print_results(merge_benchmark(spec, args.data, args.out, args.world_size, args.limit)["results"], args.out, spec)
    return 0


def run_score(args: argparse.Namespace) -> int:
    """Score existing predictions and print the results."""
    spec = load_spec(args.benchmark)
    _print_results(score_benchmark(spec, args.data, args.out, args.limit), args.out, spec)
    return 0


def _print_results(results: dict, out: str, spec: BenchmarkSpec) -> None:
    print(format_results(results))
    print(f"\nresults: {output_paths(out, spec.name)['results']}")


JOBS = Jobs(
    __doc__,
    {
        "run": Job(__doc__, add_arguments, run, "answer a benchmark's questions, then score them (one process)"),
        "merge": Job(
            "Merge the rank shards of a benchmark's predictions, then score them.", add_merge_arguments, run_merge
        ),
        "score": Job(
            "Score <out>/<benchmark>.predictions.jsonl against the question file.", add_score_arguments, run_score
        ),
    },
    default="run",
)
main = main_for(JOBS, "python -m image_llavolta.evaluate")

if __name__ == "__main__":
    sys.exit(main())
