"""The QA judge: reply parsing, offline matching, and the real openai client against a scripted local server."""

import json
import logging
import os
import subprocess
import sys
import time
from collections import Counter

import pytest
import yaml
from fake_openai import FakeOpenAI

from image_llavolta.jsonio import failures_path
from video_llavolta.benchmarks import VideoQASpec
from video_llavolta.judge import (
    DEFAULT_JUDGE_MODEL,
    RUBRIC_VERSION,
    JudgeError,
    JudgeParseError,
    OfflineJudge,
    OpenAIJudge,
    judge_predictions,
    main,
    normalize_open_answer,
    parse_reply,
    print_results,
)
from video_llavolta.judge.cli import judge_model

SECRET = "sk-test-SECRET-5f1e"
KEY_ENV = "LLAVOLTA_TEST_JUDGE_KEY"
MODEL = "judge-model-2024-01-01"
FAKE_SERVER = os.path.join(os.path.dirname(__file__), "fake_openai.py")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_jsonl(path, records):
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


@pytest.mark.parametrize(
    "reply,expected",
    [
        ('{"pred": "yes", "score": 4}', (True, 4)),
        ("{'pred': 'no', 'score': 1}", (False, 1)),
        ('Here you go:\n```json\n{"pred": "Yes", "score": 5}\n```', (True, 5)),
        ('{"pred": "yes", "score": 3.6}', (True, 4)),
        ('{"pred": "no", "score": 2.5}', (False, 3)),  # half up, not Python's round-half-even (2)
        ('{"pred": "yes", "score": "2"}', (True, 2)),
        ('{"PRED": true, "Score": 0}', (True, 0)),
        ("pred: no, score: 0", (False, 0)),
    ],
)
def test_replies_are_parsed_as_json_dicts_or_literals(reply, expected):
    assert parse_reply(reply) == expected


@pytest.mark.parametrize(
    "reply",
    [
        "The answers match.",
        "",
        '{"pred": "maybe", "score": 3}',
        '{"pred": "yes", "score": 7}',
        '{"pred": "yes"}',
        '{"pred": "yes", "score": "high"}',
        "{'pred': 'yes', 'score': __import__('os')}",
        '["yes", 4]',
    ],
)
def test_unusable_replies_are_parse_errors(reply):
    with pytest.raises(JudgeParseError):
        parse_reply(reply)


def test_offline_judges():
    assert normalize_open_answer("The Red, car!") == "red car"
    assert normalize_open_answer("Two") == normalize_open_answer("2") == "2"
    assert normalize_open_answer("twenty") == "20" and normalize_open_answer("none") == "none"  # unlike VQA's
    items = [("q", "red", "Red."), ("q", "two", "2"), ("q", "a dog", "dog"), ("q", "dog", "cat"), ("q", "dog", " dog ")]
    normalized = [(j.match, j.score) for j in OfflineJudge("normalized").judge_many(items)]
    exact = [(j.match, j.score) for j in OfflineJudge("exact").judge_many(items)]
    assert normalized == [(True, 5), (True, 5), (True, 5), (False, 0), (True, 5)]
    assert exact == [(False, 0), (False, 0), (False, 0), (False, 0), (True, 5)]
    with pytest.raises(ValueError, match="mode"):
        OfflineJudge("fuzzy")


