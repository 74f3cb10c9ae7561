"""Image benchmark harness: specs, question files, prompts, scoring files, batched resumable runs on a tiny LLaVA."""

import glob
import json
import os

import numpy as np
import pytest
import torch
from helpers import Killed, read_jsonl, write_jsonl
from PIL import Image
from tiny_models import IMAGE, tiny_llava
from tiny_tokenizer import word_tokenizer

from image_llavolta.benchmarks import BenchmarkSpec, build_prompt, load_spec, read_questions, spec_files
from image_llavolta.compression import CompressionSpec, enable_compression
from image_llavolta.conversation import LLAVA_V1, VICUNA_V1, record_template, tokenize_prompt
from image_llavolta.evaluate import format_results, main, output_paths, run_benchmark, score_benchmark
from image_llavolta.inputs import load_image
from video_llavolta.benchmarks import VideoQASpec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 2
NEW_TOKENS = 4
SUFFIX = "Answer the question using a single word or phrase."
QUESTIONS = [
    "what colour is the shape ?",
    "how many objects are there ?",
    "is the shape red ?",
    "what shape is in the image ?",
    "is there a circle ?",
    "what colour is the square ?",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return enable_compression(tiny_llava(seed=SEED), None)


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer(96)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Six random images of different non-square sizes (so padding to a square matters)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(6):
        size = (20 + 4 * i, 30 - 2 * i)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(root / f"img{i}.png")
    return str(root)


@pytest.fixture(scope="module")
def reference(model, tokenizer, images):
    """Answers generated one question at a time (no batching, no padding), prompt written out here; memoised."""
    memo = {}

    @torch.no_grad()
    def answers(spec=None):
        if spec not in memo:
            memo[spec] = []
            for i, question in enumerate(QUESTIONS):
                prompt = VICUNA_V1.render([f"<image>\n{question}\n{SUFFIX}"])
                ids = torch.tensor([tokenize_prompt(tokenizer, prompt, {"<image>": (IMAGE, 16)})])
                pixels = load_image(os.path.join(images, f"img{i}.png"), model.config, pad_to_square=True)[None]
                out = model.generate(
                    input_ids=ids,
                    pixel_values=pixels,
                    max_new_tokens=NEW_TOKENS,
                    do_sample=False,
                    pad_token_id=0,
                    eos_token_id=2,
                    suppress_tokens=[IMAGE],
                    compression=spec,
                )
                memo[spec].append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())
        return memo[spec]

    return answers


GQA_LIKE = BenchmarkSpec(name="tiny_gqa", answer_type="short_answer", metric="exact_match", max_new_tokens=NEW_TOKENS)


@pytest.fixture(scope="module")
def questions(tmp_path_factory, reference):
    """Seven questions: the reference answer is right for 0, 2, 4, wrong for 1, 3, 5; question 6's image is missing."""
    preds = reference(None)
    assert len(set(preds)) > 1  # answers depend on the image, so a misaligned batch would show
    records = [
        {"question_id": f"q{i}", "image": f"img{i}.png", "question": q, "answer": preds[i] if i % 2 == 0 else "zzz"}
        for i, q in enumerate(QUESTIONS)
    ]
    records.append({"question_id": "q6", "image": "missing.png", "question": QUESTIONS[0], "answer": "red"})
    path = tmp_path_factory.mktemp("questions") / "questions.jsonl"
    write_jsonl(path, records)
    return str(path)


# ---------------------------------------------------------------------------------------------------
# Specs, question files, prompts


IMAGE_SPECS = sorted(
    set(glob.glob(os.path.join(REPO, "configs", "benchmarks", "*.yaml")))
    - set(glob.glob(os.path.join(REPO, "configs", "benchmarks", "*_qa.yaml")))
)


@pytest.mark.parametrize("path", IMAGE_SPECS)
def test_shipped_specs(path):
    spec = load_spec(path)
    expected = {
        "gqa": ("short_answer", "exact_match", "answer"),
        "vqav2": ("short_answer", "vqa_accuracy", "answers"),
        "textvqa": ("short_answer", "vqa_accuracy", "answers"),
        "pope": ("yes_no", "pope", "answer"),
        "mme": ("yes_no", "mme", "answer"),
        "scienceqa_img": ("multiple_choice", "accuracy", "answer"),
        "mmbench": ("multiple_choice", "accuracy", "answer"),
        "seed_bench_img": ("multiple_choice", "accuracy", "answer"),
    }
    assert os.path.basename(path) == f"{spec.name}.yaml"
    assert (spec.answer_type, spec.metric, spec.answer_field) == expected[spec.name]
    assert spec.prompt_suffix == (
        "Answer with the option's letter from the given choices directly."
        if spec.answer_type == "multiple_choice"
        else SUFFIX
    )


