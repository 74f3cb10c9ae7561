"""The lmms-eval model on videos and the shipped video QA tasks, on a tiny saved Video-LLaVA and the synthetic set.

The model is exercised with lmms-eval style request objects (no lmms-eval needed); the tasks run through lmms-eval's
evaluator on local data (no download), judged through a scripted local OpenAI-compatible server.
"""

import importlib.util
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fake_openai import FakeOpenAI
from helpers import read_jsonl
from PIL import Image
from test_towers import tiny
from tiny_models import IMAGE, VIDEO
from tiny_tokenizer import word_tokenizer

from data_prep.synthetic import make_synthetic
from image_llavolta.compression import enable_compression
from image_llavolta.conversation import VICUNA_V1
from image_llavolta.lmms_model import parse_compression_arg
from video_llavolta.inputs import encode_sample
from video_llavolta.lmms_model import VideoLlavolta, is_video
from video_llavolta.qa_inference import run_inference

SEED = 3  # a tiny model whose answers to the synthetic test split differ between videos and with compression
NEW_TOKENS = 4
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_LMMS_EVAL = importlib.util.find_spec("lmms_eval") is not None
NO_LMMS_EVAL = "lmms-eval is not installed (the optional eval extra; see image_llavolta/lmms_model.py)"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The synthetic test split: 2 videos, a few questions each."""
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic(root, num_train=0, num_test=2, progress=False)
    qa = str(root / "test_qa.jsonl")
    return {"qa": qa, "videos": str(root / "videos"), "records": read_jsonl(qa), "root": root}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny Video-LLaVA and its tokenizer saved as a checkpoint directory (no compression stored)."""
    path = tmp_path_factory.mktemp("video_ckpt")
    enable_compression(tiny(temporal=False, seed=SEED), None).save_pretrained(path)
    word_tokenizer(96).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "img.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (20, 26, 3), dtype=np.uint8)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def reference():
    """Greedy answers of one prompt at a time (no batching, no padding), with the log p of the generated tokens."""
    model, tokenizer = tiny(temporal=False, seed=SEED), word_tokenizer(96)

    @torch.no_grad()
    def answer(text, videos=(), images=(), spec=None):
        sample = encode_sample(tokenizer, model.config, VICUNA_V1.render([text]), videos, images)
        ids = torch.tensor([sample["input_ids"]])
        pixels = {k: v for k, v in sample.items() if k.startswith("pixel_values")}
        out = model.generate(
            input_ids=ids,
            **pixels,
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=2,
            suppress_tokens=[IMAGE, VIDEO],
            compression=spec,
            output_logits=True,
            return_dict_in_generate=True,
        )
        new = out.sequences[0, ids.shape[1] :]
        logp = sum(float(torch.log_softmax(s[0], -1)[t]) for s, t in zip(out.logits, new))
        tokens = [int(t) for t in new if int(t) != 2]
        return {"text": tokenizer.decode(new, skip_special_tokens=True).strip(), "tokens": tokens, "logp": logp}

    return answer


def request(*args):
    return SimpleNamespace(args=args)


def test_videos_are_told_from_images(tmp_path):
    assert is_video("a/clip.MP4") and is_video(str(tmp_path)) and not is_video("a/img.png")
    assert not is_video(Image.new("RGB", (4, 4)))


