"""The quickstart end to end at toy size: data, tower pretraining, both schemes from one checkpoint, the table."""
from __future__ import annotations

import json

import pytest
import torch

from video_llavolta.checkpoint import load_pretrained
from llavolta.quickstart import main

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = "model.tiny={layers: 2, hidden: 32, image_size: 32, patch_size: 8, num_frames: 8}"


def run(tmp_path, capsys) -> tuple[dict, str]:
    main(["--out", str(tmp_path / "runs"), "--data", str(tmp_path / "data"), "--num-train", "4", "--num-test", "2",
          "--workers", "1", "--tower-steps", "3", "--tower-batch-size", "2", TINY, "optim.max_steps=2",
          "optim.per_device_batch_size=4"])
    return json.loads((tmp_path / "runs" / "summary.json").read_text()), capsys.readouterr().out


def test_quickstart_trains_both_schemes_from_the_pretrained_tower(tmp_path, capsys):
    summary, out = run(tmp_path, capsys)
    assert [r["scheme"] for r in summary["rows"]] == ["single", "four_wider_then_deeper"]
    assert summary["rows"][0]["average_compression_ratio"] == 1.0
    assert summary["rows"][1]["average_compression_ratio"] > 1.0
    for row in summary["rows"]:
        assert 0.0 <= row["accuracy"] <= 1.0 and set(row["accuracy_by_type"]) <= {"count", "colour", "shape", "direction"}
    assert "four_wider_then_deeper" in out and "video-tower pretraining" in out

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