def test_shipped_spec_set_is_complete():
    names = {os.path.basename(p)[:-5] for p in glob.glob(os.path.join(REPO, "configs", "benchmarks", "*.yaml"))}
    image = {"gqa", "vqav2", "textvqa", "pope", "mme", "scienceqa_img", "mmbench", "seed_bench_img"}
    assert names == image | {"msvd_qa", "msrvtt_qa", "activitynet_qa"}
    assert set(spec_files("image")) == image  # found by their `name`, which is the file name here


def test_specs_load_by_name_or_path_and_kind(tmp_path):
    assert load_spec("pope") == load_spec(os.path.join(REPO, "configs", "benchmarks", "pope.yaml"))
    with pytest.raises(ValueError, match=r"no image benchmark named 'pop'.*known: gqa, mmbench, mme, pope"):
        load_spec("pop")
    with pytest.raises(ValueError, match="msvd_qa.yaml: a benchmark spec of kind 'video_qa', expected kind 'image'"):
        load_spec(os.path.join(REPO, "configs", "benchmarks", "msvd_qa.yaml"))
    with pytest.raises(ValueError, match="no image benchmark named 'msvd'"):  # names are looked up within a kind
        load_spec("msvd")
    path = tmp_path / "old.yaml"  # written before specs had a kind: an image spec
    path.write_text("name: old\nanswer_type: yes_no\nmetric: accuracy\n")
    assert load_spec(path).answer_type == "yes_no"
    path.write_text("kind: audio\nname: old\nanswer_type: yes_no\nmetric: accuracy\n")
    with pytest.raises(ValueError, match="kind 'audio', expected kind 'image'"):
        load_spec(path)
    with pytest.raises(FileNotFoundError, match="no_such.yaml: no such benchmark spec"):
        load_spec(tmp_path / "no_such.yaml")


IMAGE_X = "name: x\nanswer_type: "
VIDEO_X = "kind: video_qa\nname: x\n"


@pytest.mark.parametrize(
    "spec_class,text,error",
    [
        (BenchmarkSpec, IMAGE_X + "short_answer\nmetric: exact_match\nsufix: a\n", r"unknown field\(s\) \['sufix'\]"),
        (BenchmarkSpec, IMAGE_X + "yes_no\nmetric: vqa_accuracy\n", "'vqa_accuracy' does not fit answer_type 'yes_no'"),
        (BenchmarkSpec, "name: x\nmetric: accuracy\n", r"missing field\(s\) \['answer_type'\]"),
        (BenchmarkSpec, IMAGE_X + "yes_no\nmetric: mme\n", "set category_field"),
        (BenchmarkSpec, IMAGE_X + "essay\nmetric: accuracy\n", "answer_type must be one of"),
        (BenchmarkSpec, "- a list\n", "expected a mapping"),
        (VideoQASpec, "name: x\n", "a benchmark spec of kind 'image', expected kind 'video_qa'"),
        (VideoQASpec, "kind: video_qa\nsplit: test\n", r"missing field\(s\) \['name'\]"),
        (VideoQASpec, VIDEO_X + "prefix: v_\n", r"unknown field\(s\) \['prefix'\]"),
        (VideoQASpec, VIDEO_X + "prompt: '<video> {q}'\n", "prompt must hold <video> and {question} once"),
        (VideoQASpec, VIDEO_X + "prompt: '{question}'\n", "prompt must hold <video>"),
        (VideoQASpec, VIDEO_X + "video_extensions: [mp4]\n", "video_extensions must be a list of extensions"),
        (VideoQASpec, VIDEO_X + "type_names: {0: a}\n", "type_names needs a type_field"),
        (VideoQASpec, VIDEO_X + "judge: {model: m}\n", "missing 1 required positional argument: 'rubric'"),
        (VideoQASpec, VIDEO_X + "judge: {model: m, rubric: r, temperature: 0}\n", r"judge: unknown field\(s\)"),
        (VideoQASpec, VIDEO_X + "template: chatml\n", "unknown template 'chatml'"),
        (VideoQASpec, VIDEO_X + "max_new_tokens: 0\n", "max_new_tokens must be an integer >= 1"),
    ],
)
def test_bad_spec_names_the_file_and_field(tmp_path, spec_class, text, error):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"{path}: .*{error}"):
        load_spec(path, spec_class)


