"""Video QA inference on a tiny model: batched greedy answers, resuming, failures, rank shards and their merge."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from helpers import Killed, read_jsonl, write_jsonl
from test_towers import tiny
from tiny_models import IMAGE, VIDEO
from tiny_tokenizer import word_tokenizer

from data_prep.synthetic import make_synthetic
from image_llavolta.compression import FROM_CONFIG, CompressionSpec, enable_compression
from image_llavolta.conversation import LLAVA_V1, VICUNA_V1, record_template
from video_llavolta.data import frame_dir_name
from video_llavolta.frames import read_frames, write_frame_dir
from video_llavolta.inputs import encode_sample
from video_llavolta.judge import OfflineJudge, judge_predictions
from video_llavolta.qa_inference import main, merge_predictions, run_inference, shard_path

SEED = 2  # a tiny model whose answers differ between videos and with compression
NEW_TOKENS = 4
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The synthetic test split: 4 videos, 3-4 questions each, with types."""
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic(root, num_train=0, num_test=4, progress=False)
    qa = str(root / "test_qa.jsonl")
    return {"qa": qa, "videos": str(root / "videos"), "records": read_jsonl(qa)}


@pytest.fixture(scope="module")
def model():
    return tiny(temporal=False, seed=SEED)


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer(96)


@pytest.fixture(scope="module")
def reference(model, tokenizer, data):
    """Answers generated one question at a time (no batching, no padding), by question id; memoised per spec."""
    memo = {}

    @torch.no_grad()
    def answers(spec=None, sources=None):
        key = (spec, json.dumps(sources, sort_keys=True))
        if key not in memo:
            memo[key] = {}
            for r in data["records"]:
                source = (sources or {}).get(r["question_id"], os.path.join(data["videos"], r["video"]))
                sample = encode_sample(
                    tokenizer, model.config, VICUNA_V1.render(["<video>\n" + r["question"]]), [source]
                )
                ids = torch.tensor([sample["input_ids"]])
                out = model.generate(
                    input_ids=ids,
                    pixel_values_videos=sample["pixel_values_videos"],
                    max_new_tokens=NEW_TOKENS,
                    do_sample=False,
                    pad_token_id=0,
                    eos_token_id=2,
                    suppress_tokens=[IMAGE, VIDEO],
                    compression=spec,
                )
                memo[key][r["question_id"]] = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
        return memo[key]

    return answers


def settings_of(pred_path):
    with open(os.path.splitext(pred_path)[0] + ".settings.json") as f:
        return json.load(f)


@pytest.mark.parametrize("compression", [None, CompressionSpec(2, 4), FROM_CONFIG])
def test_batched_answers_equal_one_by_one_generation(tmp_path, data, model, tokenizer, reference, compression):
    spec = CompressionSpec(0, 8) if compression is FROM_CONFIG else compression
    runner = model
    if compression is FROM_CONFIG:  # the same weights with the spec stored in the config
        runner = enable_compression(tiny(temporal=False, seed=SEED), spec)
    out = str(tmp_path / "preds.jsonl")
    summary = run_inference(
        runner,
        tokenizer,
        data["qa"],
        out,
        data["videos"],
        batch_size=5,
        max_new_tokens=NEW_TOKENS,
        compression=compression,
    )
    n = len(data["records"])
    assert {k: summary[k] for k in ("questions", "predicted", "new", "failed")} == {
        "questions": n,
        "predicted": n,
        "new": n,
        "failed": 0,
    }

    preds = read_jsonl(out)
    expected = reference(spec)
    assert [p["question_id"] for p in preds] == [r["question_id"] for r in data["records"]]
    for p, r in zip(preds, data["records"]):
        assert p == {
            "question_id": r["question_id"],
            "question": r["question"],
            "answer": r["answer"],
            "pred": expected[r["question_id"]],
            "type": r["type"],
            "video": r["video"],
        }
    assert len(set(expected.values())) > 1  # the answers depend on the video, so a misalignment would show
    if spec is not None:
        assert expected != reference(None)  # test-time compression reaches the model

    sidecar = settings_of(out)
    assert sidecar["status"] == "complete" and sidecar["counts"]["predicted"] == n
    settings = sidecar["settings"]
    assert settings["compression"] == (None if spec is None else spec.to_dict())
    assert settings["compression_from"] == ("from_config" if compression is FROM_CONFIG else "argument")
    assert settings["num_frames"] == 8 and settings["prompt"] == "<video>\n{question}"
    assert settings["short_clip"] == "linspace" and settings["template"]["name"] == "vicuna_v1"
    assert settings["generation"]["do_sample"] is False and settings["generation"]["max_new_tokens"] == NEW_TOKENS


