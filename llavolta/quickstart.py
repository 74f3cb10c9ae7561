"""The quickstart: synthetic data → frames → train the baseline and a staged scheme → evaluate both → one table.

    llavolta quickstart [--config configs/video/quickstart.yaml] [--out runs/quickstart]
    python -m llavolta.quickstart ...                                                      # the same

Everything runs on CPU with a tiny Video-LLaVA-style model. Its video tower is first pretrained for two to three minutes
(`tower_pretrain`: a stand-in for LanguageBind's pretraining) and then frozen, as in Video-LLaVA; both schemes start
from that same checkpoint. Answers are judged offline (normalised string match) unless `--judge openai` points at an
OpenAI-compatible endpoint; offline numbers are not comparable with GPT-judged ones.

The table gives per scheme the accuracy and score, #Tokens (visual tokens summed over the decoder's layers and all
training samples, from the run report: the work the scheme's compression saves, which machine load cannot change),
the average CR and the training wall time (which load does change), then each scheme against the first, the baseline.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict
from typing import TYPE_CHECKING

from data_prep.extract import extract_frames
from data_prep.synthetic import make_synthetic
from image_llavolta.commands import command_main
from image_llavolta.jsonio import read_json, write_json
from image_llavolta.tables import format_table, percent

# torch and transformers are imported inside the functions: make-synthetic and extract-frames spawn worker
# processes, and each one re-imports this module first (about 10 s each when nothing is byte-compiled yet).
if TYPE_CHECKING:
    from .tower_pretrain import TowerPretrainConfig

SCHEMES = ("single", "four_wider_then_deeper")


def prepare_data(root: str, num_train: int, num_test: int, seed: int, workers: int) -> dict:
    """The synthetic data set and its pre-extracted frames (both resumable: a rerun reuses finished files)."""
    make_synthetic(os.path.join(root, "synthetic"), num_train=num_train, num_test=num_test, seed=seed, workers=workers)
    extract_frames(
        os.path.join(root, "synthetic", "videos"),
        os.path.join(root, "frames"),
        num_frames=8,
        fmt="npy",
        workers=workers,
    )
    return {
        "train": os.path.join(root, "synthetic", "train.json"),
        "metadata": os.path.join(root, "synthetic", "metadata.jsonl"),
        "test": os.path.join(root, "synthetic", "test_qa.jsonl"),
        "videos": os.path.join(root, "synthetic", "videos"),
        "frames": os.path.join(root, "frames"),
    }


def prepare_encoder(config, data: dict, out_dir: str, settings: TowerPretrainConfig) -> dict:
    """The schemes' starting checkpoint: the tiny model with its video tower pretrained; reused if already made."""
    from image_llavolta.train import tokenizer_for_run
    from video_llavolta.train import model_for_run

    from .tower_pretrain import load_patch_targets, pretrain_video_tower

    report_path = os.path.join(out_dir, "tower_pretrain.json")
    made_from = {
        "model": config.model.tiny,
        "seed": config.seed,
        "train": os.path.abspath(data["train"]),
        "settings": asdict(settings),
    }
    previous = read_json(report_path) if os.path.exists(report_path) else {}
    if previous.get("made_from") == made_from:
        print(f"tower pretraining: reusing {out_dir}")
        return previous
    tokenizer = tokenizer_for_run(config)
    model = model_for_run(config, tokenizer)
    pixels, labels = load_patch_targets(data["metadata"], data["frames"], model.config, min_cover=settings.min_cover)
    report = {"made_from": made_from, **pretrain_video_tower(model, pixels, labels, settings)}
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    write_json(report_path, report)  # last: its presence means the checkpoint is complete
    return report


