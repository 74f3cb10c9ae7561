"""Two ranks on CPU (gloo) launched through torchrun: mixed-modality ZeRO-2 video training, a killed rank and an
exact resume, ZeRO-3 image training with a rank whose micro-batch fails to load, and sharded QA inference.

Each rank writes its own step log (`step_log=true`); the assertions read those, never one process's view.
`pytest -m distributed` runs these alone.
"""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from helpers import REPO, free_port, read_jsonl
from PIL import Image

from data_prep.synthetic import make_synthetic
from video_llavolta.qa_inference import merge_predictions, shard_path

pytestmark = pytest.mark.distributed
pytest.importorskip("deepspeed")

WORKER = os.path.join(REPO, "tests", "dist_worker.py")
TIMEOUT = 20  # collective_timeout of these runs, seconds
# Three stages over 6 optimizer steps: steps 0-1, 2-3, 4-5
SCHEME = [
    {"layer": 1, "stride": 4, "fraction": 1 / 3},
    {"layer": 1, "stride": 2, "fraction": 1 / 3},
    {"none": True, "fraction": 1 / 3},
]
STAGE_OF_STEP = {0: "K=1,S=4", 1: "K=1,S=4", 2: "K=1,S=2", 3: "K=1,S=2", 4: "none", 5: "none"}


def env(**extra):
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **extra}


