"""The efficiency report: token accounting and CR by hand, FLOPs cross-checked against DeepSpeed, JSON and table."""

import json
import math
import runpy
import sys

import pytest
import torch
from tiny_models import FRAMES, PATCHES, pad_batch, pixels, sequence, tiny_llava, tiny_video_llava
from transformers import LlavaForConditionalGeneration, VideoLlavaForConditionalGeneration

from image_llavolta.compression import CompressionSpec, enable_compression
from image_llavolta.efficiency.flops import paper_7b_flops
from image_llavolta.efficiency.measure import (
    _cpu_peak_bytes,
    decode_tokens_per_second,
    paired_speedup,
    prefill,
    timing_rounds,
)
from image_llavolta.efficiency.report import efficiency_report, main
from image_llavolta.family import LLAVA
from video_llavolta.families import FAMILIES, VIDEO_LLAVA

pytestmark = pytest.mark.usefixtures("one_thread")

# left-padded: images at different offsets, two images in one sample, a text-only sample
LLAVA_SEQS = [sequence(3, "image", 9, seed=1), sequence(11, "image", 2, "image", 4, seed=2), sequence(14, seed=3)]
VIDEO_SEQS = [sequence(4, "video", 6, seed=5), sequence(2, "video", 3, "image", 5, seed=7)]
TINY = ["--tiny", "--layers", "4", "--hidden", "16", "--image-size", "28", "--patch-size", "7"]
QUICK = ["--text-tokens", "6", "--repeats", "0", "--no-profile", "--threads", "1"]


def llava_batch():
    ids, mask, _ = pad_batch(LLAVA_SEQS, "left")
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels(3, seed=11)}


def video_batch():
    ids, mask, _ = pad_batch(VIDEO_SEQS, "left")
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "pixel_values": pixels(1, seed=12),
        "pixel_values_videos": pixels(2, FRAMES, seed=13),
    }


@torch.no_grad()
def test_tokens_and_cr_by_hand():
    model = enable_compression(tiny_llava(), None)  # N = 4 layers, 16 tokens per image, 3 images in the batch
    settings = [None, CompressionSpec(1, 4), CompressionSpec(0, 3), CompressionSpec(4, 2)]
    report = efficiency_report(LLAVA, model, llava_batch(), settings, repeats=0, profile=False)
    rows = report["rows"]
    assert [r["setting"] for r in rows] == ["stock", "K=1,S=4", "K=0,S=3", "K=4,S=2"]
    # stock: 48 tokens in every layer. K=1,S=4: 16 → 4 per image, one layer at 48 then three at 12.
    # K=0,S=3: ceil(16/3) = 6 per image in all four layers. K=4 (= N): nothing is pooled.
    assert [(r["visual_tokens_in"], r["visual_tokens_out"]) for r in rows] == [(48, 48), (48, 12), (48, 18), (48, 48)]
    assert [r["tokens_over_layers"] for r in rows] == [192, 48 + 3 * 12, 4 * 18, 192]
    expected_cr = [1.0, 192 / 84, 192 / 72, 1.0]
    assert [r["compression_ratio"] for r in rows] == pytest.approx(expected_cr, rel=1e-12)
    assert report["inputs"]["visual_tokens_per_sample"] == [16, 32, 0]
    assert not report["paper_table5"]["applicable"]
    for r in rows:
        assert r["ttft_ms"] is None and r["decode_tokens_per_s"] is None
        assert r["peak_memory_mb"] > 0 and math.isfinite(r["peak_memory_mb"])