def test_offline_results_count_types_and_missing(tmp_path, capsys):
    preds = tmp_path / "synthetic.jsonl"
    write_jsonl(
        preds,
        [
            {"question_id": 1, "question": "q1", "answer": "two", "pred": "2", "type": "count"},
            {"question_id": 2, "question": "q2", "answer": "three", "pred": "one", "type": "count"},
            {"question_id": 3, "question": "q3", "answer": "red", "pred": "the red", "type": "colour"},
        ],
    )
    write_jsonl(
        failures_path(preds),
        [
            {
                "question_id": 4,
                "question": "q4",
                "answer": "up",
                "type": "direction",
                "reason": "VideoDecodeError: broken",
            }
        ],
    )
    results = judge_predictions(preds, OfflineJudge("normalized"), tmp_path / "results.json")
    assert results == json.loads((tmp_path / "results.json").read_text())
    overall = results["overall"]
    assert (overall["questions"], overall["judged"], overall["missing"], overall["yes"]) == (4, 3, 1, 2)
    assert overall["accuracy"] == pytest.approx(2 / 3) and overall["score"] == pytest.approx(10 / 3)
    assert results["by_type"]["count"]["accuracy"] == pytest.approx(0.5)
    assert results["by_type"]["colour"]["accuracy"] == 1.0
    assert results["by_type"]["direction"] == {
        "questions": 1,
        "judged": 0,
        "yes": 0,
        "accuracy": None,
        "score": None,
        "parse_failures": 0,
        "api_errors": 0,
        "missing": 1,
    }
    assert results["by_benchmark"]["synthetic"]["judged"] == 3
    assert results["comparable_with_gpt_judged"] is False and "NOT comparable" in results["note"]
    assert results["problems"]["missing"] == [
        {"benchmark": "synthetic", "question_id": 4, "error": "VideoDecodeError: broken"}
    ]
    judgments = [json.loads(line) for line in open(results["judgments"])]
    assert [(j["question_id"], j["status"]) for j in judgments] == [
        (1, "judged"),
        (2, "judged"),
        (3, "judged"),
        (4, "missing"),
    ]
    print_results(results)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "judge: offline-normalized" and "NOT comparable" in lines[1]
    assert lines[2].split() == ["questions", "judged", "accuracy", "score", "parse", "fail", "api", "errors", "missing"]
    assert [line.split() for line in lines[4:8]] == [  # by benchmark, then by type; no "overall" for one benchmark
        ["synthetic", "4", "3", "66.7%", "3.33", "0", "0", "1"],
        ["colour", "1", "1", "100.0%", "5.00", "0", "0", "0"],
        ["count", "2", "2", "50.0%", "2.50", "0", "0", "0"],
        ["direction", "1", "0", "-", "-", "0", "0", "1"],
    ]
    assert lines[8:] == ["missing: 1 (4)"]