def test_killed_run_resumes_without_redoing_or_losing_answers(tmp_path, data, model, tokenizer, reference, monkeypatch):
    out = str(tmp_path / "preds.jsonl")
    generate, batches, kill = model.generate, [], [True]

    def dies_on_third_batch(*args, **kwargs):
        batches.append(kwargs["input_ids"].shape[0])
        if kill[0] and len(batches) == 3:
            raise Killed  # killed while the third batch is in flight
        return generate(*args, **kwargs)

    monkeypatch.setattr(model, "generate", dies_on_third_batch)
    with pytest.raises(Killed):
        run_inference(
            model, tokenizer, data["qa"], out, data["videos"], batch_size=3, max_new_tokens=NEW_TOKENS, compression=None
        )
    assert len(read_jsonl(out)) == 6  # two whole batches survived
    kill[0] = False
    with open(out, "a") as f:
        f.write('{"question_id": "test_00002_co')  # a line cut off by the kill

    batches.clear()
    summary = run_inference(
        model, tokenizer, data["qa"], out, data["videos"], batch_size=3, max_new_tokens=NEW_TOKENS, compression=None
    )
    rest = len(data["records"]) - 6
    assert sum(batches) == rest and (summary["resumed"], summary["new"]) == (6, rest)
    preds = read_jsonl(out)
    assert sorted(p["question_id"] for p in preds) == sorted(r["question_id"] for r in data["records"])
    assert {p["question_id"]: p["pred"] for p in preds} == reference(None)

    batches.clear()
    summary = run_inference(
        model, tokenizer, data["qa"], out, data["videos"], batch_size=3, max_new_tokens=NEW_TOKENS, compression=None
    )
    assert batches == [] and summary["new"] == 0 and len(read_jsonl(out)) == len(data["records"])


def test_rerun_with_other_settings_is_refused(tmp_path, data, model, tokenizer):
    qa = tmp_path / "qa.jsonl"
    write_jsonl(qa, data["records"][:2])
    out = str(tmp_path / "preds.jsonl")
    run_inference(model, tokenizer, qa, out, data["videos"], max_new_tokens=2, compression=None)
    with pytest.raises(ValueError, match="other settings.*compression"):
        run_inference(model, tokenizer, qa, out, data["videos"], max_new_tokens=2, compression=CompressionSpec(2, 4))
    with pytest.raises(ValueError, match="other settings.*generation"):
        run_inference(model, tokenizer, qa, out, data["videos"], max_new_tokens=3, compression=None)


@torch.no_grad()
def test_the_checkpoints_template_is_the_default_and_template_overrides_it(tmp_path, data, tokenizer):
    recorded = tiny(temporal=False, seed=SEED)
    record_template(recorded.config, "llava_v1")  # what a converted Video-LLaVA release records
    records = data["records"][:2]
    qa = tmp_path / "qa.jsonl"
    write_jsonl(qa, records)

    def one_by_one(template):
        answers = {}
        for r in records:
            sample = encode_sample(
                tokenizer,
                recorded.config,
                template.render(["<video>\n" + r["question"]]),
                [os.path.join(data["videos"], r["video"])],
            )
            ids = torch.tensor([sample["input_ids"]])
            out = recorded.generate(
                input_ids=ids,
                pixel_values_videos=sample["pixel_values_videos"],
                max_new_tokens=NEW_TOKENS,
                do_sample=False,
                pad_token_id=0,
                eos_token_id=2,
                suppress_tokens=[IMAGE, VIDEO],
            )
            answers[r["question_id"]] = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
        return answers

    for name, template, given in (("default", LLAVA_V1, None), ("override", VICUNA_V1, "vicuna_v1")):
        out = str(tmp_path / f"{name}.jsonl")
        run_inference(
            recorded, tokenizer, qa, out, data["videos"], max_new_tokens=NEW_TOKENS, compression=None, template=given
        )
        assert {p["question_id"]: p["pred"] for p in read_jsonl(out)} == one_by_one(template)
        assert settings_of(out)["settings"]["template"] == template.to_dict()
    with pytest.raises(ValueError, match="other settings.*template"):
        run_inference(
            recorded,
            tokenizer,
            qa,
            str(tmp_path / "default.jsonl"),
            data["videos"],
            max_new_tokens=NEW_TOKENS,
            compression=None,
            template="vicuna_v1",
        )


