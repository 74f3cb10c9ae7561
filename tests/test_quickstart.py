"""The quickstart end to end at toy size: data, tower pretraining, both schemes from one checkpoint, the table."""

from __future__ import annotations

import json

import pytest
import torch

from llavolta.quickstart import main, print_summary
from video_llavolta.checkpoint import load_pretrained

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = "model.tiny={layers: 2, hidden: 32, image_size: 32, patch_size: 8, num_frames: 8}"
# Visual tokens over the 2 layers per training video (8 frames of 16 patches + CLS = 136 tokens) in each stage of
# four_wider_then_deeper at this depth (K=2 and K=16 of 32 layers are K=1 of 2): K·L + (N−K)·L_out.
PER_VIDEO = {"K=1,S=8": 136 + 8 * 3, "K=1,S=2": 136 + 8 * 9, "none": 2 * 136}


def run(tmp_path, capsys) -> tuple[dict, str]:
    assert (
        main(
            [
                "--out",
                str(tmp_path / "runs"),
                "--data",
                str(tmp_path / "data"),
                "--num-train",
                "4",
                "--num-test",
                "2",
                "--workers",
                "1",
                "--tower-steps",
                "3",
                "--tower-batch-size",
                "2",
                TINY,
                "optim.max_steps=2",
                "optim.per_device_batch_size=4",
            ]
        )
        == 0
    )
    return json.loads((tmp_path / "runs" / "summary.json").read_text()), capsys.readouterr().out


def test_quickstart_trains_both_schemes_from_the_pretrained_tower(tmp_path, capsys):
    summary, out = run(tmp_path, capsys)
    assert [r["scheme"] for r in summary["rows"]] == ["single", "four_wider_then_deeper"]
    assert summary["rows"][0]["average_compression_ratio"] == 1.0
    assert summary["rows"][1]["average_compression_ratio"] > 1.0
    for row in summary["rows"]:
        assert 0.0 <= row["accuracy"] <= 1.0 and set(row["accuracy_by_type"]) <= {
            "count",
            "colour",
            "shape",
            "direction",
        }
    assert "four_wider_then_deeper" in out and "video-tower pretraining" in out

    # #Tokens from the run reports, against the count per stage by hand.
    single, staged = summary["rows"]
    stages = json.loads((tmp_path / "runs" / "four_wider_then_deeper" / "train_report.json").read_text())["stages"]
    assert single["visual_tokens_over_layers"] == 8 * PER_VIDEO["none"]  # 2 steps of 4 videos
    assert (
        staged["visual_tokens_over_layers"]
        == sum(s["samples"] * PER_VIDEO[s["stage"]] for s in stages)
        < single["visual_tokens_over_layers"]
    )
    fewer = 1 - staged["visual_tokens_over_layers"] / single["visual_tokens_over_layers"]
    assert f"four_wider_then_deeper: {fewer:.0%} fewer #Tokens, " in out
    header = next(line for line in out.splitlines() if line.startswith("scheme ") and "accuracy" in line)
    assert header.split()[:6] == ["scheme", "accuracy", "score", "#Tokens", "avg", "CR"]
    assert f" {single['visual_tokens_over_layers']:,} " in out

    encoder = load_pretrained(tmp_path / "runs" / "encoder").state_dict()
    for scheme in ("single", "four_wider_then_deeper"):
        trained = load_pretrained(tmp_path / "runs" / scheme).state_dict()
        towers = [k for k in encoder if "_tower." in k]
        assert towers and all(torch.equal(encoder[k], trained[k]) for k in towers)  # frozen in both runs
        assert any(not torch.equal(encoder[k], trained[k]) for k in encoder if "language_model" in k)

    # A rerun reuses the pretrained tower instead of training it again.
    stamp = (tmp_path / "runs" / "encoder" / "model.safetensors").stat().st_mtime_ns
    _, out = run(tmp_path, capsys)
    assert "tower pretraining: reusing" in out
    assert (tmp_path / "runs" / "encoder" / "model.safetensors").stat().st_mtime_ns == stamp


def test_a_slower_run_reads_as_slower(capsys):
    # The busy-machine case: the four-stage run took 872 s against the baseline's 531 s, with 31.4% fewer tokens.
    rows = [
        {
            "scheme": "single",
            "accuracy": 0.719,
            "score": 3.59,
            "accuracy_by_type": {"colour": 0.703},
            "train_seconds": 531.0,
            "visual_tokens_over_layers": 10_000_000,
            "average_compression_ratio": 1.0,
        },
        {
            "scheme": "four_wider_then_deeper",
            "accuracy": 0.730,
            "score": 3.65,
            "accuracy_by_type": {},
            "train_seconds": 872.0,
            "visual_tokens_over_layers": 6_860_000,
            "average_compression_ratio": 1.46,
        },
    ]
    print_summary(rows)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["scheme", "accuracy", "score", "#Tokens", "avg", "CR", "train", "s", "colour"]
    assert lines[2].split() == ["single", "71.9%", "3.59", "10,000,000", "1.00", "531", "70.3%"]
    assert lines[3].split() == ["four_wider_then_deeper", "73.0%", "3.65", "6,860,000", "1.46", "872", "-"]
    assert lines[-1] == (
        "four_wider_then_deeper: 31% fewer #Tokens, 64% more training wall time than single, accuracy +1.1 points"
    )
    rows[1]["train_seconds"] = 425.0
    print_summary(rows)
    assert "20% less training wall time than single" in capsys.readouterr().out
