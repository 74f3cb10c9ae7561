"""The GPU readiness check (scripts/gpu_check.py) in its CPU mode: every section's rows, CUDA-only ones skipped."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
LAYOUTS = ("llava", "video_llava")
# four_wider_then_deeper's stages (2,8), (2,2), (16,2) on a 4-layer decoder: K' = max(1, round(K * 4 / 32))
SETTINGS = ["stock", "K=1,S=8", "K=1,S=2", "K=2,S=2"]
# visual tokens after pooling: an image of 16 tokens, a video of 8 frames × 17 tokens, windows of S per segment
POOLED = {
    "llava": {"stock": 16, "K=1,S=8": 2, "K=1,S=2": 8, "K=2,S=2": 8},
    "video_llava": {"stock": 136, "K=1,S=8": 8 * 3, "K=1,S=2": 8 * 9, "K=2,S=2": 8 * 9},
}


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_check():
    return load_script()


@pytest.fixture(scope="module")
def result(gpu_check, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "report.json"
    threads = torch.get_num_threads()
    code = gpu_check.main(["--cpu", "--out", str(out)])
    assert torch.get_num_threads() == threads  # the CPU mode's one thread is put back
    return code, json.loads(out.read_text())


def rows(report, section, **match):
    return [r for r in report[section] if all(r.get(k) == v for k, v in match.items())]


def test_cpu_mode_passes_and_says_what_it_ran(result):
    code, report = result
    assert code == 0 and report["passed"] and not report["cuda"]
    assert report["profile"]["dtype"] == "float32" and report["profile"]["layers"] == 4


def test_parity_rows_compare_sdpa_with_eager_for_every_setting_and_padding(result):
    _, report = result
    tolerance = report["profile"]["tolerance"]
    for layout in LAYOUTS:
        for side in ("left", "right"):
            checked = rows(report, "parity", layout=layout, padding=side, attn="sdpa")
            assert [r["setting"] for r in checked] == SETTINGS
            assert all(r["pass"] and r["reference"] == "eager" and r["rel_diff"] <= tolerance for r in checked)
            skipped = rows(report, "parity", layout=layout, padding=side, attn="flash_attention_2")
            assert [r["setting"] for r in skipped] == SETTINGS
            assert all("CUDA" in r["skipped"] and "pass" not in r for r in skipped)


def test_cached_decode_rows_for_each_kernel(result):
    _, report = result
    for layout in LAYOUTS:
        checked = rows(report, "decode", layout=layout, padding="left", setting="K=1,S=8")
        assert {r["attn"]: r.get("pass") for r in checked} == {"eager": True, "sdpa": True, "flash_attention_2": None}
        assert "CUDA" in checked[-1]["skipped"]


def test_speed_rows_pool_and_count_flops_per_setting(result):
    _, report = result
    for layout in LAYOUTS:
        timed = rows(report, "speed", layout=layout, attn="sdpa")
        assert [r["setting"] for r in timed] == SETTINGS
        assert {r["setting"]: r["visual_tokens_out"] for r in timed} == POOLED[layout]
        ideal = [r["flop_ideal_speedup"] for r in timed]
        # stock is the reference; stronger compression (fewer tokens, or pooled earlier) leaves less work
        assert ideal[0] == 1.0 and ideal[1] > ideal[2] > ideal[3] > 1.0
        for r in timed:
            assert r["ttft_ms"] > 0 and r["decode_tokens_per_s"] > 0 and r["peak_memory_mb"] > 0
            assert r["share_of_ideal"] == pytest.approx(r["speedup"] / r["flop_ideal_speedup"])
        assert "CUDA" in rows(report, "speed", layout=layout, attn="flash_attention_2")[0]["skipped"]


def test_training_rows_cover_every_stage_of_the_scheme(result):
    _, report = result
    for layout in LAYOUTS:
        steps = rows(report, "training", layout=layout)
        assert [r["stage"] for r in steps] == [f"stage {i + 1}: {s}" for i, s in enumerate(SETTINGS[1:] + ["none"])]
        assert all(r["step_ms"] > 0 and r["peak_memory_mb"] > 0 for r in steps)
        assert steps[-1]["speedup"] == 1.0  # the uncompressed stage is the reference


def test_the_comparison_fails_outside_tolerance_and_records_errors(gpu_check):
    reference = torch.linspace(-4, 4, 100)
    assert gpu_check.agreement(reference + 1e-6, reference, 1e-4)["pass"]
    off = gpu_check.agreement(reference + 0.01, reference, 1e-4)
    assert not off["pass"] and off["rel_diff"] == pytest.approx(0.01 / 4, rel=1e-3)
    assert not gpu_check.agreement(reference * float("nan"), reference, 1e-4)["pass"]

    def broken():
        raise RuntimeError("no kernel image")

    row = gpu_check.guarded({"attn": "x"}, broken)
    assert row == {"attn": "x", "pass": False, "error": "RuntimeError: no kernel image"}


def test_the_table_names_what_was_skipped(gpu_check, result):
    _, report = result
    text = gpu_check.format_report(report)
    assert "skipped flash_attention_2: " in text and "all parity and decode checks passed" in text
    assert text.count("\nparity ") == 16 and text.count("\ntrain step ") == 8