MC = BenchmarkSpec(
    name="mc", answer_type="multiple_choice", metric="accuracy", hint_prefix="Context: ", category_field="category"
)


def test_prompts_follow_llava15():
    short = {"question_id": 1, "image": "a.jpg", "question": "What is this?", "answer": "cat"}
    assert build_prompt(GQA_LIKE, short) == "<image>\nWhat is this?\n" + SUFFIX
    mc = {
        "question_id": 2,
        "image": "a.jpg",
        "question": "Which animal?",
        "options": ["cat", "dog"],
        "answer": "B",
        "hint": "A pet.",
        "category": "animals",
    }
    assert build_prompt(MC, mc) == (
        "<image>\nContext: A pet.\nWhich animal?\nA. cat\nB. dog\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert build_prompt(MC, {**mc, "hint": None}).startswith("<image>\nWhich animal?\nA. cat")


@pytest.mark.parametrize(
    "record,error",
    [
        (
            {
                "question_id": "a",
                "image": "x.jpg",
                "question": "q?",
                "options": ["x", "y"],
                "answer": "C",
                "category": "c",
            },
            "question 'a': 'answer' must be one of the option letters A, B, got 'C'",
        ),
        (
            {"question_id": "a", "image": "x.jpg", "question": "q?", "options": ["x"], "answer": "A", "category": "c"},
            "'options' must be a list of 2 to 26",
        ),
        (
            {"question_id": "a", "image": "x.jpg", "question": "q?", "options": ["x", "y"], "answer": "A"},
            "'category' \\(the spec's category_field\\) must be a non-empty string",
        ),
        ({"question_id": True, "image": "x.jpg", "question": "q?"}, "'question_id' must be"),
        ({"question_id": "a", "question": "q?", "options": ["x", "y"], "answer": "A"}, "'image' must be"),
    ],
)
def test_bad_question_record_names_the_line_and_field(tmp_path, record, error):
    path = tmp_path / "q.jsonl"
    good = {
        "question_id": "ok",
        "image": "x.jpg",
        "question": "q?",
        "options": ["x", "y"],
        "answer": "A",
        "category": "c",
    }
    write_jsonl(path, [good, record])
    with pytest.raises(ValueError, match=f"{path}:2: .*{error}"):
        read_questions(path, MC)


def test_question_file_checks(tmp_path):
    path = tmp_path / "q.jsonl"
    pope = BenchmarkSpec(name="p", answer_type="yes_no", metric="pope")
    write_jsonl(path, [{"question_id": 1, "image": "x.jpg", "question": "q?", "answer": "maybe"}])
    with pytest.raises(ValueError, match="q.jsonl:1: question 1: 'answer' must be yes or no"):
        read_questions(path, pope)
    write_jsonl(
        path,
        [
            {"question_id": 1, "image": "x.jpg", "question": "q?", "answer": "Yes"},
            {"question_id": "1", "image": "y.jpg", "question": "q?", "answer": "no"},
        ],
    )
    with pytest.raises(ValueError, match="q.jsonl:2: question id '1' already on line 1"):
        read_questions(path, pope)
    vqa = BenchmarkSpec(name="v", answer_type="short_answer", metric="vqa_accuracy", answer_field="answers")
    write_jsonl(path, [{"question_id": 1, "image": "x.jpg", "question": "q?", "answers": "two"}])
    with pytest.raises(ValueError, match="'answers' must be a non-empty list of strings"):
        read_questions(path, vqa)
    path.write_text('{"question_id": 1, "image": "x.jpg", "question": "q?", "answers": ["a"]}\n{"question_id": 2,\n')
    with pytest.raises(ValueError, match="q.jsonl:2: not valid JSON"):
        read_questions(path, vqa)
    assert [r["question_id"] for r in read_questions(path, vqa, limit=1)] == [1]


# ---------------------------------------------------------------------------------------------------
# Scoring files by hand


def test_scoring_a_multiple_choice_file_by_hand(tmp_path):
    qs = [
        {
            "question_id": 1,
            "image": "a.jpg",
            "question": "q1",
            "options": ["cat", "dog"],
            "answer": "A",
            "category": "animals",
        },
        {
            "question_id": 2,
            "image": "b.jpg",
            "question": "q2",
            "options": ["red", "blue", "green"],
            "answer": "C",
            "category": "colours",
        },
        {
            "question_id": 3,
            "image": "c.jpg",
            "question": "q3",
            "options": ["one", "two"],
            "answer": "B",
            "category": "colours",
        },
        {
            "question_id": 4,
            "image": "d.jpg",
            "question": "q4",
            "options": ["x", "y"],
            "answer": "A",
            "category": "animals",
        },
        {
            "question_id": 5,
            "image": "e.jpg",
            "question": "q5",
            "options": ["x", "y"],
            "answer": "B",
            "category": "animals",
        },
    ]
    data = tmp_path / "mc.jsonl"
    write_jsonl(data, qs)
    out = tmp_path / "out"
    preds = output_paths(out, "mc")["predictions"]
    os.makedirs(out)
    # 1: "(A) cat" right; 2: "The answer is C." right; 3: "A" wrong; 4: "A or B" unparsed; 5: image failed
    write_jsonl(
        preds,
        [
            {**qs[0], "pred": "(A) cat"},
            {**qs[1], "pred": "The answer is C."},
            {**qs[2], "pred": "A"},
            {**qs[3], "pred": "(A) or (B)"},
        ],
    )
    write_jsonl(
        preds.replace(".jsonl", ".failures.jsonl"),
        [{"question_id": 5, "reason": "ValueError: cannot read image e.jpg"}],
    )
    results = score_benchmark(MC, data, out)
    assert results["counts"] == {"questions": 5, "answered": 4, "unparsed": 1, "missing": 1}
    assert results["overall"] == {"accuracy": pytest.approx(2 / 5)}
    assert results["by_category"]["animals"] == {
        "accuracy": pytest.approx(1 / 3),
        "questions": 3,
        "answered": 2,
        "unparsed": 1,
        "missing": 1,
    }
    assert results["by_category"]["colours"]["accuracy"] == pytest.approx(1 / 2)
    assert results["unparsed"] == [{"question_id": 4, "pred": "(A) or (B)", "reason": "ambiguous: names A, B"}]
    assert results["missing"] == [{"question_id": 5, "reason": "ValueError: cannot read image e.jpg"}]
    scores = read_jsonl(output_paths(out, "mc")["scores"])
    assert [(s["parsed"], s["score"], s["status"]) for s in scores] == [
        ("A", 1.0, "scored"),
        ("C", 1.0, "scored"),
        ("A", 0.0, "scored"),
        (None, 0.0, "unparsed"),
        (None, 0.0, "missing"),
    ]
    lines = format_results(results).splitlines()
    assert lines[0] == "mc (accuracy)  model: ?  compression: ?"  # no settings sidecar beside these predictions
    assert lines[1].split() == ["questions", "answered", "unparsed", "missing", "accuracy"]
    assert [line.split() for line in lines[3:6]] == [
        ["mc", "5", "4", "1", "1", "40.0%"],
        ["animals", "3", "2", "1", "1", "33.3%"],
        ["colours", "2", "2", "0", "0", "50.0%"],
    ]
    assert lines[4].startswith("  animals")
    assert lines[6:] == ["accuracy_mean_over_categories: 41.7%", "unparsed: 1 (4)", "missing: 1 (5)"]  # (1/3+1/2)/2

    write_jsonl(preds, [{**qs[0], "answer": "B", "pred": "A"}])  # a reference that differs from the question file
    with pytest.raises(ValueError, match="another question or reference"):
        score_benchmark(MC, data, out)
    write_jsonl(preds, [{**qs[0], "question_id": 9, "pred": "A"}])
    with pytest.raises(ValueError, match="question id 9 is not in"):
        score_benchmark(MC, data, out)


def test_scoring_vqa_and_pope_files_by_hand(tmp_path):
    vqa = BenchmarkSpec(name="v", answer_type="short_answer", metric="vqa_accuracy", answer_field="answers")
    qs = [
        {"question_id": 1, "image": "a.jpg", "question": "how many?", "answers": ["2"] * 2 + ["3"] * 8},
        {"question_id": 2, "image": "b.jpg", "question": "what?", "answers": ["cat"] * 10},
    ]
    write_jsonl(tmp_path / "v.jsonl", qs)
    os.makedirs(tmp_path / "out")
    write_jsonl(
        output_paths(tmp_path / "out", "v")["predictions"], [{**qs[0], "pred": "Two."}, {**qs[1], "pred": "A cat"}]
    )
    # "2" matches 2 of 10 -> 0.6 (see test_scoring); "cat" matches 10 -> 1
    assert score_benchmark(vqa, tmp_path / "v.jsonl", tmp_path / "out")["overall"] == {"accuracy": pytest.approx(0.8)}

    pope = BenchmarkSpec(name="p", answer_type="yes_no", metric="pope")
    qs = [
        {"question_id": i, "image": f"{i}.jpg", "question": "is there?", "answer": a}
        for i, a in enumerate(["Yes", "yes", "no", "no"])
    ]
    write_jsonl(tmp_path / "p.jsonl", qs)
    write_jsonl(
        output_paths(tmp_path / "out", "p")["predictions"],
        [{**q, "pred": p} for q, p in zip(qs, ["Yes, there is.", "There is a dog.", "yes", "No"])],
    )
    results = score_benchmark(pope, tmp_path / "p.jsonl", tmp_path / "out")
    # TP 1, FP 1, FN 1 (the unparsed "There is a dog."): precision 1/2, recall 1/2; right: 0 and 3
    assert results["overall"] == pytest.approx(
        {"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5, "yes_ratio": 0.5}
    )
    assert results["counts"]["unparsed"] == 1


# ---------------------------------------------------------------------------------------------------
# Runs on a tiny model


def test_batched_run_matches_one_by_one_and_scores(tmp_path, model, tokenizer, images, questions, reference):
    out = tmp_path / "out"
    summary = run_benchmark(model, tokenizer, GQA_LIKE, questions, images, out, batch_size=4, compression=None)
    assert (summary["questions"], summary["predicted"], summary["failed"]) == (7, 6, 1)
    preds = read_jsonl(output_paths(out, "tiny_gqa")["predictions"])
    assert [p["question_id"] for p in preds] == [f"q{i}" for i in range(6)]
    assert [p["pred"] for p in preds] == reference(None)
    assert preds[1] == {
        "question_id": "q1",
        "image": "img1.png",
        "question": QUESTIONS[1],
        "answer": "zzz",
        "pred": reference(None)[1],
    }
    results = summary["results"]
    # right: q0, q2, q4; wrong: q1, q3, q5; q6's image is missing and counts as wrong
    assert results["overall"] == {"accuracy": pytest.approx(3 / 7)}
    assert results["counts"] == {"questions": 7, "answered": 6, "unparsed": 0, "missing": 1}
    assert results["missing"][0]["question_id"] == "q6" and results["missing"][0]["reason"].startswith("ValueError")
    settings = results["settings"]
    assert settings["compression"] is None and settings["benchmark"]["prompt_suffix"] == SUFFIX
    assert settings["generation"]["suppress_tokens"] == [IMAGE] and settings["generation"]["do_sample"] is False
    with open(output_paths(out, "tiny_gqa")["results"]) as f:
        assert json.load(f)["overall"] == results["overall"]


def test_test_time_compression_reaches_the_model(tmp_path, model, tokenizer, images, questions, reference):
    spec = CompressionSpec(1, 4)
    out = tmp_path / "out"
    summary = run_benchmark(model, tokenizer, GQA_LIKE, questions, images, out, batch_size=3, compression=spec, limit=6)
    assert summary["failed"] == 0 and summary["results"]["counts"]["questions"] == 6
    preds = [p["pred"] for p in read_jsonl(output_paths(out, "tiny_gqa")["predictions"])]
    assert preds == reference(spec) and preds != reference(None)
    assert summary["results"]["settings"]["compression"] == spec.to_dict()
    with pytest.raises(ValueError, match="other settings.*compression"):
        run_benchmark(model, tokenizer, GQA_LIKE, questions, images, out, compression=None, limit=6)


@torch.no_grad()
def test_template_from_argument_spec_or_checkpoint(tmp_path, tokenizer, images, questions):
    recorded = enable_compression(tiny_llava(seed=SEED), None)
    record_template(recorded.config, "llava_v1")
    prompt = LLAVA_V1.render([f"<image>\n{QUESTIONS[0]}\n{SUFFIX}"])
    ids = torch.tensor([tokenize_prompt(tokenizer, prompt, {"<image>": (IMAGE, 16)})])
    pixels = load_image(os.path.join(images, "img0.png"), recorded.config, pad_to_square=True)[None]
    out = recorded.generate(
        input_ids=ids,
        pixel_values=pixels,
        max_new_tokens=NEW_TOKENS,
        do_sample=False,
        pad_token_id=0,
        eos_token_id=2,
        suppress_tokens=[IMAGE],
    )
    expected = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()

    spec_vicuna = BenchmarkSpec(**{**GQA_LIKE.to_dict(), "template": "vicuna_v1"})
    cases = [
        ("checkpoint", GQA_LIKE, None, LLAVA_V1),
        ("spec", spec_vicuna, None, VICUNA_V1),
        ("argument", spec_vicuna, "llava_v1", LLAVA_V1),
    ]
    for name, spec, given, template in cases:
        summary = run_benchmark(
            recorded, tokenizer, spec, questions, images, tmp_path / name, compression=None, limit=1, template=given
        )
        assert summary["results"]["settings"]["template"] == template.to_dict(), name
        if template is LLAVA_V1:
            assert read_jsonl(output_paths(tmp_path / name, "tiny_gqa")["predictions"])[0]["pred"] == expected


def test_killed_run_resumes_without_redoing(tmp_path, model, tokenizer, images, questions, reference, monkeypatch):
    out = tmp_path / "out"
    generate, batches, kill = model.generate, [], [True]

    def dies_on_second_batch(*args, **kwargs):
        batches.append(kwargs["input_ids"].shape[0])
        if kill[0] and len(batches) == 2:
            raise Killed
        return generate(*args, **kwargs)

    monkeypatch.setattr(model, "generate", dies_on_second_batch)
    with pytest.raises(Killed):
        run_benchmark(model, tokenizer, GQA_LIKE, questions, images, out, batch_size=2, compression=None)
    path = output_paths(out, "tiny_gqa")["predictions"]
    assert [p["question_id"] for p in read_jsonl(path)] == ["q0", "q1"]
    with open(path, "a") as f:
        f.write('{"question_id": "q2", "pre')  # a line cut off by the kill
    kill[0], batches[:] = False, []
    summary = run_benchmark(model, tokenizer, GQA_LIKE, questions, images, out, batch_size=2, compression=None)
    assert (summary["resumed"], summary["new"], summary["failed"]) == (2, 4, 1) and sum(batches) == 4
    assert [p["pred"] for p in read_jsonl(path)] == reference(None)
    assert summary["results"]["overall"]["accuracy"] == pytest.approx(3 / 7)


def test_command_line_two_ranks_merge_and_score(
    tmp_path, model, tokenizer, images, questions, reference, monkeypatch, capsys
):
    model_dir, out = tmp_path / "model", tmp_path / "out"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    spec_path = tmp_path / "tiny_gqa.yaml"
    spec_path.write_text(
        f"name: tiny_gqa\nanswer_type: short_answer\nmetric: exact_match\nmax_new_tokens: {NEW_TOKENS}\n"
    )
    args = [
        "--benchmark",
        str(spec_path),
        "--data",
        questions,
        "--image-root",
        images,
        "--model",
        str(model_dir),
        "--out",
        str(out),
        "--compression",
        "none",
        "--batch-size",
        "2",
    ]
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        assert main(args) == 0
    assert "merge --benchmark" in capsys.readouterr().out
    shard = str(out / "tiny_gqa.predictions.rank1-of-2.jsonl")
    assert [p["question_id"] for p in read_jsonl(shard)] == ["q1", "q3", "q5"]
    assert not os.path.exists(output_paths(out, "tiny_gqa")["results"])  # shards are not scored

    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    assert (
        main(["merge", "--benchmark", str(spec_path), "--data", questions, "--out", str(out), "--world-size", "2"]) == 0
    )
    printed = capsys.readouterr().out
    assert "42.9%" in printed and "missing: 1 (q6)" in printed  # 3 of 7
    assert [p["pred"] for p in read_jsonl(output_paths(out, "tiny_gqa")["predictions"])] == reference(None)

    assert main(["score", "--benchmark", str(spec_path), "--data", questions, "--out", str(out)]) == 0
    assert "42.9%" in capsys.readouterr().out
    assert main(["score", "--benchmark", str(tmp_path / "nope.yaml"), "--data", questions, "--out", str(out)]) == 2
    assert "nope.yaml: no such benchmark spec" in capsys.readouterr().err
