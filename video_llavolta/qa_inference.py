"""Video QA inference: a model answers every question of a QA JSONL; predictions are written as they come.

    python -m video_llavolta.qa_inference --model DIR --qa msvd_qa.jsonl --benchmark msvd --video-root videos/ \\
        --out preds.jsonl
    torchrun --nproc-per-node 8 -m video_llavolta.qa_inference ... --out preds.jsonl     # one shard per rank
    python -m video_llavolta.qa_inference merge --qa msvd_qa.jsonl --out preds.jsonl --world-size 8

Input: the unified QA JSONL of `data_prep convert-qa` (`{"question_id", "video", "question", "answer"}`, plus
"type" where the benchmark names question types; `video_llavolta.benchmarks`). The benchmark's spec (`--benchmark`,
configs/benchmarks/*_qa.yaml) gives the prompt, the token limit and the template; without one the prompt is
Video-LLaVA's "<video>\\n{question}" and at most 16 new tokens are generated. The prompt goes into the template's
user turn: the spec's, else the one the checkpoint records (`llavolta_template`: `llava_v1` for a converted
Video-LLaVA release, as its video-QA script answers), unless `--template` names another. The video is read from
its frame directory `frames_root/<video_id>` when finished (`data_prep extract-frames`), else decoded from
`video_root/<video>`. Decoding is greedy
(`do_sample=False`, one beam), batched with left padding; the compression spec is the checkpoint's
(`"from_config"`), none, or any `CompressionSpec` (test-time compression).

Output, next to `out` (`preds.jsonl`; with W ranks each rank r writes `preds.rank<r>-of-<W>.jsonl`):

    preds.jsonl                {"question_id", "question", "answer", "pred"} (+ "type", "video" when present)
    preds.failures.jsonl       questions whose video failed to load, with the reason: counted as missing
    preds.settings.json        model, compression, frames, short-clip policy, template, generation settings, counts

Resuming: predictions are appended and flushed batch by batch, so a killed run loses at most the batch in flight;
a rerun skips the question ids already written (a cut-off last line is dropped) and retries the failed ones.
A rerun with other settings (compression, model, generation) into the same file is refused.

Questions go to ranks by position (rank r takes every W-th question from the r-th); `merge_predictions` then
checks that every question id of the QA file appears exactly once over all shards (predicted or failed) and joins
every reference answer by question id from the QA file, never by position. Any mismatch is an error.

The batched resumable loop, the sidecar files, decoding and the merge are `image_llavolta.generation`'s, shared
with the image benchmark harness (`image_llavolta.evaluate`); this module says how a video question is read.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import torch
import transformers

from image_llavolta.commands import Job, Jobs, main_for
from image_llavolta.compression import FROM_CONFIG, SpecArgument
from image_llavolta.conversation import Template, resolve_template
from image_llavolta.generation import (  # the shared loop; re-exported here for the video harness's callers
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
from image_llavolta.tables import format_table

from .benchmarks import DEFAULT_PROMPT, VideoQASpec, load_qa_spec, read_qa
from .configs import num_frames, short_clip_policy
from .frames import video_source
from .inputs import encode_sample, read_video
from .onevision import encode_video_sample, video_prompt
from .qwen import qa_sample

__all__ = [
    "generate_answers",
    "generation_config",
    "main",
    "merge_predictions",
    "read_qa",
    "resolve_compression",
    "run_inference",
    "shard_path",
]

logger = logging.getLogger(__name__)

REFERENCE_FIELDS = ("question", "answer")  # checked against the QA file when merging
EXTRA_FIELDS = ("type", "video")  # carried from the QA record into each prediction when present
DEFAULT_MAX_NEW_TOKENS = 16  # without a benchmark spec (which says its own)


def _settings(
    model, tokenizer, compression_arg, spec, template: Template, generation, rank: int, world_size: int, prompt: str
) -> dict:
    """What determines the predictions: a rerun into the same file must match it."""
    return run_settings(
        model,
        tokenizer,
        compression_arg,
        spec,
        template,
        generation,
        rank,
        world_size,
        num_frames=num_frames(model.config),
        short_clip=short_clip_policy(model.config),
        prompt=prompt,
    )


def _encode_with_template(tokenizer, config, template: Template, question: str, frames) -> dict:
    """A Video-LLaVA question: the conversation template's user turn around the prompt."""
    return encode_sample(tokenizer, config, template.render([question]), videos=[frames])