@pytest.mark.parametrize("compression", ["none", "2:4"])
def test_mixed_requests_equal_one_by_one_generation(checkpoint, data, image, reference, compression, monkeypatch):
    """Videos, an image and text only in one call: answers in request order, each batch of one kind of media."""
    import image_llavolta.lmms_model as base

    batches = []

    def recording(model, tokenizer, samples, generation, spec):
        batches.append([tuple(sorted(k for k in s if k.startswith("pixel_values"))) for s in samples])
        return generate_answers(model, tokenizer, samples, generation, spec)

    generate_answers = base.generate_answers
    monkeypatch.setattr(base, "generate_answers", recording)
    spec = parse_compression_arg(compression)
    lm = VideoLlavolta(pretrained=checkpoint, compression=compression, batch_size=2, device="cpu")
    videos = [os.path.join(data["videos"], r["video"]) for r in data["records"][:3]]
    docs = [{"visual": [v], "q": r["question"]} for v, r in zip(videos, data["records"])]
    docs.insert(1, {"visual": [image], "q": "what colour is the shape ?"})
    docs.insert(3, {"visual": [], "q": "what is it ?"})
    lm.task_dict = {"local": {"test": docs}}
    got = lm.generate_until(
        [
            request(d["q"], {"max_new_tokens": NEW_TOKENS}, lambda doc: doc["visual"], i, "local", "test")
            for i, d in enumerate(docs)
        ]
    )
    expected = []
    for d in docs:
        kind = "<video>\n" if d["visual"] and is_video(d["visual"][0]) else "<image>\n" if d["visual"] else ""
        videos_, images_ = (d["visual"], []) if kind == "<video>\n" else ([], d["visual"])
        expected.append(reference(kind + d["q"], videos_, images_, spec)["text"])
    assert got == expected
    assert len(set(expected)) > 1  # answers depend on the media
    assert all(len(set(batch)) == 1 for batch in batches)  # one kind of media per batch
    assert [len(b) for b in batches] == [2, 1, 1, 1]  # the three videos in two batches of at most 2
    assert {b[0] for b in batches} == {(), ("pixel_values",), ("pixel_values_videos",)}


@pytest.mark.parametrize("compression", ["none", "2:4"])
def test_video_loglikelihood_matches_generation_scores(checkpoint, data, reference, compression):
    """A video multiple-choice request: log p of the greedy answer equals generate's own step scores."""
    spec = parse_compression_arg(compression)
    lm = VideoLlavolta(pretrained=checkpoint, compression=compression)
    record = data["records"][0]
    video = os.path.join(data["videos"], record["video"])
    lm.task_dict = {"local": {"test": [{"video": video}]}}
    tokenizer = word_tokenizer(96)
    expected = reference("<video>\n" + record["question"], [video], [], spec)
    greedy_text = tokenizer.decode(expected["tokens"])
    assert tokenizer(greedy_text, add_special_tokens=False)["input_ids"] == expected["tokens"]  # round trip
    first = tokenizer.decode(expected["tokens"][:1])
    other = next(w for w in ("w70", "w71") if w != first)
    visual = lambda doc: [doc["video"]]  # noqa: E731
    got = lm.loglikelihood(
        [
            request(record["question"], greedy_text, visual, 0, "local", "test"),
            request(record["question"], first, visual, 0, "local", "test"),
            request(record["question"], other, visual, 0, "local", "test"),
        ]
    )
    assert got[0][1] is True and got[0][0] == pytest.approx(expected["logp"], abs=1e-4)
    assert got[1][1] is True and got[2][1] is False and got[2][0] < got[1][0]


def test_refusals(checkpoint, tmp_path):
    from tiny_models import tiny_llava

    lm = VideoLlavolta(pretrained=checkpoint, compression="none")
    with pytest.raises(NotImplementedError, match="single-turn"):
        lm.generate_until_multi_round([])
    llava = tmp_path / "llava"
    enable_compression(tiny_llava(seed=SEED), None).save_pretrained(llava)
    word_tokenizer(96).save_pretrained(llava)
    lm = VideoLlavolta(pretrained=str(llava), compression="none")
    lm.task_dict = {"local": {"test": [{}]}}
    with pytest.raises(ValueError, match="clip.mp4: a llava checkpoint answers images, not videos"):
        lm.generate_until([request("what ?", {}, lambda doc: ["clip.mp4"], 0, "local", "test")])


# ---------------------------------------------------------------------------------------------------
# The shipped tasks through lmms-eval's evaluator


UNPARSEABLE, WRONG, FAILING = 0, 1, 2  # the questions whose judge replies are scripted