def test_cli_checks_references_against_the_qa_file(tmp_path, capsys):
    preds, qa = tmp_path / "preds.jsonl", tmp_path / "qa.jsonl"
    write_jsonl(preds, [{"question_id": "a", "question": "q", "answer": "yes", "pred": "yes"}])
    write_jsonl(
        qa,
        [
            {"question_id": "a", "video": "v.mp4", "question": "q", "answer": "yes"},
            {"question_id": "b", "video": "v.mp4", "question": "q2", "answer": "no"},
        ],
    )
    out = tmp_path / "results.json"
    assert main(["--predictions", str(preds), "--qa", str(qa), "--judge", "offline-exact", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["overall"]["missing"] == 1 and results["overall"]["accuracy"] == 1.0
    assert results["problems"]["missing"][0]["question_id"] == "b"
    write_jsonl(qa, [{"question_id": "a", "video": "v.mp4", "question": "q", "answer": "no"}])
    assert main(["--predictions", str(preds), "--qa", str(qa), "--judge", "offline-exact", "--out", str(out)]) == 2
    assert "another QA file" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# The OpenAI judge against a local server

YES4 = '{"pred": "yes", "score": 4}'
SCRIPT = {
    "case-normal": [{"reply": YES4}],
    "case-pydict": [{"reply": "Sure! {'pred': 'no', 'score': 1}"}],
    "case-float": [{"reply": '{"pred": "yes", "score": 3.6}'}],
    "case-garbage": [{"reply": "They look alike to me."}],
    "case-flaky-parse": [{"reply": "hmm"}, {"reply": '{"pred": "no", "score": 0}'}],
    "case-429": [{"status": 429, "headers": {"Retry-After": "1"}}, {"reply": '{"pred": "yes", "score": 5}'}],
    "case-500": [{"status": 500}, {"status": 503}, {"reply": '{"pred": "yes", "score": 3}'}],
    "case-hang": [{"hang": 1.5, "reply": YES4}, {"reply": '{"pred": "no", "score": 2}'}],
    "case-down": [{"status": 500}],
    "case-400": [{"status": 400}],
}
# (question id, type, marker): the prediction text carries the marker the server plays
ITEMS = [
    (1, "a", "case-normal"),
    (2, "a", "case-pydict"),
    (3, "a", "case-float"),
    (4, "a", "case-garbage"),
    (5, "a", "case-normal"),
    (6, "b", "case-flaky-parse"),
    (7, "b", "case-429"),
    (8, "b", "case-500"),
    (9, "b", "case-hang"),
    (10, "b", "case-down"),
    (11, "b", "case-400"),
]
# HTTP requests each marker costs, with max_retries=2 and max_parse_retries=2: the client retries 429 / 5xx /
# timeouts (case-429, -500, -hang, -down), the judge re-asks unreadable replies (case-garbage, -flaky-parse), a 400
# is neither; 1 and 5 are one item, asked once.
EXPECTED_REQUESTS = {
    "case-normal": 1,
    "case-pydict": 1,
    "case-float": 1,
    "case-garbage": 3,
    "case-flaky-parse": 2,
    "case-429": 2,
    "case-500": 3,
    "case-hang": 2,
    "case-down": 3,
    "case-400": 1,
}


@pytest.fixture(autouse=True)
def fast_client_backoff(monkeypatch):
    """The openai client's own backoff base (0.5 s, doubling) at 1 ms, so its retries don't slow the suite."""
    import openai._base_client

    monkeypatch.setattr(openai._base_client, "INITIAL_RETRY_DELAY", 0.001)


@pytest.fixture
def server():
    fake = FakeOpenAI(SCRIPT).start()
    yield fake
    fake.stop()


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)


def make_judge(url, cache, **kw):
    kw = {"concurrency": 4, "max_retries": 2, "max_parse_retries": 2, "timeout": 0.5, **kw}
    return OpenAIJudge(MODEL, url, KEY_ENV, cache_path=cache, **kw)


def test_openai_judge_scores_retries_and_caches(tmp_path, server, api_key, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    preds, missing = tmp_path / "preds.jsonl", tmp_path / "preds.failures.jsonl"
    write_jsonl(
        preds,
        [
            {"question_id": i, "type": t, "question": "What is shown?", "answer": "a cat", "pred": f"a cat ({m})"}
            for i, t, m in ITEMS
        ],
    )
    write_jsonl(missing, [{"question_id": 12, "type": "b", "question": "q", "answer": "x", "reason": "no video"}])
    cache = tmp_path / "cache.jsonl"
    results = judge_predictions(preds, make_judge(server.url, cache), tmp_path / "results.json")

    assert {m: server.count(m) for m in SCRIPT} == EXPECTED_REQUESTS
    assert all(r["temperature"] == 0 and r["model"] == MODEL for r in server.requests)
    assert all(r["auth"] == f"Bearer {SECRET}" for r in server.requests)

    def retry_counts(marker):
        return [r["retry_count"] for r in server.requests if r["marker"] == marker]

    # Transport failures are the client's retries of one request; unreadable replies are new requests of ours.
    assert retry_counts("case-500") == retry_counts("case-down") == ["0", "1", "2"]
    assert retry_counts("case-hang") == retry_counts("case-429") == ["0", "1"]
    assert retry_counts("case-garbage") == ["0", "0", "0"] and retry_counts("case-400") == ["0"]
    times = [r["time"] for r in server.requests if r["marker"] == "case-429"]
    assert times[1] - times[0] >= 0.95  # Retry-After: 1 honoured, although the client's backoff is 1 ms here
    assert (results["judge"]["requests"], results["judge"]["parse_retries"]) == (13, 3)  # 19 HTTP requests

    # judged: 1 yes4, 2 no1, 3 yes4, 5 yes4 (same item as 1), 6 no0, 7 yes5, 8 yes3, 9 no2
    overall = results["overall"]
    assert (overall["questions"], overall["judged"], overall["yes"]) == (12, 8, 5)
    assert overall["accuracy"] == pytest.approx(5 / 8) and overall["score"] == pytest.approx(23 / 8)
    assert (overall["parse_failures"], overall["api_errors"], overall["missing"]) == (1, 2, 1)
    a, b = results["by_type"]["a"], results["by_type"]["b"]
    assert (a["judged"], a["accuracy"], a["score"], a["parse_failures"]) == (4, 0.75, 13 / 4, 1)
    assert (b["judged"], b["accuracy"], b["score"], b["api_errors"], b["missing"]) == (4, 0.5, 10 / 4, 2, 1)
    assert [p["question_id"] for p in results["problems"]["parse_failure"]] == [4]
    assert results["problems"]["parse_failure"][0]["reply"] == "They look alike to me."
    assert sorted(p["question_id"] for p in results["problems"]["api_error"]) == [10, 11]
    errors = {p["question_id"]: p["error"] for p in results["problems"]["api_error"]}
    assert errors[10].startswith("HTTP 500") and errors[11].startswith("HTTP 400")
    assert results["judge"]["model"] == MODEL and results["judge"]["reported_models"] == [f"{MODEL}-served"]
    assert results["judge"]["temperature"] == 0 and results["comparable_with_gpt_judged"] is True

    # Final outcomes are cached (parse failure included), API errors are not: a rerun asks only for those.
    cached = [json.loads(line) for line in open(cache)]
    assert len(cached) == 8 and len({c["key"] for c in cached}) == 8
    before = len(server.requests)
    again = judge_predictions(preds, make_judge(server.url, cache), tmp_path / "results2.json")
    assert Counter(r["marker"] for r in server.requests[before:]) == {"case-down": 3, "case-400": 1}
    assert again["overall"] == overall and again["judge"]["cache_hits"] == 9

    print_results(again)
    written = [tmp_path / n for n in ("results.json", "results2.json", "results.judgments.jsonl", "cache.jsonl")]
    seen = "".join(p.read_text() for p in written) + caplog.text + "".join(capsys.readouterr())
    assert SECRET not in seen and KEY_ENV in results["judge"]["api_key_env"]


def test_retries_are_bounded_by_the_client_setting(tmp_path, api_key):
    fake = FakeOpenAI({"Question:": [{"status": 503}]}).start()
    try:
        for max_retries in (0, 3):
            judge = make_judge(fake.url, tmp_path / f"cache{max_retries}.jsonl", max_retries=max_retries)
            before = len(fake.requests)
            [judgment] = judge.judge_many([("q", "a", f"p{max_retries}")])
            assert judgment.status == "api_error" and "HTTP 503" in judgment.error
            assert [r["retry_count"] for r in fake.requests[before:]] == [str(n) for n in range(max_retries + 1)]
            assert not os.path.exists(tmp_path / f"cache{max_retries}.jsonl")  # an API error is not cached
    finally:
        fake.stop()


@pytest.mark.parametrize("status,error", [(401, KEY_ENV), (403, f"{MODEL!r}: HTTP 403"), (404, f"{MODEL!r}: HTTP 404")])
def test_rejected_key_or_model_stops_at_once(tmp_path, api_key, status, error):
    fake = FakeOpenAI({"Question:": [{"status": status}]}).start()
    try:
        judge = make_judge(fake.url, tmp_path / "cache.jsonl", concurrency=1)
        with pytest.raises(JudgeError, match=error) as err:
            judge.judge_many([("q", "a", f"p{i}") for i in range(4)])
        assert len(fake.requests) == 1 and SECRET not in str(err.value)  # neither retried nor asked again
    finally:
        fake.stop()


def test_key_comes_from_the_environment(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ValueError, match=KEY_ENV):
        make_judge("http://127.0.0.1:9/v1", tmp_path / "c.jsonl")
    monkeypatch.setenv(KEY_ENV, SECRET)
    with caplog.at_level(logging.WARNING):
        OpenAIJudge(DEFAULT_JUDGE_MODEL, api_key_env=KEY_ENV, cache_path=tmp_path / "c.jsonl")
        assert "moving alias" not in caplog.text
        OpenAIJudge("gpt-4o", api_key_env=KEY_ENV, cache_path=tmp_path / "c.jsonl")
        assert "moving alias" in caplog.text


def start_server(tmp_path, name, port=0, die_after=None):
    port_file = tmp_path / f"{name}.port"
    cmd = [
        sys.executable,
        FAKE_SERVER,
        "--port",
        str(port),
        "--port-file",
        str(port_file),
        "--log",
        str(tmp_path / "replies.jsonl"),
    ] + ([] if die_after is None else ["--die-after", str(die_after)])
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + 20
    while not port_file.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "fake server did not start"
        time.sleep(0.02)
    return proc, int(port_file.read_text())


def test_server_killed_mid_run_then_restarted(tmp_path, api_key):
    preds = tmp_path / "preds.jsonl"
    write_jsonl(
        preds,
        [{"question_id": i, "question": f"question {i}", "answer": "yes", "pred": f"answer {i}"} for i in range(12)],
    )
    cache = tmp_path / "cache.jsonl"
    proc, port = start_server(tmp_path, "first", die_after=5)
    try:
        first = judge_predictions(
            preds, make_judge(f"http://127.0.0.1:{port}/v1", cache, concurrency=2), tmp_path / "first.json"
        )
        assert proc.wait(timeout=10) == 1  # it died on its 6th request
    finally:
        proc.kill()
    assert (first["overall"]["judged"], first["overall"]["api_errors"]) == (5, 7)
    assert len(first["problems"]["api_error"]) == 7
    assert len(open(cache).readlines()) == 5

    proc, _ = start_server(tmp_path, "second", port=port)
    try:
        second = judge_predictions(
            preds, make_judge(f"http://127.0.0.1:{port}/v1", cache, concurrency=2), tmp_path / "second.json"
        )
    finally:
        proc.kill()
        proc.wait()
    assert second["overall"] == {
        "questions": 12,
        "judged": 12,
        "yes": 12,
        "accuracy": 1.0,
        "score": 4.0,
        "parse_failures": 0,
        "api_errors": 0,
        "missing": 0,
    }
    answered = Counter(json.loads(line)["user"] for line in open(tmp_path / "replies.jsonl"))
    assert len(answered) == 12 and set(answered.values()) == {1}  # each judged exactly once over both servers
    assert second["judge"]["cache_hits"] == 5 and len(open(cache).readlines()) == 12


# ---------------------------------------------------------------------------------------------------
# Judge settings from the benchmarks' specs


def test_specs_pin_the_judge_model_and_rubric(tmp_path, server, api_key, capsys):
    with open(os.path.join(REPO, "configs", "benchmarks", "msvd_qa.yaml")) as f:
        pinned = yaml.safe_load(f)["judge"]["model"]
    preds = tmp_path / "preds.jsonl"
    write_jsonl(preds, [{"question_id": 1, "question": "q", "answer": "a", "pred": "a"}])
    common = ["--judge", "openai", "--base-url", server.url, "--api-key-env", KEY_ENV, "--max-retries", "0"]

    def judged_with(*args):
        out = tmp_path / f"results{len(server.requests)}.json"
        code = main(["--out", str(out), *common, *args])
        return code, (json.loads(out.read_text()) if code == 0 else capsys.readouterr().err)

    code, results = judged_with("--predictions", f"msvd={preds}")  # a shipped spec's name
    assert code == 0 and server.requests[-1]["model"] == pinned == results["judge"]["model"]
    assert results["specs"]["msvd"]["split"] == "test" and list(results["by_benchmark"]) == ["msvd"]
    code, results = judged_with("--predictions", f"msvd={preds}", "--model", MODEL)
    assert code == 0 and server.requests[-1]["model"] == MODEL
    code, results = judged_with("--predictions", f"mine={preds}")  # no spec: a label, the default model
    assert code == 0 and server.requests[-1]["model"] == DEFAULT_JUDGE_MODEL and results["specs"] == {}

    spec = tmp_path / "custom_qa.yaml"
    spec.write_text("kind: video_qa\nname: custom\njudge: {model: custom-judge-2030-01-01, rubric: qa-match-v1}\n")
    code, results = judged_with("--predictions", str(preds), "--benchmark", str(spec))
    assert code == 0 and server.requests[-1]["model"] == "custom-judge-2030-01-01"
    assert list(results["by_benchmark"]) == ["custom"]
    spec.write_text("kind: video_qa\nname: custom\njudge: {model: m-2030-01-01, rubric: qa-match-v0}\n")
    asked = len(server.requests)
    code, err = judged_with("--predictions", str(preds), "--benchmark", str(spec))
    assert code == 2 and "rubric 'qa-match-v0'" in err and "'qa-match-v1'" in err and len(server.requests) == asked


def test_benchmarks_pinning_different_judges_need_a_choice():
    one = VideoQASpec("one", judge={"model": "judge-a-2030-01-01", "rubric": RUBRIC_VERSION})
    two = VideoQASpec("two", judge={"model": "judge-b-2030-01-01", "rubric": RUBRIC_VERSION})
    with pytest.raises(ValueError, match="pin different judge models"):
        judge_model({"one": one, "two": two})
    assert judge_model({"one": one, "two": two}, "judge-c-2030-01-01") == "judge-c-2030-01-01"
    assert judge_model({"one": one, "free": VideoQASpec("free")}) == "judge-a-2030-01-01"
    assert judge_model({}) == DEFAULT_JUDGE_MODEL


def test_the_judge_imports_neither_torch_nor_transformers():
    code = (
        "import sys, video_llavolta.judge, data_prep.qa; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers'}))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert run.stdout.strip() == "[]"