def evaluate(run_dir: str, data: dict, judge: str, batch_size: int) -> dict:
    """Greedy answers on the synthetic test split, judged; returns the results dict."""
    from transformers import AutoTokenizer

    from video_llavolta.checkpoint import load_pretrained
    from video_llavolta.judge import OfflineJudge, OpenAIJudge, judge_predictions
    from video_llavolta.qa_inference import run_inference

    model = load_pretrained(run_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    predictions = os.path.join(run_dir, "predictions.jsonl")
    run_inference(
        model,
        tokenizer,
        data["test"],
        predictions,
        video_root=data["videos"],
        frames_root=data["frames"],
        batch_size=batch_size,
        max_new_tokens=4,
    )
    chosen = (
        OfflineJudge("normalized")
        if judge == "offline"
        else OpenAIJudge(cache_path=os.path.join(run_dir, "judge_cache.jsonl"))
    )
    return judge_predictions(predictions, chosen, os.path.join(run_dir, "results.json"), benchmark="synthetic")


def print_summary(rows: list[dict]) -> None:
    """The schemes' table, then each scheme against the first: visual tokens, training wall time, accuracy."""
    types = sorted({t for r in rows for t in r["accuracy_by_type"]})
    heads = ["scheme", "accuracy", "score", "#Tokens", "avg CR", "train s", *types]
    table = [
        [
            r["scheme"],
            percent(r["accuracy"]),
            None if r["score"] is None else f"{r['score']:.2f}",
            f"{r['visual_tokens_over_layers']:,}",
            f"{r['average_compression_ratio']:.2f}",
            f"{r['train_seconds']:.0f}",
            *(percent(r["accuracy_by_type"].get(t)) for t in types),
        ]
        for r in rows
    ]
    print(format_table(table, heads))
    print(
        "#Tokens: visual tokens summed over the decoder's layers and all training samples, the work compression "
        "saves;\nmachine load changes the wall time (train s), not #Tokens."
    )
    for row in rows[1:]:
        print(compare(row, rows[0]))


def compare(row: dict, baseline: dict) -> str:
    """One scheme against the baseline, e.g. 'two: 38% fewer #Tokens, 12% more training wall time than single'."""
    parts = []
    if baseline["visual_tokens_over_layers"]:
        parts.append(
            change(row["visual_tokens_over_layers"], baseline["visual_tokens_over_layers"], "fewer", "more")
            + " #Tokens"
        )
    if baseline["train_seconds"]:
        parts.append(change(row["train_seconds"], baseline["train_seconds"], "less", "more") + " training wall time")
    line = f"{row['scheme']}: {', '.join(parts)} than {baseline['scheme']}"
    if None not in (row["accuracy"], baseline["accuracy"]):
        line += f", accuracy {100 * (row['accuracy'] - baseline['accuracy']):+.1f} points"
    return line


def change(new: float, old: float, fewer: str, more: str) -> str:
    """`new` against `old` in words: '38% fewer', '12% more' (never a negative saving), or 'the same'."""
    share = new / old - 1
    if round(100 * abs(share)) == 0:
        return "the same"
    return f"{abs(share):.0%} {more if share > 0 else fewer}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The quickstart's options."""
    from .tower_pretrain import TowerPretrainConfig

    parser.add_argument("--config", default="configs/video/quickstart.yaml")
    parser.add_argument("--out", default="runs/quickstart")
    parser.add_argument("--data", default="data", help="where the synthetic data set and frames go")
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--num-test", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--judge", choices=["offline", "openai"], default="offline")
    parser.add_argument("--schemes", nargs="+", default=list(SCHEMES), help="the first is the baseline")
    defaults = TowerPretrainConfig()
    parser.add_argument("--tower-steps", type=int, default=defaults.steps, help="video-tower pretraining steps")
    parser.add_argument("--tower-batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("overrides", nargs="*", help="run-config overrides, e.g. optim.epochs=2")


def run(args: argparse.Namespace) -> int:
    """Data, the pretrained tower, then each scheme trained and evaluated; prints the table, writes summary.json."""
    from image_llavolta.train_config import load_config
    from video_llavolta.train import train

    from .tower_pretrain import TowerPretrainConfig

    started = time.perf_counter()
    data = prepare_data(args.data, args.num_train, args.num_test, args.seed, args.workers)
    data_overrides = [
        f"data.train=[{data['train']}]",
        f"data.video_root={data['videos']}",
        f"data.frames_root={data['frames']}",
    ]
    encoder_dir = os.path.join(args.out, "encoder")
    settings = TowerPretrainConfig(steps=args.tower_steps, batch_size=args.tower_batch_size, seed=args.seed)
    encoder = prepare_encoder(
        load_config(args.config, [f"output_dir={encoder_dir}", *data_overrides, *args.overrides]),
        data,
        encoder_dir,
        settings,
    )
    rows = []
    for scheme in args.schemes:
        run_dir = os.path.join(args.out, scheme)
        config = load_config(
            args.config,
            [
                f"output_dir={run_dir}",
                f"scheme={scheme}",
                *data_overrides,
                *args.overrides,
                f"model.path={encoder_dir}",
                "model.tiny=null",
                "model.train_vision_towers=false",
            ],
        )
        report = train(config)
        results = evaluate(run_dir, data, args.judge, config.optim.per_device_batch_size)
        rows.append(
            {
                "scheme": scheme,
                "accuracy": results["overall"]["accuracy"],
                "score": results["overall"]["score"],
                "accuracy_by_type": {t: r["accuracy"] for t, r in results.get("by_type", {}).items()},
                "train_seconds": report["train_seconds"],
                "visual_tokens_over_layers": report["visual_tokens_over_layers"],
                "average_compression_ratio": report["average_compression_ratio"],
                "judge": results.get("judge"),
            }
        )
    summary = {
        "rows": rows,
        "tower_pretrain_seconds": encoder["seconds"],
        "total_seconds": round(time.perf_counter() - started, 1),
        "judge": args.judge,
    }
    write_json(os.path.join(args.out, "summary.json"), summary)
    print()
    print_summary(rows)
    print(
        f"video-tower pretraining (shared by all) {encoder['seconds']:.0f} s; "
        f"total {summary['total_seconds']:.0f} s; details in {args.out}/summary.json"
    )
    return 0


main = command_main(add_arguments, run, "python -m llavolta.quickstart", __doc__)

if __name__ == "__main__":
    raise SystemExit(main())
