"""Staged training end to end on the synthetic data set: stages by optimizer step, resume, failures, DeepSpeed."""

import json
import os
import subprocess
import sys

import pytest
import torch
from helpers import llavolta
from transformers import TrainerCallback

from image_llavolta.train_config import load_config
from video_llavolta.checkpoint import load_pretrained
from video_llavolta.train import train

TOKENS_PER_FRAME = 17  # 28-px frames, 7-px patches: 16 + CLS
SCHEME = [{"layer": 1, "stride": 4, "fraction": 0.5}, {"none": True, "fraction": 0.5}]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "data_prep",
            "make-synthetic",
            "--out",
            str(root),
            "--num-train",
            "12",
            "--num-test",
            "2",
            "--seed",
            "3",
        ],
        check=True,
        capture_output=True,
    )
    records = json.loads((root / "train.json").read_text())  # 1-3 conversations per video: 26 in all
    (root / "train24.json").write_text(json.dumps(records[:24]))
    return root


def run_overrides(root, out, *overrides):
    return [
        f"output_dir={out}",
        "model.tiny={layers: 2, hidden: 32, image_size: 28, patch_size: 7}",
        f"data.train=[{root / 'train24.json'}]",
        f"data.video_root={root / 'videos'}",
        "data.max_length=512",
        "optim.per_device_batch_size=4",
        "optim.lr=1e-3",
        f"scheme={json.dumps(SCHEME)}",
        "logging_steps=100",
        *overrides,
    ]


def run_config(root, out, *overrides):
    return load_config(None, run_overrides(root, out, *overrides))


def test_each_stage_runs_its_spec_and_the_checkpoint_carries_the_last(synthetic, tmp_path, capsys):
    report = train(run_config(synthetic, tmp_path / "run"))
    assert report["total_optimizer_steps"] == 6  # 24 samples / batch 4
    first, last = report["stages"]
    assert (first["optimizer_steps"], last["optimizer_steps"]) == (3, 3)
    assert first["samples"] + last["samples"] == 24
    frames_in = first["samples"] * 8
    # K=1, S=4: each 17-token frame pools to ceil(17 / 4) = 5 tokens; no window spans two frames
    assert (first["visual_tokens_in"], first["visual_tokens_out"]) == (frames_in * 17, frames_in * 5)
    assert first["compression_ratio"] == pytest.approx(2 * 17 / (17 + 5), abs=1e-4)  # Eq. 3, N=2, K=1
    assert last["visual_tokens_out"] == last["visual_tokens_in"] and last["compression_ratio"] == 1.0
    # #Tokens over the N=2 layers: K=1 layer of full frames, then 1 of pooled ones; uncompressed, 2 of full frames
    assert first["visual_tokens_over_layers"] == frames_in * 17 + frames_in * 5
    assert last["visual_tokens_over_layers"] == 2 * last["visual_tokens_in"]
    assert report["visual_tokens_over_layers"] == first["visual_tokens_over_layers"] + last["visual_tokens_over_layers"]
    table = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("stage "))
    assert table[header].split() == [
        "stage",
        "steps",
        "time",
        "s",
        "samples/s",
        "vis",
        "in",
        "vis",
        "out",
        "#Tokens",
        "CR",
        "loss",
    ]
    assert table[header + 2].split()[:2] == ["K=1,S=4", "3"] and table[header + 3].split()[:2] == ["none", "3"]
    assert table[header + 2].split()[6] == str(first["visual_tokens_over_layers"])
    assert report["stage_by_step"] == {
        "0": "K=1,S=4",
        "1": "K=1,S=4",
        "2": "K=1,S=4",
        "3": "none",
        "4": "none",
        "5": "none",
    }
    saved = json.loads((tmp_path / "run" / "train_report.json").read_text())
    assert saved["stages"] == report["stages"]
    model = load_pretrained(tmp_path / "run")
    assert model.compression_spec is None  # the last stage's setting
    assert model.config.llavolta_template == "vicuna_v1"  # the template it trained with, default at inference


def test_boundaries_do_not_move_with_gradient_accumulation(synthetic, tmp_path):
    report = train(run_config(synthetic, tmp_path / "accum", "optim.per_device_batch_size=2", "optim.grad_accum=2"))
    assert report["total_optimizer_steps"] == 6
    assert [s["optimizer_steps"] for s in report["stages"]] == [3, 3]
    assert report["stage_by_step"]["2"] == "K=1,S=4" and report["stage_by_step"]["3"] == "none"


