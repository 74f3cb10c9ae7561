"""Judge video QA predictions: an LLM judge over any OpenAI-compatible API, or offline string matching.

    python -m video_llavolta.judge --predictions msvd=preds/msvd.jsonl --judge openai --out results/msvd.json
    python -m video_llavolta.judge --predictions msvd=msvd.jsonl msrvtt=msrvtt.jsonl --judge offline-normalized \\
        --out results.json

A benchmark named like a shipped video QA spec (msvd, msrvtt, activitynet; `--benchmark` also takes a spec's path)
brings its judge settings: the pinned judge model, unless --model names another, and the rubric, which must be
this judge's. Other names are labels. Input: the predictions JSONL of `video_llavolta.qa_inference` and the
failures JSONL beside it (a question whose video failed to load counts as missing); with --qa, reference answers
are checked against the QA file by question id and every question without a prediction counts as missing too.
The API key is read from --api-key-env (OPENAI_API_KEY) and never written anywhere.
"""

from __future__ import annotations

import argparse
import logging
import os

from image_llavolta.commands import command_main
from image_llavolta.jsonio import sidecar_path

from ..benchmarks import VideoQASpec, load_qa_spec, qa_spec_files
from .client import OpenAIJudge
from .offline import OfflineJudge
from .prompts import DEFAULT_JUDGE_MODEL, check_rubric
from .results import judge_predictions, name_files, print_results

JUDGES = ("offline-exact", "offline-normalized", "openai")


def _pairs(values: list[str] | None) -> dict[str, str] | str | None:
    """`[NAME=]FILE ...` -> {name: file}; a single unnamed file stays a path."""
    if not values:
        return None
    if len(values) == 1 and "=" not in values[0]:
        return values[0]
    out = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            name, path = os.path.splitext(os.path.basename(value))[0], value
        if name in out:
            raise ValueError(f"benchmark {name!r} given twice")
        out[name] = path
    return out


def benchmark_specs(names) -> dict[str, VideoQASpec]:
    """The shipped video QA specs of the benchmarks among `names` that have one (the others are labels)."""
    files = qa_spec_files()
    return {name: load_qa_spec(files[name]) for name in names if name in files}


def judge_model(specs: dict[str, VideoQASpec], model: str | None = None) -> str:
    """The LLM judge's model: `model`, else the one the specs pin (they must agree), else the default."""
    for name, spec in specs.items():
        if spec.judge is not None:
            check_rubric(spec.judge.rubric, f"benchmark {name!r}")
    pinned = {name: spec.judge.model for name, spec in specs.items() if spec.judge is not None}
    if model:
        return model
    if len(set(pinned.values())) > 1:
        raise ValueError(f"the benchmarks pin different judge models ({pinned}): pass --model or judge them apart")
    return next(iter(pinned.values()), DEFAULT_JUDGE_MODEL)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The judge's options."""
    p.add_argument(
        "--predictions",
        nargs="+",
        required=True,
        metavar="[NAME=]FILE",
        help="predictions JSONL, one per benchmark (NAME defaults to the file name)",
    )
    p.add_argument(
        "--qa",
        nargs="+",
        metavar="[NAME=]FILE",
        help="QA JSONL per benchmark: check references by id and count absent predictions as missing",
    )
    p.add_argument("--judge", choices=JUDGES, required=True)
    p.add_argument("--out", required=True, help="results JSON (judgments go to <out>.judgments.jsonl)")
    p.add_argument(
        "--benchmark",
        metavar="NAME|SPEC",
        help="a single predictions file's benchmark: a name (a shipped spec's, e.g. msvd, or a label) "
        "or a video QA spec's path",
    )
    g = p.add_argument_group("openai judge")
    g.add_argument("--model", help=f"judge model (default: the benchmark spec's, else {DEFAULT_JUDGE_MODEL})")
    g.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://localhost:8000/v1 (default: OpenAI)")
    g.add_argument("--api-key-env", default="OPENAI_API_KEY", help="variable holding the API key")
    g.add_argument("--cache", help="judgment cache JSONL (default: <out>.judge_cache.jsonl)")
    g.add_argument("--concurrency", type=int, default=4)
    g.add_argument(
        "--max-retries",
        type=int,
        default=5,
        help="retries of a failed request (429, 5xx, timeouts), with backoff, by the openai client",
    )
    g.add_argument("--max-parse-retries", type=int, default=2, help="times an unreadable reply is asked again")
    g.add_argument("--timeout", type=float, default=30.0, help="seconds per request")


def run(args: argparse.Namespace) -> int:
    """Judge predictions, print the table and write the results."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    preds, benchmark = _pairs(args.predictions), args.benchmark
    if benchmark is not None and benchmark.endswith((".yaml", ".yml")):  # a spec file names the benchmark
        spec = load_qa_spec(benchmark)
        specs, benchmark = {spec.name: spec}, spec.name
    else:
        specs = benchmark_specs(name_files(preds, benchmark))
    if args.judge == "openai":
        judge = OpenAIJudge(
            judge_model(specs, args.model),
            args.base_url,
            args.api_key_env,
            args.concurrency,
            args.max_retries,
            args.max_parse_retries,
            args.timeout,
            cache_path=args.cache or sidecar_path(args.out, ".judge_cache.jsonl"),
        )
    else:
        judge = OfflineJudge(args.judge.removeprefix("offline-"))
    results = judge_predictions(preds, judge, args.out, benchmark, _pairs(args.qa), specs=specs)
    print_results(results)
    print(f"\nresults: {args.out}")
    return 0


main = command_main(add_arguments, run, "python -m video_llavolta.judge", __doc__)