def markers(data) -> list[str]:
    """What the judge's user message holds for each question (question and answer: a question may repeat)."""
    return [f"Question: {r['question']}\nReference answer: {r['answer']}\n" for r in data["records"]]


@pytest.fixture
def judge_server(data, tmp_path, monkeypatch):
    """A scripted judge: one unparseable reply, one "no", one server error; "yes" with score 4 for the rest."""
    marks = markers(data)
    assert len(set(marks)) == len(marks)  # each marker finds one question
    server = FakeOpenAI(
        {
            marks[UNPARSEABLE]: [{"reply": "The answers match."}],
            marks[WRONG]: [{"reply": "{'pred': 'no', 'score': 1}"}],
            marks[FAILING]: [{"status": 500}],
        }
    ).start()
    env = {
        "LLAVOLTA_MSVD_QA": data["qa"],
        "LLAVOLTA_MSVD_VIDEOS": data["videos"],
        "LLAVOLTA_JUDGE_BASE_URL": server.url,
        "LLAVOLTA_JUDGE_API_KEY_ENV": "LLAVOLTA_TEST_JUDGE_KEY",
        "LLAVOLTA_TEST_JUDGE_KEY": "sk-test",
        "LLAVOLTA_JUDGE_CACHE": str(tmp_path / "judge_cache.jsonl"),
        "LLAVOLTA_JUDGE_MAX_RETRIES": "0",
        "LLAVOLTA_JUDGE_MAX_PARSE_RETRIES": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LLAVOLTA_MSVD_FRAMES", raising=False)
    monkeypatch.delenv("LLAVOLTA_JUDGE_MODEL", raising=False)
    yield server
    server.stop()


def qa_inference(checkpoint, data, tmp_path, compression) -> dict:
    """{question id: prediction} of `video_llavolta.qa_inference` with the MSVD spec and the test's token limit."""
    from transformers import AutoTokenizer

    from video_llavolta.checkpoint import load_pretrained

    path = tmp_path / f"preds-{compression.replace(':', '_')}.jsonl"
    run_inference(
        load_pretrained(checkpoint),
        AutoTokenizer.from_pretrained(checkpoint),
        data["qa"],
        path,
        data["videos"],
        batch_size=2,
        max_new_tokens=NEW_TOKENS,
        compression=parse_compression_arg(compression),
        benchmark="msvd",
    )
    return {str(p["question_id"]): p["pred"] for p in read_jsonl(path)}


@pytest.mark.skipif(not HAS_LMMS_EVAL, reason=NO_LMMS_EVAL)
@pytest.mark.parametrize("compression", ["none", "2:4"])
def test_msvd_task_equals_qa_inference_and_counts_judge_problems(checkpoint, data, tmp_path, judge_server, compression):
    """The shipped MSVD-QA task on local data: qa_inference's predictions, judged with problems counted apart."""
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    lm = VideoLlavolta(pretrained=checkpoint, compression=compression, batch_size=3)
    out = simple_evaluate(
        model=lm,
        tasks=["llavolta_msvd_qa"],
        batch_size=3,
        log_samples=True,
        gen_kwargs=f"max_new_tokens={NEW_TOKENS}",
        task_manager=TaskManager(include_path=os.path.join(REPO, "configs", "lmms_tasks"), include_defaults=False),
    )
    got = {s["doc"]["question_id"]: s["filtered_resps"][0] for s in out["samples"]["llavolta_msvd_qa"]}
    # Our own QA inference on the same questions with the same settings (the spec's prompt, the token limit).
    expected = qa_inference(checkpoint, data, tmp_path, compression)
    assert got == expected and len(got) == len(data["records"])
    uncompressed = expected if compression == "none" else qa_inference(checkpoint, data, tmp_path, "none")
    assert len(set(uncompressed.values())) > 1  # the answers depend on the video
    if compression != "none":
        assert expected != uncompressed  # compression reaches the model

    n = len(data["records"])
    results = out["results"]["llavolta_msvd_qa"]
    assert results["judged,none"] == n - 2
    assert results["parse_failures,none"] == 1 and results["api_errors,none"] == 1
    assert results["accuracy,none"] == pytest.approx((n - 3) / (n - 2))  # over judged questions only
    assert results["score,none"] == pytest.approx((4 * (n - 3) + 1) / (n - 2))
    server, marks = judge_server, markers(data)
    assert server.count(marks[UNPARSEABLE]) == 2  # asked again once, then a parse failure
    assert server.count(marks[FAILING]) == 1  # no retries allowed
    assert {r["model"] for r in server.requests} == {"gpt-3.5-turbo-0125"}  # the spec's pinned snapshot
    assert {r["temperature"] for r in server.requests} == {0}
    cached = [json.loads(line) for line in open(os.environ["LLAVOLTA_JUDGE_CACHE"])]
    assert len(cached) == n - 1  # every judgment and the parse failure; the API error is asked again next time
    assert sorted(c["status"] for c in cached).count("parse_failure") == 1


@pytest.mark.skipif(not HAS_LMMS_EVAL, reason=NO_LMMS_EVAL)
def test_shipped_tasks_read_the_unified_qa_file(data, monkeypatch, tmp_path):
    """All three task folders: docs from the QA JSONL with their video paths, the spec's prompt and token limit."""
    from lmms_eval.tasks import TaskManager, get_task_dict

    from video_llavolta.benchmarks import load_qa_spec

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    frames = tmp_path / "frames"
    (frames / "test_00001").mkdir(parents=True)  # a finished frame directory is preferred to its video
    (frames / "test_00001" / "frames.json").write_text("{}")
    for name in ("MSVD", "MSRVTT", "ACTIVITYNET"):
        monkeypatch.setenv(f"LLAVOLTA_{name}_QA", data["qa"])
        monkeypatch.setenv(f"LLAVOLTA_{name}_VIDEOS", data["videos"])
    monkeypatch.setenv("LLAVOLTA_ACTIVITYNET_FRAMES", str(frames))
    monkeypatch.delenv("LLAVOLTA_MSVD_FRAMES", raising=False)
    manager = TaskManager(include_path=os.path.join(REPO, "configs", "lmms_tasks"), include_defaults=False)
    names = ["llavolta_msvd_qa", "llavolta_msrvtt_qa", "llavolta_activitynet_qa"]
    tasks = get_task_dict(names, manager)
    for name, benchmark in zip(names, ("msvd", "msrvtt", "activitynet")):
        task = tasks[name]
        docs = list(task.test_docs())
        assert [d["question_id"] for d in docs] == [r["question_id"] for r in data["records"]]
        assert task.doc_to_text(docs[0]) == data["records"][0]["question"]  # "<video>\n" is the model's to place
        assert task.config.generation_kwargs["max_new_tokens"] == load_qa_spec(benchmark).max_new_tokens
        assert task.config.generation_kwargs["until"] == [] and task.config.generation_kwargs["do_sample"] is False
        paths = {d["video"]: d["video_path"] for d in docs}
        assert paths["test_00000.mp4"] == os.path.join(data["videos"], "test_00000.mp4")
    by_video = {d["video"]: d["video_path"] for d in tasks["llavolta_activitynet_qa"].test_docs()}
    msvd = {d["video"]: d["video_path"] for d in tasks["llavolta_msvd_qa"].test_docs()}
    assert by_video["test_00001.mp4"] == str(frames / "test_00001")
    assert msvd["test_00001.mp4"] == os.path.join(data["videos"], "test_00001.mp4")  # no frames root: the video

    monkeypatch.delenv("LLAVOLTA_MSVD_QA")
    with pytest.raises(ValueError, match=r"dataset_kwargs.qa_file is not set \('\$\{LLAVOLTA_MSVD_QA\}'\)"):
        get_task_dict(["llavolta_msvd_qa"], manager)
