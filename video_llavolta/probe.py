"""The redundancy probe on a Video-LLaVA checkpoint (paper §4.2, Fig. 1): how much do its visual tokens matter?

    python -m video_llavolta.probe --model CKPT --qa test_qa.jsonl --video-root videos/ --frames-root frames/ \\
        --layers 2,8,16 --strides 2,4,8 --out probe/ [--judge offline|openai] [--limit 200] [--attention-samples 32]

1. Sweep: test-time average pooling after every layer K of --layers with every stride S of --strides, plus the stock
   model (no compression). Each point answers the QA file (`qa_inference.run_inference`) and is judged
   (`judge.judge_predictions`); its accuracy is set against the share of visual tokens kept over the decoder,
   Σ_layers visual tokens / (N·L) = 1/CR (Eq. 3; `image_llavolta.probe.share_kept`).
2. Attention: for the first --attention-samples questions, the attention that the answer position (the last prompt
   token) pays to the visual tokens and to the system-prompt tokens at every decoder layer, recomputed from each
   layer's input (SDPA / FlashAttention stay on; no eager attention).

Output in --out:

    sweep.json       every point: K, S, share_kept, compression_ratio, tokens_over_layers, accuracy, metrics, status
    sweep.png        accuracy vs share kept, one line per K (--lines-per stride: per S), the stock point starred
    attention.json   per layer: mass and mass per token on visual / system / BOS / other tokens, per-sample values
    attention.png    per layer: visual vs system tokens
    points/<name>/   each point's predictions (preds.jsonl and sidecars) and judged results (results.json)
    qa.jsonl         the first --limit questions, when --limit is given
    judge_cache.jsonl  the LLM judge's cache (--judge openai), shared by all points

Resuming: a rerun skips points already in sweep.json, retries failed ones (a point that fails is recorded with its
error, and the sweep goes on), and continues a point's predictions where they stopped; the attention profile is
reused when attention.json was made with the same settings (else recomputed). A rerun with other sweep settings
(model, QA file, --limit, template, judge, --max-new-tokens) into the same folder is refused; exit code 1 says a
point failed.
The PNGs need matplotlib (`pip install -e .[plot]`); without it the JSON is written and a one-line hint printed.
Offline-judged accuracies are string matches, not comparable with GPT-judged ones.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from image_llavolta.commands import command_main
from image_llavolta.compression import CompressionSpec, placeholder_ids
from image_llavolta.conversation import Template, resolve_template
from image_llavolta.generation import add_model_arguments, load_for_generation
from image_llavolta.jsonio import write_jsonl
from image_llavolta.plots import save_plots
from image_llavolta.probe import (
    attention_profile,
    format_attention,
    format_sweep,
    point_name,
    prompt_regions,
    read_json,
    run_sweep,
    sweep_grid,
    write_json,
)

from .benchmarks import read_qa
from .configs import frame_tokens, num_frames, short_clip_policy
from .frames import VideoError, video_source
from .inputs import read_video
from .judge import DEFAULT_JUDGE_MODEL, OfflineJudge, OpenAIJudge, judge_predictions
from .models.llava_onevision import frame_tokens as onevision_frame_tokens
from .qa_inference import QUESTION_ENCODERS, question_encoder, run_inference
from .qwen import video_segments as qwen_video_segments

# model type -> visual tokens per video frame, where not Video-LLaVA's (patches + CLS)
FRAME_TOKENS = {"llava_onevision": onevision_frame_tokens}
# model type -> (config, frames) -> a video's visual segment lengths, where they depend on the video's size
VIDEO_SEGMENTS = {"qwen2_vl": qwen_video_segments, "qwen2_5_vl": qwen_video_segments}
NO_SYSTEM = Template(system="", name="chat template")  # for prompts a tokenizer's chat template writes

logger = logging.getLogger(__name__)


def _judge_id(judge) -> dict:
    """What identifies a judge's verdicts (not its request counters)."""
    return {"name": judge.name, "model": getattr(judge, "model", None), "base_url": getattr(judge, "base_url", None)}


def _evaluator(
    model,
    tokenizer,
    qa_path: str,
    out_dir: str,
    video_root,
    frames_root,
    judge,
    batch_size: int,
    max_new_tokens: int,
    template: Template,
):
    """evaluate(spec) for `run_sweep`: answer the QA file with that spec into points/<name>/ and judge it."""

    def evaluate(spec: CompressionSpec | None) -> dict:
        folder = os.path.join(out_dir, "points", point_name(spec))
        preds = os.path.join(folder, "preds.jsonl")
        run_inference(
            model,
            tokenizer,
            qa_path,
            preds,
            video_root,
            frames_root,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            compression=spec,
            template=template,
        )
        results_path = os.path.join(folder, "results.json")
        results = judge_predictions(preds, judge, results_path, benchmark="probe", qa_path=qa_path)
        overall = results["overall"]
        if overall["api_errors"]:  # not cached by the judge: fail the point so that a rerun asks again
            raise RuntimeError(f"{overall['api_errors']} judge API error(s) (see {results_path}); rerun to retry")
        keys = ("accuracy", "score", "questions", "judged", "missing", "parse_failures")
        return {**{k: overall[k] for k in keys}, "results": results_path}

    return evaluate


