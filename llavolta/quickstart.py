"""The quickstart: synthetic data → frames → train the baseline and a staged scheme → evaluate both → one table.

    python -m llavolta.quickstart [--config configs/video/quickstart.yaml] [--out runs/quickstart]

Everything runs on CPU with a tiny Video-LLaVA-style model. Its video tower is first pretrained for two to three minutes
(`tower_pretrain`: a stand-in for LanguageBind's pretraining) and then frozen, as in Video-LLaVA; both schemes start
from that same checkpoint. Answers are judged offline (normalised string match) unless `--judge openai` points at an
OpenAI-compatible endpoint; offline numbers are not comparable with GPT-judged ones.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict
from typing import TYPE_CHECKING

from data_prep.extract import extract_frames
from data_prep.synthetic import make_synthetic
from image_llavolta.jsonio import read_json, write_json

# torch and transformers are imported inside the functions: make-synthetic and extract-frames spawn worker
# processes, and each one re-imports this module first (about 10 s each when nothing is byte-compiled yet).
if TYPE_CHECKING:
    from .tower_pretrain import TowerPretrainConfig

SCHEMES = ("single", "four_wider_then_deeper")


def prepare_data(root: str, num_train: int, num_test: int, seed: int, workers: int) -> dict:
    """The synthetic data set and its pre-extracted frames (both resumable: a rerun reuses finished files)."""
    make_synthetic(os.path.join(root, "synthetic"), num_train=num_train, num_test=num_test, seed=seed,
                   workers=workers)
    extract_frames(os.path.join(root, "synthetic", "videos"), os.path.join(root, "frames"), num_frames=8,
                   fmt="npy", workers=workers)
    return {"train": os.path.join(root, "synthetic", "train.json"),
            "metadata": os.path.join(root, "synthetic", "metadata.jsonl"),
            "test": os.path.join(root, "synthetic", "test_qa.jsonl"),
            "videos": os.path.join(root, "synthetic", "videos"), "frames": os.path.join(root, "frames")}


def prepare_encoder(config, data: dict, out_dir: str, settings: TowerPretrainConfig) -> dict:
    """The schemes' starting checkpoint: the tiny model with its video tower pretrained; reused if already made."""
    from image_llavolta.train import tokenizer_for_run

    from .tower_pretrain import load_patch_targets, pretrain_video_tower
    from video_llavolta.train import model_for_run

    report_path = os.path.join(out_dir, "tower_pretrain.json")
    made_from = {"model": config.model.tiny, "seed": config.seed, "train": os.path.abspath(data["train"]),
                 "settings": asdict(settings)}
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
    run_inference(model, tokenizer, data["test"], predictions, video_root=data["videos"],
                  frames_root=data["frames"], batch_size=batch_size, max_new_tokens=4)
    chosen = OfflineJudge("normalized") if judge == "offline" else OpenAIJudge(
        cache_path=os.path.join(run_dir, "judge_cache.jsonl"))
    return judge_predictions(predictions, chosen, os.path.join(run_dir, "results.json"), benchmark="synthetic")


def print_summary(rows: list[dict]) -> None:
    """One line per scheme: accuracy, score, training wall time, average CR, and the per-type accuracies."""
    types = sorted({t for r in rows for t in r["accuracy_by_type"]})
    heads = ["scheme", "accuracy", "score", "train s", "avg CR", *types]
    def pct(x):  # None: nothing of that kind was judged
        return "-" if x is None else f"{x:.1%}"

    table = [[r["scheme"], pct(r["accuracy"]), "-" if r["score"] is None else f"{r['score']:.2f}",
              f"{r['train_seconds']:.0f}", f"{r['average_compression_ratio']:.2f}",
              *(pct(r["accuracy_by_type"].get(t)) for t in types)] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(heads)]
    for line in [heads, *table]:
        print("  ".join(v.rjust(w) for v, w in zip(line, widths)))
    if len(rows) == 2 and rows[0]["train_seconds"] and None not in (rows[0]["accuracy"], rows[1]["accuracy"]):
        saved = 1 - rows[1]["train_seconds"] / rows[0]["train_seconds"]
        print(f"{rows[1]['scheme']}: {saved:.0%} less training wall time than {rows[0]['scheme']}, "
              f"accuracy {100 * (rows[1]['accuracy'] - rows[0]['accuracy']):+.1f} points")


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    from image_llavolta.train_config import load_config

    from .tower_pretrain import TowerPretrainConfig
    from video_llavolta.train import train

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/video/quickstart.yaml")
    parser.add_argument("--out", default="runs/quickstart")
    parser.add_argument("--data", default="data", help="where the synthetic data set and frames go")
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--num-test", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--judge", choices=["offline", "openai"], default="offline")
    parser.add_argument("--schemes", nargs="+", default=list(SCHEMES))
    defaults = TowerPretrainConfig()
    parser.add_argument("--tower-steps", type=int, default=defaults.steps, help="video-tower pretraining steps")
    parser.add_argument("--tower-batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("overrides", nargs="*", help="run-config overrides, e.g. optim.epochs=2")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    data = prepare_data(args.data, args.num_train, args.num_test, args.seed, args.workers)
    data_overrides = [f"data.train=[{data['train']}]", f"data.video_root={data['videos']}",
                      f"data.frames_root={data['frames']}"]
    encoder_dir = os.path.join(args.out, "encoder")
    settings = TowerPretrainConfig(steps=args.tower_steps, batch_size=args.tower_batch_size, seed=args.seed)
    encoder = prepare_encoder(load_config(args.config, [f"output_dir={encoder_dir}", *data_overrides, *args.overrides]),
                              data, encoder_dir, settings)
    rows = []
    for scheme in args.schemes:
        run_dir = os.path.join(args.out, scheme)
        config = load_config(args.config, [
            f"output_dir={run_dir}", f"scheme={scheme}", *data_overrides, *args.overrides,
            f"model.path={encoder_dir}", "model.tiny=null", "model.train_vision_towers=false",
        ])
        report = train(config)
        results = evaluate(run_dir, data, args.judge, config.optim.per_device_batch_size)
        rows.append({
            "scheme": scheme, "accuracy": results["overall"]["accuracy"], "score": results["overall"]["score"],
            "accuracy_by_type": {t: r["accuracy"] for t, r in results.get("by_type", {}).items()},
            "train_seconds": report["train_seconds"], "average_compression_ratio": report["average_compression_ratio"],
            "judge": results.get("judge"),
        })
    summary = {"rows": rows, "tower_pretrain_seconds": encoder["seconds"],
               "total_seconds": round(time.perf_counter() - started, 1), "judge": args.judge}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print()
    print_summary(rows)
    print(f"video-tower pretraining (shared by both) {encoder['seconds']:.0f} s; total {summary['total_seconds']:.0f} s; "
          f"details in {args.out}/summary.json")


if __name__ == "__main__":
    main()
