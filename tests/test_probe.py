"""The redundancy probe: share of visual tokens kept, the resumable sweep, the attention profile, plots and the CLI."""

import json
import os
import sys

import pytest
import test_qa_inference as qa_tests
import torch
import transformers.models.llama.modeling_llama as llama
from tiny_models import FRAMES, IMAGE, PATCHES, VIDEO, pixels, sequence, tiny_llava, tiny_video_llava
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from image_llavolta.compression import CompressionSpec, compression_ratio, enable_compression
from image_llavolta.conversation import VICUNA_V1, Template, tokenize_prompt
from image_llavolta.plots import PLOT_HINT, save_plots, sweep_figure
from image_llavolta.probe import (
    attention_profile,
    format_attention,
    format_sweep,
    point_name,
    prompt_regions,
    run_sweep,
    sample_stats,
    share_kept,
    share_kept_from_stats,
    sweep_grid,
    system_prompt_mask,
)
from video_llavolta.judge import normalize_open_answer
from video_llavolta.probe import main as probe_main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NEW_TOKENS = qa_tests.NEW_TOKENS
# The video QA tests' fixtures, reused: synthetic test split, tiny model, word tokenizer, one-by-one reference answers.
data, model, reference, tokenizer = qa_tests.data, qa_tests.model, qa_tests.reference, qa_tests.tokenizer
pytestmark = pytest.mark.usefixtures("one_thread")


def read(path):
    with open(path) as f:
        return json.load(f)


# ---------------------------------------------------------------------------------------------------
# Share of visual tokens kept