@torch.no_grad()
def test_a_benchmark_spec_gives_the_prompt_template_and_token_limit(tmp_path, data, model, tokenizer, reference):
    records = data["records"][:2]
    qa = tmp_path / "qa.jsonl"
    write_jsonl(qa, records)
    spec = tmp_path / "mine_qa.yaml"
    spec.write_text(
        f'kind: video_qa\nname: mine\nprompt: "<video>\\nAnswer in one word. {{question}}"\n'
        f"template: llava_v1\nmax_new_tokens: {NEW_TOKENS}\n"
    )
    expected = {}
    for r in records:
        prompt = LLAVA_V1.render(["<video>\nAnswer in one word. " + r["question"]])
        sample = encode_sample(tokenizer, model.config, prompt, [os.path.join(data["videos"], r["video"])])
        ids = torch.tensor([sample["input_ids"]])
        out = model.generate(
            input_ids=ids,
            pixel_values_videos=sample["pixel_values_videos"],
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=2,
            suppress_tokens=[IMAGE, VIDEO],
        )
        expected[r["question_id"]] = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()

    out = str(tmp_path / "preds.jsonl")
    run_inference(model, tokenizer, qa, out, data["videos"], compression=None, benchmark=str(spec))
    assert {p["question_id"]: p["pred"] for p in read_jsonl(out)} == expected
    assert expected != {k: reference(None)[k] for k in expected}  # the prompt and template reach the model
    sidecar = settings_of(out)
    assert sidecar["settings"]["prompt"] == "<video>\nAnswer in one word. {question}"
    assert sidecar["settings"]["template"] == LLAVA_V1.to_dict() and sidecar["run"]["benchmark"] == "mine"
    assert sidecar["settings"]["generation"]["max_new_tokens"] == NEW_TOKENS
    longer = str(tmp_path / "longer.jsonl")  # an explicit token limit wins over the spec's
    run_inference(
        model,
        tokenizer,
        qa,
        longer,
        data["videos"],
        compression=None,
        benchmark=str(spec),
        max_new_tokens=NEW_TOKENS + 1,
    )
    assert settings_of(longer)["settings"]["generation"]["max_new_tokens"] == NEW_TOKENS + 1


def test_unreadable_videos_are_failures_and_frame_dirs_are_used(tmp_path, data, model, tokenizer, reference):
    videos, frames_root = tmp_path / "videos", tmp_path / "frames"
    first = data["records"][0]
    shutil.copytree(data["videos"], videos)
    (videos / "broken.mp4").write_bytes(b"this is not a video")
    # "sub/clip.mp4" exists only as a frame directory, so an answer proves the frames were read
    clip_dir = frames_root / frame_dir_name("sub/clip.mp4")
    write_frame_dir(clip_dir, read_frames(videos / first["video"], 8))
    records = [
        {**first, "question_id": "from-frames", "video": "sub/clip.mp4"},
        {**first, "question_id": "missing", "video": "missing.mp4"},
        {**first, "question_id": "broken", "video": "broken.mp4"},
        data["records"][1],
    ]
    qa, out = tmp_path / "qa.jsonl", str(tmp_path / "preds.jsonl")
    write_jsonl(qa, records)
    summary = run_inference(
        model, tokenizer, qa, out, videos, frames_root, batch_size=4, max_new_tokens=NEW_TOKENS, compression=None
    )
    assert (summary["predicted"], summary["failed"]) == (2, 2)
    preds = {p["question_id"]: p["pred"] for p in read_jsonl(out)}
    from_frames = reference(None, {first["question_id"]: str(clip_dir)})[first["question_id"]]
    assert preds == {"from-frames": from_frames, records[3]["question_id"]: reference(None)[records[3]["question_id"]]}
    failures = {f["question_id"]: f for f in read_jsonl(summary["failures"])}
    assert set(failures) == {"missing", "broken"}
    assert failures["missing"]["reason"].startswith("VideoNotFoundError")
    assert failures["broken"]["reason"].startswith("VideoDecodeError")
    assert failures["broken"]["path"] == str(videos / "broken.mp4")
    assert settings_of(out)["failed_question_ids"] == ["missing", "broken"]

    results = judge_predictions(out, OfflineJudge("normalized"), tmp_path / "results.json")
    assert (results["overall"]["questions"], results["overall"]["judged"], results["overall"]["missing"]) == (4, 2, 2)

    # A rerun retries the failures: the video that has appeared is answered, the broken one fails again.
    shutil.copy(videos / first["video"], videos / "missing.mp4")
    summary = run_inference(
        model, tokenizer, qa, out, videos, frames_root, batch_size=4, max_new_tokens=NEW_TOKENS, compression=None
    )
    assert (summary["resumed"], summary["new"], summary["failed"]) == (2, 1, 1)
    assert [f["question_id"] for f in read_jsonl(summary["failures"])] == ["broken"]
    merged = merge_predictions([out], qa, tmp_path / "merged.jsonl")
    assert (merged["predicted"], merged["failed"]) == (3, 1)
    assert [f["question_id"] for f in read_jsonl(merged["failures"])] == ["broken"]