@torch.no_grad()
def test_paper_table5_tokens_and_cr():
    # the paper's shape (32 layers, 336 px / 14 px patches = 576 tokens), tiny widths
    model = LLAVA.tiny_model(32, 16, 336, 14, seed=0)
    settings = [None, CompressionSpec(2, 8), CompressionSpec(2, 2), CompressionSpec(16, 8), CompressionSpec(16, 2)]
    inputs = LLAVA.synthetic_inputs(model.config, text_tokens=8)
    report = efficiency_report(LLAVA, model, inputs, settings, repeats=0, profile=False)
    rows = report["rows"]
    assert [r["tokens_over_layers"] for r in rows] == [
        32 * 576,
        2 * 576 + 30 * 72,
        2 * 576 + 30 * 288,
        16 * 576 + 16 * 72,
        16 * 576 + 16 * 288,
    ]
    assert [r["tokens_over_layers"] for r in rows] == [18432, 3312, 9792, 10368, 13824]  # the paper's column
    assert [round(100 * r["compression_ratio"]) for r in rows] == [100, 557, 188, 178, 133]
    check = report["paper_table5"]
    assert check["applicable"] and check["all_match"] and len(check["rows"]) == 5


@pytest.mark.parametrize("kind", ["llava", "video", "video-temporal"])
@torch.no_grad()
def test_profiler_flops_match_analytic(kind):
    if kind == "llava":
        family, model, batch = LLAVA, enable_compression(tiny_llava(), None), llava_batch()
        settings = [None, CompressionSpec(1, 4), CompressionSpec(0, 3)]
    elif kind == "video":
        family, model, batch = VIDEO_LLAVA, enable_compression(tiny_video_llava(), None), video_batch()
        settings = [None, CompressionSpec(2, 4)]
    else:  # LanguageBind's temporal branch in the video tower
        family = VIDEO_LLAVA
        model = VIDEO_LLAVA.tiny_model(4, 64, 28, 7, seed=0, temporal_attention=True).eval()
        batch = VIDEO_LLAVA.synthetic_inputs(model.config, batch=2, text_tokens=6)
        settings = [None, CompressionSpec(1, 8)]
    report = efficiency_report(family, model, batch, settings, repeats=0, profile=True)
    for row in report["rows"]:
        # the headline cross-check: DeepSpeed's FLOPs (matrix products plus the elementwise work it sees)
        assert abs(row["flops_rel_diff"]) < 0.05, row
        # matrix products only: the profiler's MACs, part by part, against the analytic count
        for part in ("vision", "projector", "language_model", "total"):
            assert 2 * row["macs_profiler"][part] == pytest.approx(row["flops_analytic"][part], rel=1e-3), part
        assert row["flops_analytic"]["vision"] > 0 and row["flops_analytic"]["projector"] > 0
    stock, compressed = report["rows"][0], report["rows"][-1]
    assert compressed["flops_analytic"]["language_model"] < stock["flops_analytic"]["language_model"]
    assert compressed["flops_analytic"]["vision"] == stock["flops_analytic"]["vision"]


@torch.no_grad()
def test_the_stock_setting_is_the_stock_class_forward(monkeypatch):
    model = enable_compression(tiny_llava(), None)
    batch = llava_batch()
    expected = LlavaForConditionalGeneration.forward(model, **batch, use_cache=True, logits_to_keep=1).logits

    def no_adapter(*args, **kwargs):
        raise AssertionError("the stock setting ran the compressed model's forward")

    monkeypatch.setattr(type(model), "forward", no_adapter)
    assert torch.equal(prefill(model, batch, None).logits, expected)
    video = enable_compression(tiny_video_llava(), None)
    expected = VideoLlavaForConditionalGeneration.forward(video, **video_batch(), use_cache=True, logits_to_keep=1)
    assert torch.equal(prefill(video, video_batch(), None).logits, expected.logits)


def test_timing_rounds_interleave_every_job_once_per_round():
    calls = []

    def job(name):
        def run():
            calls.append(name)
            return {"t": float(len(calls))}  # the call's number: which round a value came from is visible

        return run

    results = timing_rounds({name: job(name) for name in "abc"}, rounds=4, warmup=2, seed=1)
    rounds = [calls[i : i + 3] for i in range(0, len(calls), 3)]
    assert len(rounds) == 6 and all(sorted(r) == ["a", "b", "c"] for r in rounds)
    assert len({tuple(r) for r in rounds}) > 1  # shuffled: not the same order every round
    for name in "abc":  # the values of the last four rounds only
        assert results[name]["t"] == [float(3 * r + rounds[r].index(name) + 1) for r in range(2, 6)]
    assert timing_rounds({"a": job("a")}, rounds=0, warmup=3) == {"a": {}}
    with pytest.raises(ValueError, match="rounds and warmup must be >= 0"):
        timing_rounds({"a": job("a")}, rounds=-1, warmup=0)