def sweep_segments(config, records: Sequence[dict], video_root, frames_root=None) -> list:
    """The visual segment lengths of the sweep's accounting: one sample's, standing for all, where the family's
    counts are fixed; else each readable question's own, from its frames (an unreadable one fails in the sweep's
    inference too, and is left out)."""
    per_video = VIDEO_SEGMENTS.get(config.model_type)
    if per_video is None:
        return [FRAME_TOKENS.get(config.model_type, frame_tokens)(config)] * num_frames(config)
    segments = []
    for record in records:
        try:
            frames = read_video(video_source(record["video"], video_root, frames_root), config).frames
        except Exception:  # decoders raise many types on bad files: the sweep's inference records the failure
            continue
        segments.append(per_video(config, frames))
    if not segments:
        raise ValueError(f"none of the {len(records)} questions has a readable video: no visual tokens to account")
    return segments


def probe_attention(
    model,
    tokenizer,
    records: Sequence[dict],
    video_root,
    frames_root=None,
    template: Template | str | None = None,
    batch_size: int = 1,
) -> dict:
    """The attention profile over `records` (QA records); questions whose video fails to load are skipped."""
    template = resolve_template(model.config, template)
    encode_question, chat = question_encoder(model.config), model.config.model_type in QUESTION_ENCODERS
    samples, used, skipped = [], [], []
    visual = placeholder_ids(model.config)
    pad = next(
        (t for t in (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.eos_token_id) if t is not None), 0
    )
    for record in records:
        source = video_source(record["video"], video_root, frames_root)
        try:
            frames = read_video(source, model.config)
        except Exception as err:  # decoders raise many types on bad files: skip this question only
            message = err.message if isinstance(err, VideoError) else str(err)
            skipped.append(
                {"question_id": record["question_id"], "path": source, "reason": f"{type(err).__name__}: {message}"}
            )
            continue
        sample = encode_question(tokenizer, model.config, template, "<video>\n" + record["question"], frames)
        if chat:  # a chat template's prompt has no conversation-template system message to find
            sample["regions"] = prompt_regions(tokenizer, NO_SYSTEM, "", sample["input_ids"], visual)
        else:
            prompt = template.render(["<video>\n" + record["question"]])
            sample["regions"] = prompt_regions(tokenizer, template, prompt, sample["input_ids"], visual)
        samples.append(sample)
        used.append(record["question_id"])
    if not samples:
        raise ValueError(f"none of the {len(records)} attention samples has a readable video: {skipped[:3]}")
    profile = attention_profile(model, samples, batch_size=batch_size, pad_token_id=pad)
    return {"question_ids": used, "skipped": skipped, **profile}


def run_probe(
    model,
    tokenizer,
    qa_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    video_root: str | os.PathLike,
    layers: Sequence[int],
    strides: Sequence[int],
    judge,
    frames_root: str | os.PathLike | None = None,
    limit: int | None = None,
    attention_samples: int = 16,
    batch_size: int = 8,
    max_new_tokens: int = 16,
    method: str = "avgpool",
    template: Template | str | None = None,
    lines_per: str = "layer",
    plots: bool = True,
) -> dict:
    """Sweep and attention profile of `model` on a QA file into `out_dir`; returns {"sweep", "attention", "plots"}.

    `template`: a `Template` or its name; None takes the one the checkpoint records (`llavolta_template`).
    """
    out_dir = os.fspath(out_dir)
    template = resolve_template(model.config, template)
    num_layers = model.config.text_config.num_hidden_layers
    points = sweep_grid(layers, strides, num_layers, method=method)  # bad K or S: an error before any work
    if attention_samples < 0:
        raise ValueError(f"attention_samples must be >= 0, got {attention_samples}")
    records = read_qa(qa_path, limit)
    os.makedirs(out_dir, exist_ok=True)
    qa_used = os.fspath(qa_path)
    if limit is not None:
        qa_used = os.path.join(out_dir, "qa.jsonl")
        write_jsonl(qa_used, records)
    name = getattr(model, "name_or_path", "") or ""
    common = {
        "model": os.path.abspath(name) if name and os.path.isdir(name) else name,
        "qa": os.path.abspath(qa_path),
        "limit": limit,
        "template": template.to_dict(),
        "num_frames": num_frames(model.config),
        "short_clip": short_clip_policy(model.config),
    }

    evaluate = _evaluator(
        model, tokenizer, qa_used, out_dir, video_root, frames_root, judge, batch_size, max_new_tokens, template
    )
    sweep = run_sweep(
        points,
        evaluate,
        os.path.join(out_dir, "sweep.json"),
        num_layers,
        sweep_segments(model.config, records, video_root, frames_root),
        settings={**common, "judge": _judge_id(judge), "max_new_tokens": max_new_tokens},
    )

    attention = None
    if attention_samples:
        path = os.path.join(out_dir, "attention.json")
        settings = {**common, "attention_samples": attention_samples}
        stored = read_json(path, "attention profile") if os.path.exists(path) else None
        if stored is not None and stored.get("status") == "complete" and stored.get("settings") == settings:
            attention = stored  # the sweep's settings check has passed: only --attention-samples may differ
        else:
            profile = probe_attention(
                model, tokenizer, records[:attention_samples], video_root, frames_root, template, batch_size
            )
            attention = {"settings": settings, "status": "complete", **profile}
            write_json(path, attention)
    written = save_plots(out_dir, sweep, attention, lines_per) if plots else {}
    return {"sweep": sweep, "attention": attention, "plots": written, "out": out_dir}