@pytest.mark.parametrize("layer, stride, tokens", [(2, 8, 3312), (2, 2, 9792), (16, 8, 10368), (16, 2, 13824)])
def test_share_kept_of_the_papers_image_settings(layer, stride, tokens):
    # N=32 layers, L=576 image tokens: '#Tokens' as in the paper's tables, out of 32·576 = 18432
    spec = CompressionSpec(layer, stride)
    assert sample_stats(32, spec, [576]).tokens_over_layers == tokens
    assert share_kept(32, spec, [576]) == pytest.approx(tokens / 18432, abs=1e-12)
    assert share_kept(32, spec, [576]) == pytest.approx(1 / compression_ratio(32, layer, 576, -(-576 // stride)))


def test_share_kept_pools_each_segment_on_its_own():
    # a video: 8 frames × 257 tokens, S=4 → 65 per frame (not ceil(2056/4) = 514): 2·2056 + 30·520 = 19712
    assert sample_stats(32, CompressionSpec(2, 4), [257] * 8).tokens_over_layers == 19712
    assert share_kept(32, CompressionSpec(2, 4), [257] * 8) == pytest.approx(19712 / 65792, abs=1e-12)
    # two segments of 5, S=2, N=4, K=1: 1·10 + 3·(3+3) = 28 of 40; the last partial window is kept
    assert share_kept(4, CompressionSpec(1, 2), [5, 5]) == pytest.approx(0.7, abs=1e-12)
    assert share_kept(4, None, [5, 5]) == 1.0  # the stock model
    assert share_kept(4, CompressionSpec(4, 2), [5, 5]) == 1.0  # K = N compresses nothing
    assert share_kept(4, CompressionSpec(0, 5), [5, 5]) == pytest.approx(0.2, abs=1e-12)  # K=0: every layer pooled
    with pytest.raises(ValueError, match="outside the model"):
        share_kept(4, CompressionSpec(5, 2), [5])
    with pytest.raises(ValueError, match="positive token counts"):
        share_kept(4, CompressionSpec(1, 2), [])


def test_share_kept_equals_the_models_own_accounting():
    video_model = enable_compression(tiny_video_llava(), None)
    ids = torch.tensor([sequence(4, "video", 3)])
    spec = CompressionSpec(2, 4)
    with torch.no_grad():
        out = video_model(input_ids=ids, pixel_values_videos=pixels(1, frames=FRAMES), compression=spec)
    assert out.compression.tokens_in == FRAMES * (PATCHES + 1)
    assert share_kept_from_stats(out.compression) == pytest.approx(share_kept(4, spec, [PATCHES + 1] * FRAMES))
    # 17 tokens per frame, S=4 → 5: (2·136 + 2·40) / (4·136)
    assert share_kept_from_stats(out.compression) == pytest.approx((2 * 136 + 2 * 40) / (4 * 136))


# ---------------------------------------------------------------------------------------------------
# The sweep driver


def test_sweep_grid_is_stock_then_every_layer_and_stride():
    grid = sweep_grid([1, 3], [2, 4], num_layers=4)
    assert grid == [None, CompressionSpec(1, 2), CompressionSpec(1, 4), CompressionSpec(3, 2), CompressionSpec(3, 4)]
    assert sweep_grid([0], [8], 4, stock=False) == [CompressionSpec(0, 8)]
    with pytest.raises(ValueError, match="outside the model"):
        sweep_grid([5], [2], num_layers=4)
    with pytest.raises(ValueError, match=r"repeat \[2\]"):
        sweep_grid([1], [2, 2], num_layers=4)
    with pytest.raises(ValueError, match="at least one layer"):
        sweep_grid([], [2], num_layers=4)


class Evaluator:
    """evaluate(spec) stand-in: counts calls, accuracy a known function of the spec, chosen points fail."""

    def __init__(self, failing=()):
        self.calls, self.failing = [], set(failing)

    def __call__(self, spec):
        self.calls.append(spec)
        if spec in self.failing:
            raise RuntimeError("out of memory")
        return {"accuracy": 0.9 if spec is None else 0.5 + 0.01 * spec.layer - 0.02 * spec.stride, "score": 3.0}


def test_sweep_records_every_point_and_a_rerun_evaluates_nothing(tmp_path):
    path = tmp_path / "sweep.json"
    grid = sweep_grid([1, 3], [2, 4], num_layers=4)
    evaluate = Evaluator()
    sweep = run_sweep(grid, evaluate, path, 4, [5, 5], settings={"model": "m"})
    assert evaluate.calls == grid and sweep == read(path)
    assert sweep["status"] == "complete" and sweep["counts"] == {"points": 5, "resumed": 0, "evaluated": 5, "failed": 0}
    assert sweep["settings"] == {"model": "m"} and sweep["num_layers"] == 4 and sweep["visual_segments"] == [5, 5]
    points = {p["name"]: p for p in sweep["points"]}
    assert list(points) == ["stock", "K1_S2", "K1_S4", "K3_S2", "K3_S4"]
    assert points["stock"]["stock"] and points["stock"]["share_kept"] == 1.0 and points["stock"]["layer"] is None
    k1s2 = points["K1_S2"]
    # N=4, two segments of 5: S=2 → 3+3 after pooling: 1·10 + 3·6 = 28 of 40
    assert (k1s2["layer"], k1s2["stride"], k1s2["tokens_over_layers"]) == (1, 2, 28)
    assert k1s2["share_kept"] == pytest.approx(0.7) and k1s2["compression_ratio"] == pytest.approx(40 / 28)
    assert k1s2["accuracy"] == pytest.approx(0.47) and k1s2["metrics"] == {
        "accuracy": pytest.approx(0.47),
        "score": 3.0,
    }
    assert k1s2["status"] == "ok" and k1s2["error"] is None
    # K3_S4: 3·10 + 1·(2+2) = 34 of 40
    assert points["K3_S4"]["tokens_over_layers"] == 34

    before = read(path)["points"]
    evaluate = Evaluator()
    again = run_sweep(grid, evaluate, path, 4, [5, 5], settings={"model": "m"})
    assert evaluate.calls == [] and again["counts"]["resumed"] == 5 and again["points"] == before

    # a wider grid later: only the new points run, the old ones stay
    evaluate = Evaluator()
    wider = run_sweep(sweep_grid([1, 3], [2, 4, 5], 4), evaluate, path, 4, [5, 5], settings={"model": "m"})
    assert evaluate.calls == [CompressionSpec(1, 5), CompressionSpec(3, 5)] and len(wider["points"]) == 7


def test_a_failing_point_is_recorded_and_retried_on_the_next_run(tmp_path):
    path = tmp_path / "sweep.json"
    grid = sweep_grid([1], [2, 4], num_layers=4)
    evaluate = Evaluator(failing=[CompressionSpec(1, 2)])
    sweep = run_sweep(grid, evaluate, path, 4, [5, 5])
    assert evaluate.calls == grid  # the failure did not stop the sweep
    failed = {p["name"]: p for p in sweep["points"]}["K1_S2"]
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: out of memory"
    assert failed["accuracy"] is None and failed["share_kept"] == pytest.approx(0.7)
    assert sweep["status"] == "incomplete" and sweep["counts"]["failed"] == 1

    evaluate = Evaluator()
    sweep = run_sweep(grid, evaluate, path, 4, [5, 5])
    assert evaluate.calls == [CompressionSpec(1, 2)]  # only the failed point runs again
    assert sweep["status"] == "complete" and all(p["status"] == "ok" for p in sweep["points"])

    def no_accuracy(spec):
        return {"score": 1.0}

    sweep = run_sweep([CompressionSpec(2, 2)], no_accuracy, tmp_path / "other.json", 4, [5, 5])
    assert sweep["points"][0]["error"] == "ValueError: evaluate() returned no 'accuracy' (keys: ['score'])"


def test_sweep_table_has_a_row_per_point_and_the_errors_below(tmp_path):
    grid = sweep_grid([1], [2, 4], num_layers=4)
    sweep = run_sweep(grid, Evaluator(failing=[CompressionSpec(1, 4)]), tmp_path / "sweep.json", 4, [5, 5])
    lines = format_sweep(sweep).splitlines()
    assert lines[0] == "sweep: 3 points (2 evaluated now, 0 resumed, 1 failed)"
    assert lines[1].split() == ["point", "K", "S", "kept", "CR", "accuracy", "score", "status"]
    # stock: all 40 tokens; K=1,S=2: 28 of 40 (CR 40/28), accuracy 0.5 + 0.01 - 0.04; K=1,S=4: 1·10 + 3·4 = 22
    assert [line.split() for line in lines[3:6]] == [
        ["stock", "-", "-", "100.0%", "1.00", "90.0%", "3.00", "ok"],
        ["K1_S2", "1", "2", "70.0%", "1.43", "47.0%", "3.00", "ok"],
        ["K1_S4", "1", "4", "55.0%", "1.82", "-", "-", "failed"],
    ]
    assert lines[6:] == ["K1_S4 failed: RuntimeError: out of memory"]


def test_attention_table_has_a_row_per_layer():
    def layer(i):
        return {
            "layer": i,
            "visual_mass": 0.1 * i,
            "visual_per_token": 0.1 * i / 50,
            "system_mass": 0.5,
            "system_per_token": None if i else 0.05,
            "rest_mass": 0.5 - 0.1 * i,
            "rest_per_token": 0.1,
        }

    attention = {
        "samples": 3,
        "heads": 4,
        "tokens": {"visual": 50.0, "system": 10.0, "rest": 7.0},
        "layers": [layer(0), layer(1)],
    }
    lines = format_attention(attention).splitlines()
    assert lines[0] == (
        "attention of the answer position (last prompt token), mean over 3 samples and 4 heads; "
        "tokens: visual 50, system 10, rest 7"
    )
    assert lines[1].split() == ["layer", "visual", "system", "rest", "visual/token", "system/token"]
    assert [line.split() for line in lines[3:]] == [
        ["0", "0.000", "0.500", "0.500", "0.00e+00", "5.00e-02"],
        ["1", "0.100", "0.500", "0.400", "2.00e-03", "-"],
    ]


def test_sweep_refuses_a_file_made_with_other_settings(tmp_path):
    path = tmp_path / "sweep.json"
    run_sweep([None], Evaluator(), path, 4, [5, 5], settings={"model": "a", "judge": "offline"})
    with pytest.raises(ValueError, match=r"sweep.json holds a sweep made with other settings .*'model': 'a'"):
        run_sweep([None], Evaluator(), path, 4, [5, 5], settings={"model": "b", "judge": "offline"})
    with pytest.raises(ValueError, match="visual_segments"):
        run_sweep([None], Evaluator(), path, 4, [6, 6], settings={"model": "a", "judge": "offline"})


# ---------------------------------------------------------------------------------------------------
# Prompt regions from the template


def test_system_tokens_come_from_the_template(tokenizer):
    prompt = VICUNA_V1.render(["<video>\nwhat colour is the circle?"])
    ids = tokenize_prompt(tokenizer, prompt, {"<video>": (VIDEO, 5)})
    regions = prompt_regions(tokenizer, VICUNA_V1, prompt, ids, [IMAGE, VIDEO])
    # "A chat between a curious user and an artificial intelligence assistant . The assistant gives helpful ,
    #  detailed , and polite answers to the user ' s questions ." is 29 words and marks; then "USER :"
    assert [i for i, m in enumerate(regions["system"]) if m] == list(range(1, 30))
    assert tokenizer.convert_ids_to_tokens(ids[30:32]) == ["USER", ":"]
    assert [i for i, m in enumerate(regions["bos"]) if m] == [0]
    assert [i for i, m in enumerate(regions["visual"]) if m] == list(range(32, 37))

    short = Template(system="a curious user asks .")  # another template: other length, found all the same
    prompt = short.render(["<video>\nhow many objects ?"])
    ids = tokenize_prompt(tokenizer, prompt, {"<video>": (VIDEO, 3)})
    assert [i for i, m in enumerate(system_prompt_mask(tokenizer, short, prompt, ids)) if m] == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="does not start with the template's system message"):
        system_prompt_mask(tokenizer, VICUNA_V1, prompt, ids)


# ---------------------------------------------------------------------------------------------------
# The attention profile


def image_samples(n=3):
    """Tiny LLaVA samples of different lengths: BOS, 3 'system' tokens, text, an image, text."""
    samples = []
    for k in range(n):
        ids = [1] + sequence(3 + k, "image", 4 + 2 * k, seed=k)
        regions = {
            "visual": [i == IMAGE for i in ids],
            "system": [1 <= p <= 3 for p in range(len(ids))],
            "bos": [p == 0 for p in range(len(ids))],
        }
        samples.append({"input_ids": ids, "pixel_values": pixels(1, seed=k), "regions": regions})
    return samples


@torch.no_grad()
def eager_profile(eager, samples):
    """Expected masses from an eager forward's full attention maps, one unpadded sample at a time."""
    masses = {name: [] for name in ("visual", "system", "bos", "rest")}
    per_token = {name: [] for name in masses}
    for s in samples:
        out = eager(input_ids=torch.tensor([s["input_ids"]]), pixel_values=s["pixel_values"], output_attentions=True)
        rows = torch.stack([a[0, :, -1, :] for a in out.attentions])  # (layers, heads, L): the last prompt token
        named = {k: torch.tensor(v) for k, v in s["regions"].items()}
        named["rest"] = ~(named["visual"] | named["system"] | named["bos"])
        for name, m in named.items():
            mass = (rows * m).sum(-1).mean(-1)  # (layers,)
            masses[name].append(mass)
            per_token[name].append(mass / m.sum())
    return (
        {k: torch.stack(v).mean(0) for k, v in masses.items()},
        {k: torch.stack(v).mean(0) for k, v in per_token.items()},
    )


def peaky(llava):
    """Scale the query and key projections so that the tiny random model's attention is far from uniform."""
    with torch.no_grad():
        for layer in llava.model.language_model.layers:
            layer.self_attn.q_proj.weight.mul_(6)
            layer.self_attn.k_proj.weight.mul_(6)
    return llava


@pytest.mark.parametrize("batch_size", [1, 3])
def test_attention_profile_equals_the_eager_attention_maps(batch_size):
    sdpa, eager = peaky(tiny_llava(attn="sdpa")), tiny_llava(attn="eager")
    eager.load_state_dict(sdpa.state_dict())
    samples = image_samples()
    profile = attention_profile(sdpa, samples, batch_size=batch_size)
    want_mass, want_per_token = eager_profile(eager, samples)
    assert profile["samples"] == 3 and profile["num_layers"] == 4 and profile["heads"] == 4
    assert (profile["tokens"]["visual"], profile["tokens"]["system"], profile["tokens"]["bos"]) == (PATCHES, 3, 1)
    assert len(profile["layers"]) == 4
    for layer, row in enumerate(profile["layers"]):
        assert row["layer"] == layer
        for name in ("visual", "system", "bos", "rest"):
            assert row[f"{name}_mass"] == pytest.approx(float(want_mass[name][layer]), abs=1e-5)
            assert row[f"{name}_per_token"] == pytest.approx(float(want_per_token[name][layer]), abs=1e-5)
        assert sum(row[f"{n}_mass"] for n in ("visual", "system", "bos", "rest")) == pytest.approx(1.0, abs=1e-5)
    assert len(profile["per_sample"]["visual"]) == 3 and len(profile["per_sample"]["visual"][0]) == 4
    # layers differ by far more than the tolerance, so a wrong layer, position or mask would show
    visual = [row["visual_mass"] for row in profile["layers"]]
    assert max(visual) - min(visual) > 1e-2


def test_attention_profile_never_runs_eager_attention(monkeypatch):
    sdpa = tiny_llava(attn="sdpa")
    want = attention_profile(sdpa, image_samples(), batch_size=2)

    def no_eager(*args, **kwargs):
        raise AssertionError("eager attention was called")

    calls = []
    real_sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]

    def counting_sdpa(module, *args, **kwargs):
        if isinstance(module, llama.LlamaAttention):
            calls.append(module.layer_idx)
        return real_sdpa(module, *args, **kwargs)

    monkeypatch.setattr(llama, "eager_attention_forward", no_eager)
    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS, "sdpa", counting_sdpa)
    # the compressed class with a spec in its config: the profile still takes the stock (uncompressed) forward
    compressed = enable_compression(sdpa, CompressionSpec(1, 4))
    got = attention_profile(compressed, image_samples(), batch_size=2)
    assert calls == [0, 1, 2, 3] * 2  # two batches, every decoder layer through SDPA once
    assert compressed.config._attn_implementation == "sdpa"
    assert compressed.config.text_config._attn_implementation == "sdpa"
    for row_got, row_want in zip(got["layers"], want["layers"], strict=True):
        assert row_got == pytest.approx(row_want)
    assert got["tokens"]["visual"] == PATCHES  # uncompressed: every visual token is there