def test_paired_speedup_is_the_median_of_the_rounds_ratios():
    # per round 2/1, 6/2, 3/3: median 2 (the ratio of medians, 3/2, would mix rounds run under different load)
    assert paired_speedup([2.0, 6.0, 3.0], [1.0, 2.0, 3.0]) == 2.0
    with pytest.raises(ValueError):
        paired_speedup([1.0, 2.0], [1.0])


def test_cpu_peak_memory_by_hand():
    def work():
        a = torch.ones(1000, 256)  # 1,024,000 bytes each
        b = a + 1
        c = b * 2  # three live: the peak
        del a, b
        return c.sum()

    assert _cpu_peak_bytes(work) == pytest.approx(3 * 1_024_000, abs=4096)  # scalars and the like may add a few bytes


@torch.no_grad()
def test_decode_rate_is_positive_and_needs_two_tokens():
    model = enable_compression(tiny_llava(), None)
    batch = llava_batch()
    assert 0 < decode_tokens_per_second(model, batch, CompressionSpec(1, 4), new_tokens=3) < math.inf
    with pytest.raises(ValueError, match="new_tokens must be >= 2"):
        decode_tokens_per_second(model, batch, None, new_tokens=1)


def test_report_needs_a_compressed_model():
    with pytest.raises(ValueError, match="enable_compression"):
        efficiency_report(LLAVA, tiny_llava(), llava_batch(), [None], repeats=0, profile=False)