class _Crash(TrainerCallback):
    """Kills the run after `step` optimizer steps, as a preempted job would die."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def test_resume_continues_in_the_right_stage(synthetic, tmp_path):
    straight = train(run_config(synthetic, tmp_path / "straight", "save_steps=2"))
    cfg = run_config(synthetic, tmp_path / "resumed", "save_steps=2")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[_Crash(3)])  # dies after step 3; checkpoint-2 is the last one saved
    assert sorted(os.listdir(tmp_path / "resumed")).count("checkpoint-2") == 1
    resumed = train(cfg, resume="auto")
    assert resumed["resumed_from"].endswith("checkpoint-2")
    assert resumed["stage_by_step"] == {"2": "K=1,S=4", "3": "none", "4": "none", "5": "none"}
    assert resumed["total_optimizer_steps"] == straight["total_optimizer_steps"] == 6
    a = load_pretrained(tmp_path / "straight").state_dict()
    b = load_pretrained(tmp_path / "resumed").state_dict()
    for key in a:  # same data order, RNG and optimizer state: the resumed run ends where the straight one does
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4, msg=key)


def test_failed_samples_are_logged_counted_and_limited(synthetic, tmp_path):
    records = json.loads((synthetic / "train24.json").read_text())
    (tmp_path / "broken.mp4").write_bytes(os.urandom(2048))
    records[5]["video"] = str(tmp_path / "broken.mp4")
    bad = tmp_path / "train_bad.json"
    bad.write_text(json.dumps(records))
    report = train(run_config(synthetic, tmp_path / "fail", f"data.train=[{bad}]", "data.max_failure_share=0.1"))
    assert report["failed_samples"] == 1
    assert sum(s["samples"] for s in report["stages"]) == 23  # dropped, not replaced by another sample
    logged = [json.loads(line) for line in (tmp_path / "fail" / "failures.jsonl").read_text().splitlines()]
    assert [(f["id"], f["path"]) for f in logged] == [(records[5]["id"], str(tmp_path / "broken.mp4"))]
    with pytest.raises(Exception, match="1 of 2[0-9] samples failed to load"):
        train(run_config(synthetic, tmp_path / "fail2", f"data.train=[{bad}]", "data.max_failure_share=0.0"))


def test_video_runs_refuse_zero3(synthetic, tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = run_config(synthetic, tmp_path / "z3", f"deepspeed={root}/configs/deepspeed/zero3.json")
    with pytest.raises(ValueError, match="ZeRO-2, not ZeRO-3.*different encoder sub-modules"):
        train(cfg)
    assert not (tmp_path / "z3").exists()  # refused before anything started


def test_zero2_step_through_the_deepspeed_engine(synthetic, tmp_path):
    pytest.importorskip("deepspeed")
    # A separate process, as a launcher would start it: DeepSpeed and accelerate keep process-wide state.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="29533")
    out = tmp_path / "ds"
    overrides = [
        f"output_dir={out}",
        "model.tiny={layers: 2, hidden: 32, image_size: 28, patch_size: 7}",
        f"data.train=[{synthetic / 'train24.json'}]",
        f"data.video_root={synthetic / 'videos'}",
        "data.max_length=512",
        "optim.per_device_batch_size=4",
        f"scheme={json.dumps(SCHEME)}",
        "optim.max_steps=2",
        f"deepspeed={root}/configs/deepspeed/zero2.json",
    ]
    code = (
        "import sys, video_llavolta.train as t, transformers as tr; "
        "orig = tr.Trainer.create_optimizer\n"
        "def spy(self, *a, **k):\n    o = orig(self, *a, **k); print('ENGINE', self.is_deepspeed_enabled); return o\n"
        "tr.Trainer.create_optimizer = spy; t.main(sys.argv[1:])"
    )
    (tmp_path / "ds.yaml").write_text("{}\n")
    run = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "ds.yaml"), *overrides],
        env=env,
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "ENGINE True" in run.stdout
    report = json.loads((out / "train_report.json").read_text())
    assert report["total_optimizer_steps"] == 2 and report["config"]["deepspeed"].endswith("zero2.json")
    assert all(s["mean_loss"] is not None for s in report["stages"])
    assert load_pretrained(out).compression_spec is None


def test_lora_trains_adapters_and_saves_a_merged_model(synthetic, tmp_path):
    pytest.importorskip("peft")
    report = train(run_config(synthetic, tmp_path / "lora", "lora.r=4", "optim.max_steps=2"))
    assert report["total_optimizer_steps"] == 2
    trained = load_pretrained(tmp_path / "lora").state_dict()  # merged: plain weight names, strict load
    fresh = load_pretrained(tmp_path / "lora")  # same architecture...
    from video_llavolta.models.video_llava import build_model

    initial = build_model(fresh.config, seed=0).state_dict()  # ...and the run's initial weights (seed 0)
    changed = {k for k in trained if not torch.equal(trained[k], initial[k])}
    assert any(".self_attn.q_proj." in k for k in changed)  # W + BA merged in
    assert any("multi_modal_projector" in k for k in changed)  # trained in full
    assert not any("embed_tokens" in k or "_tower" in k or "lm_head" in k for k in changed)  # frozen


def test_llavolta_train_runs_a_video_config_through_the_console_script(synthetic, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model: {family: video_llava}\n")  # a tiny model names its family
    done = llavolta("train", config, *run_overrides(synthetic, tmp_path / "run", "optim.max_steps=2"))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "train_report.json").read_text())
    assert report["total_optimizer_steps"] == 2 and report["config"]["model"]["family"] == "video_llava"
    assert load_pretrained(tmp_path / "run").config.model_type == "video_llava"
    assert "#Tokens" in done.stdout