def test_attention_profile_rejects_overlapping_regions():
    sample = image_samples(1)[0]
    sample["regions"]["system"] = [True] * len(sample["input_ids"])  # overlaps BOS and the image
    with pytest.raises(ValueError, match="overlap"):
        attention_profile(tiny_llava(), [sample])


# ---------------------------------------------------------------------------------------------------
# Plots


def a_sweep(tmp_path):
    return run_sweep(
        sweep_grid([1, 3], [2, 4], 4), Evaluator(failing=[CompressionSpec(3, 4)]), tmp_path / "sweep.json", 4, [5, 5]
    )


def test_sweep_figure_draws_one_line_per_layer_and_marks_stock(tmp_path):
    sweep = a_sweep(tmp_path)
    ax = sweep_figure(sweep).axes[0]
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert set(lines) == {"K=1", "K=3"}
    # K=1: S=4 keeps 1·10 + 3·4 = 22/40, S=2 keeps 28/40; accuracies 0.43 and 0.47 (Evaluator)
    assert list(lines["K=1"].get_xdata()) == pytest.approx([55.0, 70.0])
    assert list(lines["K=1"].get_ydata()) == pytest.approx([43.0, 47.0])
    # K=3: only S=2 (3·10 + 1·6 = 36/40, accuracy 0.49); K3_S4 failed and is not drawn
    assert list(lines["K=3"].get_xdata()) == pytest.approx([90.0])
    assert list(lines["K=3"].get_ydata()) == pytest.approx([49.0])
    stock = [c for c in ax.collections if c.get_label() == "stock (no compression)"]
    assert len(stock) == 1 and stock[0].get_offsets().tolist() == [[100.0, 90.0]]
    by_stride = sweep_figure(sweep, lines_per="stride").axes[0]
    assert {line.get_label() for line in by_stride.get_lines() if not line.get_label().startswith("_")} == {
        "S=2",
        "S=4",
    }