def print_tables(result: dict, file=None) -> None:
    """The sweep (one row per point) and the attention profile (one row per layer) as text tables."""
    file = file or sys.stdout
    print("\n" + format_sweep(result["sweep"]), file=file)
    if result.get("attention"):
        print("\n" + format_attention(result["attention"]), file=file)
    for name, path in (result.get("plots") or {}).items():
        if path:
            print(f"{name} plot: {path}", file=file)
    print(f"results: {result['out']}", file=file)


def int_list(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2]."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 2,8,16, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The probe's options."""
    add_model_arguments(p, "Video-LLaVA", compression=False)
    p.add_argument("--qa", required=True, help="unified QA JSONL (data_prep convert-qa / make-synthetic)")
    p.add_argument("--video-root", required=True, help="folder the QA file's video paths are relative to")
    p.add_argument("--frames-root", help="extract-frames output: frame directories are used when present")
    p.add_argument("--layers", required=True, type=int_list, help="layers K to pool after, e.g. 2,8,16")
    p.add_argument("--strides", required=True, type=int_list, help="strides S, e.g. 2,4,8")
    p.add_argument("--method", default="avgpool", help="compression method of the sweep (default: avgpool)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--judge",
        choices=("offline", "openai"),
        default="offline",
        help="offline: normalised string match (not comparable with GPT-judged numbers); openai: LLM judge",
    )
    p.add_argument("--limit", type=int, help="only the first N questions of --qa")
    p.add_argument(
        "--attention-samples",
        type=int,
        default=16,
        help="questions for the attention profile (the first N; 0 skips it)",
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument(
        "--lines-per",
        choices=("layer", "stride"),
        default="layer",
        help="sweep.png: one line per layer K (points are strides) or per stride S",
    )
    g = p.add_argument_group("openai judge")
    g.add_argument("--judge-model", default=DEFAULT_JUDGE_MODEL, help=f"default: {DEFAULT_JUDGE_MODEL}")
    g.add_argument("--base-url", help="OpenAI-compatible server (default: OpenAI)")
    g.add_argument("--api-key-env", default="OPENAI_API_KEY", help="variable holding the API key")


def run(args: argparse.Namespace) -> int:
    """Run the probe and print its tables: exit code 1 when a sweep point failed."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.judge == "openai":
        judge = OpenAIJudge(
            args.judge_model, args.base_url, args.api_key_env, cache_path=os.path.join(args.out, "judge_cache.jsonl")
        )
    else:
        judge = OfflineJudge("normalized")
    from .families import family_for

    model, tokenizer = load_for_generation(
        args, lambda path, **kw: family_for(path).load_pretrained(path, **kw), compression=None
    )
    result = run_probe(
        model,
        tokenizer,
        args.qa,
        args.out,
        args.video_root,
        args.layers,
        args.strides,
        judge,
        frames_root=args.frames_root,
        limit=args.limit,
        attention_samples=args.attention_samples,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        method=args.method,
        template=args.template,
        lines_per=args.lines_per,
    )
    print_tables(result)
    failed = result["sweep"]["counts"]["failed"]
    if failed:
        print(f"{failed} sweep point(s) failed (see sweep.json); rerun the same command to retry them", file=sys.stderr)
        return 1
    return 0


main = command_main(add_arguments, run, "python -m video_llavolta.probe", __doc__)


if __name__ == "__main__":
    sys.exit(main())