def test_two_ranks_write_shards_that_merge(tmp_path, data, model, tokenizer, reference):
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    out = str(tmp_path / "preds.jsonl")
    cmd = [
        sys.executable,
        "-m",
        "video_llavolta.qa_inference",
        "--model",
        str(model_dir),
        "--qa",
        data["qa"],
        "--video-root",
        data["videos"],
        "--out",
        out,
        "--compression",
        "none",
        "--batch-size",
        "3",
        "--max-new-tokens",
        str(NEW_TOKENS),
    ]
    env = {**os.environ, "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    ranks = [
        subprocess.Popen(
            cmd, env={**env, "RANK": str(r)}, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for r in range(2)
    ]
    for proc in ranks:
        log, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, log

    shards = [shard_path(out, r, 2) for r in range(2)]
    assert shards == [str(tmp_path / "preds.rank0-of-2.jsonl"), str(tmp_path / "preds.rank1-of-2.jsonl")]
    for rank, shard in enumerate(shards):
        assert [p["question_id"] for p in read_jsonl(shard)] == [r["question_id"] for r in data["records"][rank::2]]
    assert main(["merge", "--qa", data["qa"], "--out", out, "--world-size", "2"]) == 0
    merged = read_jsonl(out)
    assert [p["question_id"] for p in merged] == [r["question_id"] for r in data["records"]]
    assert {p["question_id"]: p["pred"] for p in merged} == reference(None)
    assert settings_of(out)["settings"]["world_size"] == 2


def test_merge_checks_every_id_once_and_joins_answers_by_id(tmp_path, data):
    records = data["records"]
    by_id = {r["question_id"]: r for r in records}

    def pred(r, **changes):
        return {
            "question_id": r["question_id"],
            "question": r["question"],
            "answer": r["answer"],
            "pred": f"p-{r['question_id']}",
            **changes,
        }

    def merge(shard0, shard1, failures1=()):
        paths = [tmp_path / "s0.jsonl", tmp_path / "s1.jsonl"]
        write_jsonl(paths[0], shard0)
        write_jsonl(paths[1], shard1)
        write_jsonl(tmp_path / "s1.failures.jsonl", failures1)
        out = tmp_path / "merged.jsonl"
        if out.exists():
            out.unlink()
        return merge_predictions(paths, data["qa"], out), out

    even, odd = [pred(r) for r in records[0::2]], [pred(r) for r in records[1::2]]
    summary, out = merge(even, odd[::-1])  # shard order and line order carry no meaning
    merged = read_jsonl(out)
    assert [m["question_id"] for m in merged] == [r["question_id"] for r in records]
    for m in merged:
        assert m["answer"] == by_id[m["question_id"]]["answer"] and m["pred"] == f"p-{m['question_id']}"
    assert (summary["predicted"], summary["failed"]) == (len(records), 0)

    dup = records[0]["question_id"]
    with pytest.raises(ValueError, match=f"1 question ids appear more than once: '{dup}'"):
        merge(even, odd + [pred(records[0], pred="again")])
    assert not out.exists()
    gone = records[3]["question_id"]
    with pytest.raises(ValueError, match=f"neither a prediction nor a failure.*'{gone}'"):
        merge(even, [p for p in odd if p["question_id"] != gone])
    with pytest.raises(ValueError, match="not in the QA file: 'stray'"):
        merge(even, odd + [pred(records[0], question_id="stray")])
    with pytest.raises(ValueError, match="another question or reference answer"):
        merge(even, [pred(records[1], answer="wrong")] + odd[1:])

    failure = {
        "question_id": gone,
        "question": by_id[gone]["question"],
        "answer": by_id[gone]["answer"],
        "reason": "VideoDecodeError: broken",
    }
    summary, out = merge(even, [p for p in odd if p["question_id"] != gone], [failure])
    assert (summary["predicted"], summary["failed"]) == (len(records) - 1, 1)
    assert gone not in {m["question_id"] for m in read_jsonl(out)}


def test_shard_names():
    assert shard_path("out/preds.jsonl", 0, 1) == "out/preds.jsonl"
    assert shard_path("out/preds.jsonl", 3, 8) == "out/preds.rank3-of-8.jsonl"