def test_save_plots_writes_pngs(tmp_path):
    profile = attention_profile(tiny_llava(), image_samples(2))
    written = save_plots(tmp_path / "plots", a_sweep(tmp_path), profile)
    assert written == {
        "sweep": str(tmp_path / "plots" / "sweep.png"),
        "attention": str(tmp_path / "plots" / "attention.png"),
    }
    for path in written.values():
        with open(path, "rb") as f:
            assert f.read(8) == PNG_SIGNATURE


def test_without_matplotlib_the_plots_are_a_one_line_hint(tmp_path, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    written = save_plots(tmp_path / "plots", a_sweep(tmp_path), {"layers": []})
    assert written == {"sweep": None, "attention": None}
    assert capsys.readouterr().out == PLOT_HINT + "\n"
    assert "pip install -e .[plot]" in PLOT_HINT
    assert not (tmp_path / "plots").exists()


# ---------------------------------------------------------------------------------------------------
# The command line, end to end on a tiny checkpoint


@pytest.fixture
def checkpoint(tmp_path, model, tokenizer):
    path = tmp_path / "ckpt"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_probe_cli_end_to_end_and_resumed(tmp_path, checkpoint, data, reference, monkeypatch, capsys):
    # Reference answers = the stock model's own answers for the first two questions, so that accuracies are not all
    # zero: stock must score 2/3, each compressed point what its one-by-one generation scores.
    stock_answers = reference(None)
    records = [
        {**r, "answer": stock_answers[r["question_id"]] if i < 2 else "not an answer"}
        for i, r in enumerate(data["records"][:4])
    ]
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "probe"
    argv = [
        "--model",
        checkpoint,
        "--qa",
        str(qa),
        "--video-root",
        data["videos"],
        "--layers",
        "1,2",
        "--strides",
        "2,4",
        "--out",
        str(out),
        "--limit",
        "3",
        "--attention-samples",
        "2",
        "--max-new-tokens",
        str(NEW_TOKENS),
        "--batch-size",
        "2",
    ]

    grid = sweep_grid([1, 2], [2, 4], 4)
    expected = {point_name(spec): reference(spec) for spec in grid}  # one question at a time, eager, per spec

    def no_eager(*args, **kwargs):
        raise AssertionError("eager attention was called")

    monkeypatch.setattr(llama, "eager_attention_forward", no_eager)  # the checkpoint loads with SDPA
    assert probe_main(argv) == 0
    printed = capsys.readouterr().out

    sweep = read(out / "sweep.json")
    assert sweep["status"] == "complete" and sweep["num_layers"] == 4
    assert sweep["visual_segments"] == [PATCHES + 1] * FRAMES
    assert sweep["settings"]["limit"] == 3 and sweep["settings"]["judge"]["name"] == "offline-normalized"
    names = [p["name"] for p in sweep["points"]]
    assert names == ["stock", "K1_S2", "K1_S4", "K2_S2", "K2_S4"]
    questions = records[:3]
    for p in sweep["points"]:
        spec = None if p["stock"] else CompressionSpec(p["layer"], p["stride"])
        assert p["share_kept"] == pytest.approx(share_kept(4, spec, [17] * 8))
        folder = out / "points" / p["name"]
        assert read(folder / "preds.settings.json")["settings"]["compression"] == (
            None if spec is None else spec.to_dict()
        )
        with open(folder / "preds.jsonl") as f:
            assert [json.loads(line)["question_id"] for line in f] == [q["question_id"] for q in questions]
        answers = expected[p["name"]]
        right = sum(
            normalize_open_answer(answers[q["question_id"]]) == normalize_open_answer(q["answer"]) for q in questions
        )
        assert p["status"] == "ok" and p["accuracy"] == pytest.approx(right / 3), p["name"]
        assert p["metrics"]["questions"] == 3 and p["metrics"]["judged"] == 3
    assert sweep["points"][0]["accuracy"] == pytest.approx(2 / 3)
    # K=1, S=2: 17 tokens per frame → 9: (1·136 + 3·72) / (4·136)
    assert sweep["points"][1]["share_kept"] == pytest.approx((136 + 3 * 72) / 544)

    attention = read(out / "attention.json")
    assert attention["status"] == "complete" and attention["samples"] == 2
    assert attention["question_ids"] == [q["question_id"] for q in questions[:2]]
    assert attention["tokens"]["visual"] == FRAMES * (PATCHES + 1) and attention["tokens"]["system"] == 29
    assert [r["layer"] for r in attention["layers"]] == [0, 1, 2, 3]
    for row in attention["layers"]:
        assert sum(row[f"{n}_mass"] for n in ("visual", "system", "bos", "rest")) == pytest.approx(1.0, abs=1e-5)
    for name in ("sweep.png", "attention.png"):
        with open(out / name, "rb") as f:
            assert f.read(8) == PNG_SIGNATURE
    assert "stock" in printed and "K2_S4" in printed and "visual/token" in printed
    assert "5 points (5 evaluated now, 0 resumed, 0 failed)" in printed

    # A rerun evaluates nothing, reuses the attention profile, and without matplotlib prints the hint once.
    import video_llavolta.probe as probe

    inference_calls, profile_calls = [], []
    monkeypatch.setattr(probe, "run_inference", lambda *a, **k: inference_calls.append(a))
    monkeypatch.setattr(probe, "attention_profile", lambda *a, **k: profile_calls.append(a))
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert probe_main(argv) == 0
    printed = capsys.readouterr().out
    assert inference_calls == [] and profile_calls == []
    assert printed.count(PLOT_HINT) == 1
    assert "5 points (0 evaluated now, 5 resumed, 0 failed)" in printed
    assert read(out / "sweep.json")["points"] == sweep["points"]

    # Other settings into the same folder: refused with exit code 2.
    assert probe_main([*argv[:-4], "--max-new-tokens", "3", "--batch-size", "2"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert sweep["settings"]["template"]["name"] == "vicuna_v1"  # the checkpoint records none
    assert probe_main([*argv, "--template", "llava_v1"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_probe_cli_bad_grid_is_a_clear_error(tmp_path, checkpoint, data, capsys):
    argv = [
        "--model",
        checkpoint,
        "--qa",
        data["qa"],
        "--video-root",
        data["videos"],
        "--layers",
        "1,9",
        "--strides",
        "2",
        "--out",
        str(tmp_path / "probe"),
    ]
    assert probe_main(argv) == 2
    assert "layer=9 is outside the model" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "probe" / "sweep.json")