def _encode_with_chat_template(tokenizer, config, template: Template, question: str, frames) -> dict:
    """A LLaVA-OneVision question: the tokenizer's own chat template (the conversation template is unused)."""
    return encode_video_sample(tokenizer, config, video_prompt(tokenizer, question), frames.frames)


def _encode_qwen(tokenizer, config, template: Template, question: str, frames) -> dict:
    """A Qwen2-VL / Qwen2.5-VL question: the chat template, frames as the checkpoint's patches (template unused)."""
    return qa_sample(tokenizer, config, question, frames.frames)


# model type -> how its prompt is built and encoded (default: the conversation template's, Video-LLaVA's)
QUESTION_ENCODERS = {
    "llava_onevision": _encode_with_chat_template,
    "qwen2_vl": _encode_qwen,
    "qwen2_5_vl": _encode_qwen,
}


def question_encoder(config):
    """`encode(tokenizer, config, template, question, frames)` of a model config's family."""
    return QUESTION_ENCODERS.get(config.model_type, _encode_with_template)


def _prediction(record: dict, pred: str) -> dict:
    out = {k: record[k] for k in ("question_id", "question", "answer")}
    out["pred"] = pred
    out.update({k: record[k] for k in EXTRA_FIELDS if k in record})
    return out


def run_inference(
    model,
    tokenizer,
    qa_path: str | os.PathLike,
    out_path: str | os.PathLike,
    video_root: str | os.PathLike,
    frames_root: str | os.PathLike | None = None,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    compression: SpecArgument = FROM_CONFIG,
    template: Template | str | None = None,
    rank: int = 0,
    world_size: int = 1,
    benchmark: VideoQASpec | str | os.PathLike | None = None,
) -> dict:
    """Answer this rank's share of a QA file into `shard_path(out_path, rank, world_size)`; returns a summary.

    `benchmark` (a spec, or a spec's name or path) gives the prompt and the defaults for `max_new_tokens` and the
    template; without one the prompt is Video-LLaVA's "<video>\\n{question}" and at most 16 new tokens.
    `template`: a `Template` or its name; None takes the spec's, else the one the checkpoint records
    (`llavolta_template`).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if benchmark is not None and not isinstance(benchmark, VideoQASpec):
        benchmark = load_qa_spec(benchmark)
    prompt = benchmark.prompt if benchmark else DEFAULT_PROMPT
    if max_new_tokens is None:
        max_new_tokens = benchmark.max_new_tokens if benchmark else DEFAULT_MAX_NEW_TOKENS
    shard = read_qa(qa_path)[rank::world_size]
    template = resolve_template(model.config, template or (benchmark.template if benchmark else None))
    spec = resolve_compression(model, compression)
    generation = generation_config(tokenizer, model.config, max_new_tokens)
    settings = _settings(model, tokenizer, compression, spec, template, generation, rank, world_size, prompt)
    run = {
        "qa": os.path.abspath(qa_path),
        "benchmark": benchmark.name if benchmark else None,
        "video_root": os.path.abspath(video_root),
        "frames_root": None if frames_root is None else os.path.abspath(frames_root),
        "batch_size": batch_size,
        "device": str(model.device),
        "dtype": str(model.dtype),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }

    encode_question = question_encoder(model.config)

    def encode(record: dict) -> dict:
        frames = read_video(video_source(record["video"], video_root, frames_root), model.config)
        return encode_question(tokenizer, model.config, template, prompt.format(question=record["question"]), frames)

    def failure(record: dict, err: BaseException) -> dict:
        return {
            **{k: record[k] for k in ("question_id", "question", "answer")},
            **{k: record[k] for k in EXTRA_FIELDS if k in record},
            "path": video_source(record["video"], video_root, frames_root),
            "reason": error_reason(err),
        }

    model.eval()
    return answer_questions(
        shard,
        shard_path(out_path, rank, world_size),
        settings,
        run,
        encode,
        lambda samples: generate_answers(model, tokenizer, samples, generation, spec),
        _prediction,
        failure,
        batch_size,
        desc=f"qa rank {rank}" if world_size > 1 else "qa",
    )


def merge_predictions(
    shard_paths: Sequence[str | os.PathLike], qa_path: str | os.PathLike, out_path: str | os.PathLike
) -> dict:
    """Merge rank shards into `out_path` in QA order: every question id exactly once, references joined by id."""
    return merge_shards(shard_paths, read_qa(qa_path), out_path, _prediction, REFERENCE_FIELDS, qa_path)


# ---------------------------------------------------------------------------------------------------
# Command line: `run` (the default) answers this rank's share, `merge` joins the ranks' shards


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Inference's options."""
    add_model_arguments(p, "Video-LLaVA")
    p.add_argument("--qa", required=True, help="unified QA JSONL (data_prep convert-qa / make-synthetic)")
    p.add_argument(
        "--benchmark",
        metavar="NAME|SPEC",
        help="video QA spec (msvd, msrvtt, activitynet or a YAML path): prompt, template, token limit",
    )
    p.add_argument("--video-root", required=True, help="folder the QA file's video paths are relative to")
    p.add_argument("--frames-root", help="extract-frames output: frame directories are used when present")
    p.add_argument("--out", required=True, help="predictions JSONL (one shard per rank under torchrun)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, help=f"default: the benchmark spec's, else {DEFAULT_MAX_NEW_TOKENS}")


def run(args: argparse.Namespace) -> int:
    """Answer this process's rank's share of the questions (rank from RANK / WORLD_SIZE) and print a summary."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    from .families import family_for

    model, tokenizer = load_for_generation(args, lambda path, **kw: family_for(path).load_pretrained(path, **kw))
    summary = run_inference(
        model,
        tokenizer,
        args.qa,
        args.out,
        args.video_root,
        args.frames_root,
        args.batch_size,
        args.max_new_tokens,
        args.compression,
        template=args.template,
        rank=rank,
        world_size=world_size,
        benchmark=args.benchmark,
    )
    _print_rows(f"qa inference (rank {rank} of {world_size})", summary)
    if world_size > 1 and rank == 0:
        print(
            f"\nwhen every rank has finished: python -m video_llavolta.qa_inference merge --qa {args.qa} "
            f"--out {args.out} --world-size {world_size}"
        )
    return 0


def add_merge_arguments(p: argparse.ArgumentParser) -> None:
    """The merge job's options."""
    p.add_argument("--qa", required=True, help="the QA JSONL the shards answered")
    p.add_argument("--out", required=True, help="merged predictions JSONL (the --out the ranks were given)")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--world-size", type=int, help="find the shards <out>.rank<r>-of-<W>.jsonl")
    group.add_argument("--shards", nargs="+", help="the shard files")


def run_merge(args: argparse.Namespace) -> int:
    """Merge the rank shards into `--out` and print a summary."""
    shards = args.shards or [shard_path(args.out, r, args.world_size) for r in range(args.world_size)]
    _print_rows("merge", merge_predictions(shards, args.qa, args.out))
    return 0


def _print_rows(title: str, rows: dict) -> None:
    print("\n" + format_table(rows.items(), title=title, indent=2))


RUN = Job(__doc__, add_arguments, run, "answer every question of a QA JSONL (this rank's share under torchrun)")
MERGE = Job("Merge rank shards: every question id exactly once, answers joined by id.", add_merge_arguments, run_merge)
JOBS = Jobs(__doc__, {"run": RUN, "merge": MERGE}, default="run")
main = main_for(JOBS, "python -m video_llavolta.qa_inference")

if __name__ == "__main__":
    sys.exit(main())