def torchrun(*args, nodes=None, **extra_env):
    """Start `dist_worker.py args` on two ranks: one node of two (default), or node `nodes[0]` of two one-rank nodes."""
    if nodes is None:
        layout = ["--nproc-per-node", "2", "--master-port", str(free_port())]
    else:
        node_rank, port = nodes
        layout = ["--nnodes", "2", "--node-rank", str(node_rank), "--nproc-per-node", "1", "--master-port", str(port)]
    cmd = [sys.executable, "-m", "torch.distributed.run", *layout, "--master-addr", "127.0.0.1", WORKER, *args]
    return subprocess.Popen(
        cmd, cwd=REPO, env=env(**extra_env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(proc, timeout=300):
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def steps(out, rank):
    """A rank's micro-batch records and its closing parameter digest."""
    lines = read_jsonl(out / "steps" / f"rank{rank}.jsonl")
    return [r for r in lines if "step" in r], [r for r in lines if "end" in r]


# ---------------------------------------------------------------------------------------------------
# Video, ZeRO-2: videos, images and text-only samples of different lengths, three stages, grad-accum 2


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """8 video, 8 image and 8 text-only records of varying lengths: 12 global batches of 2, 6 optimizer steps."""
    root = tmp_path_factory.mktemp("mixed")
    make_synthetic(root, num_train=6, num_test=0, seed=3, progress=False)
    videos = json.loads((root / "train.json").read_text())[:8]
    assert len(videos) == 8
    (root / "images").mkdir()
    words = ["red", "blue", "green", "circle", "square", "shape", "colour", "the"]
    images, texts = [], []
    for i in range(8):
        Image.new("RGB", (28 + 4 * i, 28), (30 * i, 200 - 20 * i, 90)).save(root / "images" / f"{i}.png")
        question = " ".join(words[: 2 + i % 5])
        images.append(
            {"id": f"img-{i}", "image": f"{i}.png", "conversations": turns(f"<image>\n{question} ?", "red .")}
        )
        texts.append({"id": f"txt-{i}", "conversations": turns(" ".join(words[: 1 + i]) + " ?", "yes " * (1 + i % 3))})
    (root / "mixed.json").write_text(json.dumps(videos + images + texts))
    (root / "run.yaml").write_text("model: {family: video_llava}\n")
    return root


def turns(*values):
    return [{"from": ("human", "gpt")[i % 2], "value": v} for i, v in enumerate(values)]


def video_args(root, out, *overrides):
    return [
        "train",
        "video",
        str(root / "run.yaml"),
        f"output_dir={out}",
        "model.tiny={layers: 2, hidden: 32, image_size: 28, patch_size: 7}",
        f"data.train=[{root / 'mixed.json'}]",
        f"data.video_root={root / 'videos'}",
        f"data.image_root={root / 'images'}",
        "data.max_length=512",
        "optim.per_device_batch_size=1",
        "optim.grad_accum=2",
        "optim.lr=1e-3",
        "optim.warmup_ratio=0",
        f"scheme={json.dumps(SCHEME)}",
        f"deepspeed={REPO}/configs/deepspeed/zero2.json",
        "save_steps=3",
        "step_log=true",
        f"collective_timeout={TIMEOUT}",
        "logging_steps=100",
        *overrides,
    ]


@pytest.fixture(scope="module")
def straight(mixed, tmp_path_factory):
    """The uninterrupted two-rank run."""
    out = tmp_path_factory.mktemp("straight") / "run"
    rc, log = finish(torchrun(*video_args(mixed, out)))
    assert rc == 0, log[-5000:]
    return out


def test_ranks_agree_on_modality_and_stage_and_end_with_the_same_parameters(straight):
    (r0, end0), (r1, end1) = steps(straight, 0), steps(straight, 1)
    assert len(r0) == len(r1) == 12  # 24 samples, 2 per global batch, 6 optimizer steps x 2 micro-batches
    # the sampler's promise: one modality per global batch, so both ranks hold the same one at every micro-step
    assert [r["modality"] for r in r0] == [r["modality"] for r in r1]
    assert {r["modality"] for r in r0} == {"video", "image", "text"}
    # the ranks' micro-batches differ in compressed length at some step: what ZeRO must tolerate
    assert any(a["compressed"] != b["compressed"] for a, b in zip(r0, r1))
    for records in (r0, r1):
        assert [r["step"] for r in records] == [s for s in range(6) for _ in range(2)]  # grad-accum 2
        assert all(r["stage"] == STAGE_OF_STEP[r["step"]] for r in records)
        assert all(math.isfinite(r["loss"]) for r in records)
    # ZeRO-2 replicates the parameters: the two ranks' copies are bit for bit the same after the last step
    assert end0[0]["end"] == end1[0]["end"] == 6
    assert end0[0]["parameters_sha256"] == end1[0]["parameters_sha256"]


def test_the_report_sums_both_ranks_and_each_checkpoint_is_written_once(straight):
    report = json.loads((straight / "train_report.json").read_text())
    assert report["samples"] == sum(s["samples"] for s in report["stages"]) == 24  # 12 per rank
    assert [s["optimizer_steps"] for s in report["stages"]] == [2, 2, 2]
    logged = [r for rank in (0, 1) for r in steps(straight, rank)[0]]
    video_in = sum(r["samples"] * 8 * 17 for r in logged if r["modality"] == "video")  # 8 frames x 17 tokens
    image_in = sum(r["samples"] * 16 for r in logged if r["modality"] == "image")  # 16 patches, CLS dropped
    assert sum(s["visual_tokens_in"] for s in report["stages"]) == video_in + image_in
    # a checkpoint per save point (steps 3 and 6), each one model written by rank 0, with both ranks' states
    assert sorted(p for p in os.listdir(straight) if p.startswith("checkpoint-")) == ["checkpoint-3", "checkpoint-6"]
    for name in ("checkpoint-3", "checkpoint-6"):
        files = os.listdir(straight / name)
        assert [f for f in files if f.endswith(".safetensors")] == ["model.safetensors"]
        assert {"rng_state_0.pth", "rng_state_1.pth"} <= set(files)


# ---------------------------------------------------------------------------------------------------
# A rank SIGKILLed after the stage-2 checkpoint: the survivor fails within the collective timeout; resume


def test_a_killed_rank_fails_the_other_and_resume_auto_ends_where_the_straight_run_does(mixed, straight, tmp_path):
    out = tmp_path / "run"
    port = free_port()  # two one-rank nodes: node 0's launcher knows nothing of node 1's death, as on a cluster
    nodes = [torchrun(*video_args(mixed, out), nodes=(n, port), KILL_RANK="1", KILL_AT="4") for n in (0, 1)]
    # bounded: the survivor's next collective fails (peer gone) or times out after TIMEOUT seconds
    (rc0, log0), (rc1, log1) = (finish(p, timeout=TIMEOUT + 240) for p in nodes)
    assert rc1 != 0 and "SIGKILL" in log1, log1[-3000:]
    assert rc0 != 0, log0[-3000:]
    assert any(word in log0 for word in ("Connection closed", "Connection reset", "Timed out", "timed out")), log0[
        -3000:
    ]
    assert sorted(p for p in os.listdir(out) if p.startswith("checkpoint-")) == ["checkpoint-3"]
    os.rename(out / "steps", out / "steps-killed")

    rc, log = finish(torchrun(*video_args(mixed, out), "--resume", "auto"))
    assert rc == 0, log[-5000:]
    report = json.loads((out / "train_report.json").read_text())
    assert report["resumed_from"].endswith("checkpoint-3")
    for rank in (0, 1):
        records, end = steps(out, rank)
        assert [(r["step"], r["stage"]) for r in records] == [(s, STAGE_OF_STEP[s]) for s in (3, 3, 4, 4, 5, 5)]
        assert end[0]["parameters_sha256"] == steps(straight, rank)[1][0]["parameters_sha256"]
    # Bitwise: the same data order, RNG states and fp32 optimizer state, the same CPU kernels on the same inputs
    a = load(straight)
    b = load(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_stuck_rank_fails_the_others_after_the_collective_timeout():
    # A stuck peer keeps its connections open, so only the timeout ends the wait: the configured one, not gloo's 30 min
    rc, log = finish(torchrun("hang", "3"))
    assert rc != 0
    assert "Timed out waiting 3000ms" in log, log[-3000:]
    assert "rank 0 left the all-reduce after" in log


def load(out):
    from safetensors.torch import load_file

    return load_file(str(out / "model.safetensors"))


# ---------------------------------------------------------------------------------------------------
# Image side, ZeRO-3: images and text-only; one rank's micro-batch fails to load entirely


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """5 images, one missing image file, 4 text-only records: 5 global batches of 2."""
    root = tmp_path_factory.mktemp("z3")
    (root / "images").mkdir()
    records = []
    for i in range(5):
        Image.new("RGB", (28, 28 + 3 * i), (40 * i, 90, 200 - 30 * i)).save(root / "images" / f"{i}.png")
        records.append(
            {"id": f"img-{i}", "image": f"{i}.png", "conversations": turns("<image>\nwhat colour ?", "red .")}
        )
    records.append({"id": "img-missing", "image": "missing.png", "conversations": turns("<image>\nwhat ?", "blue .")})
    records += [{"id": f"txt-{i}", "conversations": turns("is red a colour " * (1 + i), "yes .")} for i in range(4)]
    (root / "train.json").write_text(json.dumps(records))
    (root / "run.yaml").write_text("model: {family: llava}\n")
    return root


def test_zero3_image_epoch_runs_a_stand_in_on_the_rank_whose_batch_failed(images, tmp_path):
    out = tmp_path / "z3"
    args = [
        "train",
        "image",
        str(images / "run.yaml"),
        f"output_dir={out}",
        "model.tiny={layers: 2, hidden: 32, image_size: 28, patch_size: 7}",
        f"data.train=[{images / 'train.json'}]",
        f"data.image_root={images / 'images'}",
        "data.max_length=256",
        "data.max_failure_share=0.5",
        "optim.per_device_batch_size=1",
        f"scheme={json.dumps([{'layer': 1, 'stride': 2, 'fraction': 0.5}, {'none': True, 'fraction': 0.5}])}",
        f"deepspeed={REPO}/configs/deepspeed/zero3.json",
        "step_log=true",
        f"collective_timeout={TIMEOUT}",
    ]
    rc, log = finish(torchrun(*args))
    assert rc == 0, log[-5000:]
    (r0, _), (r1, _) = steps(out, 0), steps(out, 1)
    assert len(r0) == len(r1) == 5  # the whole epoch on both ranks
    assert [r["modality"] for r in r0] == [r["modality"] for r in r1]
    stand_ins = [(rank, i, r) for rank, rs in enumerate((r0, r1)) for i, r in enumerate(rs) if r["stand_in"]]
    assert len(stand_ins) == 1  # the missing image shares its global batch with a good one: one rank stands in
    rank, i, record = stand_ins[0]
    assert record["modality"] == "image" and record["loss"] == 0.0  # ran the vision tower, contributed nothing
    assert not (r0, r1)[1 - rank][i]["stand_in"] and (r0, r1)[1 - rank][i]["loss"] > 0
    report = json.loads((out / "train_report.json").read_text())
    assert report["samples"] == 9 and report["failed_samples"] == 1  # the stand-in is not counted as a sample
    assert [f["id"] for f in read_jsonl(out / "failures.jsonl")] == ["img-missing"]


# ---------------------------------------------------------------------------------------------------
# Inference: two ranks, one killed mid-run, rerun, merge


def tolerant_jsonl(path):
    """The complete lines of a JSONL file a killed process may have cut off."""
    if not os.path.exists(path):
        return []
    out = []
    for line in open(path).read().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def test_qa_on_two_ranks_survives_a_killed_rank_and_merges_every_question_once(tmp_path):
    from test_towers import tiny
    from tiny_tokenizer import word_tokenizer

    data = tmp_path / "data"
    make_synthetic(data, num_train=0, num_test=4, progress=False)
    qa = str(data / "test_qa.jsonl")
    questions = [r["question_id"] for r in read_jsonl(qa)]
    model_dir = tmp_path / "model"
    tiny(temporal=False, seed=2).save_pretrained(model_dir)
    word_tokenizer(96).save_pretrained(model_dir)
    out = str(tmp_path / "preds.jsonl")
    args = ["qa", "--model", str(model_dir), "--qa", qa, "--video-root", str(data / "videos"), "--out", out]
    args += ["--compression", "none", "--batch-size", "2", "--max-new-tokens", "3"]
    shards = [shard_path(out, r, 2) for r in range(2)]

    rc, log = finish(torchrun(*args, KILL_RANK="1", KILL_AT="1", QA_LOG=str(tmp_path / "first")))
    assert rc != 0, log[-3000:]
    written = [{str(p["question_id"]) for p in tolerant_jsonl(s)} for s in shards]
    assert len(written[1]) == 2  # rank 1 died after its first batch of two was written
    rc, log = finish(torchrun(*args, QA_LOG=str(tmp_path / "second")))
    assert rc == 0, log[-3000:]
    for rank in (0, 1):
        # a rank that finished its shard before the kill stopped the first run has nothing left to generate
        redo_log = tmp_path / f"second.rank{rank}"
        redone = redo_log.read_text().split() if redo_log.exists() else []
        assert not set(redone) & written[rank]  # nothing written is generated again
        assert sorted(set(redone) | written[rank]) == sorted(map(str, questions[rank::2]))

    summary = merge_predictions(shards, qa, out)
    assert summary["predicted"] == len(questions)
    assert [p["question_id"] for p in read_jsonl(out)] == questions  # each once, in QA order
    os.remove(shards[1])
    with pytest.raises(FileNotFoundError, match="rank1-of-2.jsonl: no such shard file"):
        merge_predictions(shards, qa, tmp_path / "again.jsonl")