def test_cli_writes_json_and_table(tmp_path, capsys):
    out = tmp_path / "report.json"
    assert (
        main(
            [
                *TINY,
                "--specs",
                "none",
                "1,4",
                "2,2",
                "--text-tokens",
                "6",
                "--batch",
                "2",
                "--repeats",
                "2",
                "--warmup",
                "1",
                "--new-tokens",
                "3",
                "--no-profile",
                "--threads",
                "1",
                "--paper-7b",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [r["setting"] for r in rows] == ["stock", "K=1,S=4", "K=2,S=2"]
    # 28 px / 7 px = 16 tokens per image, two samples; K=1,S=4 → 4 each, K=2,S=2 → 8 each; N = 4
    assert [r["tokens_over_layers"] for r in rows] == [4 * 32, 32 + 3 * 8, 2 * 32 + 2 * 16]
    assert report["inputs"] == {
        "batch": 2,
        "sequence_length": 6 + PATCHES,
        "visual_tokens_per_sample": [16, 16],
        "pixel_values": [2, 3, 28, 28],
    }
    assert report["model"]["family"] == "LLaVA-1.5"
    for r in rows:
        for key in ("ttft_ms", "decode_tokens_per_s", "peak_memory_mb"):
            assert r[key] > 0 and math.isfinite(r[key]), key
    printed = capsys.readouterr().out
    table = [line.split()[0] for line in printed.splitlines() if line.startswith(("stock ", "K="))]
    assert table == ["stock", "K=1,S=4", "K=2,S=2"]
    header = next(line for line in printed.splitlines() if line.startswith("setting"))
    assert header.split() == [
        "setting",
        "vis",
        "in",
        "vis",
        "out",
        "#Tokens",
        "CR",
        "MFLOPs",
        "(an.)",
        "TTFT",
        "ms",
        "dec",
        "tok/s",
        "peak",
        "MB",
    ]
    assert "LLaVA-1.5-7B analytic TFLOPs" in printed
    assert set(report["paper_7b"]["conventions"]) >= {"attention=full, LLM only", "attention=none, LLM only"}


def test_cli_video_needs_the_video_family(tmp_path, capsys):
    # python -m image_llavolta.efficiency knows LLaVA only, and says which command measures the rest
    assert main([*TINY, "--video", *QUICK]) == 2
    assert "`llavolta efficiency`" in capsys.readouterr().err
    video = tmp_path / "video"
    enable_compression(tiny_video_llava(), None).save_pretrained(video)
    assert main(["--checkpoint", str(video), *QUICK]) == 2
    err = capsys.readouterr().err
    assert str(video) in err and "'video_llava'" in err and "`llavolta efficiency`" in err
    # with every family: a tiny Video-LLaVA of 2 frames, 17 tokens each (CLS kept); K=1,S=4 → 5 per frame
    out = tmp_path / "video.json"
    assert main([*TINY, "--video", "--frames", "2", "--specs", "none", "1,4", *QUICK, "--out", str(out)], FAMILIES) == 0
    report = json.loads(out.read_text())
    assert report["model"]["family"] == "Video-LLaVA" and report["inputs"]["pixel_values_videos"] == [1, 2, 3, 28, 28]
    assert [r["tokens_over_layers"] for r in report["rows"]] == [4 * 34, 34 + 3 * 10]
    # --frames is not a LLaVA option; --specs speaks the one spec grammar
    assert main([*TINY, "--frames", "2", *QUICK], FAMILIES) == 2
    assert "--frames" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*TINY, "--specs", "none", "2:8", *QUICK])
    assert "--specs" in capsys.readouterr().err


def test_the_python_m_form_runs_the_report(monkeypatch, capsys):
    # `python -m image_llavolta.efficiency`, in this process (a fresh interpreter would spend its time on imports)
    monkeypatch.delitem(sys.modules, "image_llavolta.efficiency.__main__", raising=False)  # as a fresh `-m` run
    monkeypatch.setattr(sys, "argv", ["efficiency", *TINY, "--layers", "2", "--specs", "none", "1,2", *QUICK])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("image_llavolta.efficiency", run_name="__main__")
    assert exit_.value.code == 0
    rows = [line.split()[:4] for line in capsys.readouterr().out.splitlines() if line.startswith(("stock ", "K="))]
    assert rows == [["stock", "16", "16", "32"], ["K=1,S=2", "16", "8", "24"]]  # N=2: 2·16, then 16 + 8


def test_paper_tflops_column_is_the_7b_linear_layers():
    # The paper's TFLOPs (DeepSpeed-profiled) equal the 7B decoder's linear layers on 576 visual + ~62 text tokens,
    # with no attention-score FLOPs: what the profiler reports when attention runs in flash-attn kernels.
    result = paper_7b_flops(62)
    ours, paper = result["conventions"]["attention=none, LLM only"]["tflops"], result["paper_tflops"]
    assert ours.keys() == paper.keys()
    for setting in paper:
        assert ours[setting] == pytest.approx(paper[setting], rel=0.005), setting
    # counting the attention scores in full does not reproduce the column
    full = result["conventions"]["attention=full, LLM only"]
    assert full["fitted_max_rel_error"] > 0.05


def test_cli_checkpoint_none_means_stock_even_with_a_stored_spec(tmp_path):
    # the checkpoint's config carries K=1,S=4; 'none' must still measure the stock model, 'from_config' the stored spec
    enable_compression(tiny_llava(), CompressionSpec(1, 4)).save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "report.json"
    assert (
        main(
            [
                "--checkpoint",
                str(tmp_path / "ckpt"),
                "--specs",
                "none",
                "from_config",
                "--text-tokens",
                "4",
                "--repeats",
                "0",
                "--no-profile",
                "--threads",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    stock, stored = report["rows"]
    assert (stock["setting"], stock["visual_tokens_out"], stock["compression_ratio"]) == ("stock", 16, 1.0)
    assert (stored["setting"], stored["visual_tokens_out"], stored["tokens_over_layers"]) == ("K=1,S=4", 4, 16 + 3 * 4)
    assert report["model"]["class"] == "LlavoltaForConditionalGeneration"
