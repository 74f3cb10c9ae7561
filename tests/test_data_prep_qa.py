"""convert-qa: join by question_id, duplicates, orphans, missing videos, ActivityNet's prefix and types, extensions."""

from __future__ import annotations

import os

import pytest
from prep_helpers import cli, read_json, read_jsonl, write_json

from data_prep.cli import main
from data_prep.qa import convert_qa
from video_llavolta.benchmarks import VideoQASpec, load_qa_spec


def touch(path) -> None:
    """An empty file standing in for a video (convert-qa only looks the file up)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def source(root, videos: list[str], questions: list, answers: list, names=("test_q.json", "test_a.json")):
    """A benchmark source under `root`: empty video files in videos/, the two JSON files in qa/."""
    for name in videos:
        touch(root / "videos" / name)
    qa_dir = root / "qa"
    qa_dir.mkdir()
    write_json(qa_dir / names[0], questions)
    write_json(qa_dir / names[1], answers)
    return qa_dir, root / "videos"


@pytest.fixture
def msvd(tmp_path):
    """An MSVD-style source with one of every problem; returns (qa_dir, video_root)."""
    videos = tmp_path / "videos"
    for name in ["cat.avi", "dog.mp4", "sub/bird.MOV", "fish.webm", "amb.mp4", "amb.avi", "notes.txt"]:
        touch(videos / name)
    questions = [
        {"video_name": "cat", "question_id": 1, "question": "what is the cat doing?"},
        {"video_name": "dog", "question_id": "2", "question": "what colour is the dog?"},
        {"video_name": "bird", "question_id": 3, "question": "where is the bird?"},
        {"video_name": "fish", "question_id": 4, "question": "first version"},
        {"video_name": "fish", "question_id": 4, "question": "second version"},  # conflicting duplicate
        {"video_name": "cat", "question_id": 5, "question": "a question nobody answered"},  # orphan
        {"video_name": "ghost", "question_id": 6, "question": "where is the video?"},  # missing video
        {"video_name": "amb", "question_id": 7, "question": "which file?"},  # amb.mp4 and amb.avi
        {"video_name": "dog", "question_id": 8, "question": "is it identical?"},
        {"video_name": "dog", "question_id": "8", "question": "is it identical?"},  # identical copy
        {"video_name": "dog", "question": "no id here"},  # malformed
    ]
    answers = [  # a different order from the questions: a positional join would pair them wrongly
        {"question_id": 8, "answer": "yes"},
        {"question_id": 7, "answer": "mp4"},
        {"question_id": 99, "answer": "an answer without a question"},  # orphan
        {"question_id": 3, "answer": "tree"},
        {"question_id": 2, "answer": "brown"},  # int here, str in test_q.json
        {"question_id": 6, "answer": "nowhere"},
        {"question_id": 4, "answer": "fish"},
        {"question_id": "1", "answer": "sleeping"},
        {"question_id": 3, "answer": "grass"},  # conflicting duplicate answer for 3
    ]
    qa_dir = tmp_path / "qa"
    qa_dir.mkdir()
    write_json(qa_dir / "test_q.json", questions)
    write_json(qa_dir / "test_a.json", answers)
    return qa_dir, videos


def test_join_and_problems(msvd, tmp_path):
    qa_dir, videos = msvd
    result, out_path, report_path = convert_qa("msvd", qa_dir, videos, tmp_path / "out")
    records = read_jsonl(out_path)
    assert records == [
        {"question_id": 1, "video": "cat.avi", "question": "what is the cat doing?", "answer": "sleeping"},
        {"question_id": "2", "video": "dog.mp4", "question": "what colour is the dog?", "answer": "brown"},
        {"question_id": 7, "video": "amb.mp4", "question": "which file?", "answer": "mp4"},
        {"question_id": 8, "video": "dog.mp4", "question": "is it identical?", "answer": "yes"},
    ]
    report = read_json(report_path)
    problems = report["problems"]
    assert problems["duplicate_questions"] == [
        {"question_id": 4, "copies": 2, "identical": False, "kept": False},
        {"question_id": 8, "copies": 2, "identical": True, "kept": True},
    ]
    assert problems["duplicate_answers"] == [{"question_id": 3, "copies": 2, "identical": False, "kept": False}]
    assert problems["questions_without_answer"] == [5]
    assert problems["answers_without_question"] == [99]
    assert problems["missing_videos"] == [
        {"question_id": 6, "video_name": "ghost", "looked_for": "ghost{.mp4,.avi,.mov,.mkv,.webm}"}
    ]
    assert problems["ambiguous_videos"] == [{"question_id": 7, "candidates": ["amb.mp4", "amb.avi"], "used": "amb.mp4"}]
    assert problems["malformed_questions"] == [
        {"index": 10, "question_id": None, "reason": "missing field 'question_id'"}
    ]
    assert problems["malformed_answers"] == []
    assert report["counts"]["questions"] == 11 and report["counts"]["answers"] == 9 and report["counts"]["written"] == 4
    assert report["counts"]["missing_videos"] == 1
    # The bird question (3) is out because its answers conflict, not because the .MOV wasn't found.
    assert all(r["question_id"] != 3 for r in records)


def test_nested_and_uppercase_extension_is_found(msvd, tmp_path):
    qa_dir, videos = msvd
    write_json(qa_dir / "test_a.json", [{"question_id": 3, "answer": "tree"}])
    write_json(qa_dir / "test_q.json", [{"video_name": "bird", "question_id": 3, "question": "where?"}])
    result, out_path, _ = convert_qa("msrvtt", qa_dir, videos, tmp_path / "out")
    assert read_jsonl(out_path) == [{"question_id": 3, "video": "sub/bird.MOV", "question": "where?", "answer": "tree"}]
    assert result.num_problems == 0


def test_activitynet_prefix(tmp_path):
    # xyz.mkv has no v_ prefix (not an ActivityNet file name); abc.mp4 is a decoy without the prefix
    qa_dir, videos = source(
        tmp_path,
        ["v_abc.mp4", "xyz.mkv", "v_xyz.webm", "abc.mp4"],
        [
            {"video_name": "abc", "question_id": "a1", "question": "q1"},
            {"video_name": "xyz", "question_id": "a2", "question": "q2"},
            {"video_name": "nope", "question_id": "a3", "question": "q3"},
        ],
        [
            {"question_id": "a3", "answer": "x3"},
            {"question_id": "a2", "answer": "x2"},
            {"question_id": "a1", "answer": "x1"},
        ],
    )
    assert load_qa_spec("activitynet").video_prefix == "v_"
    result, out_path, _ = convert_qa("activitynet", qa_dir, videos, tmp_path / "out")
    assert [(r["question_id"], r["video"], r["answer"]) for r in read_jsonl(out_path)] == [
        ("a1", "v_abc.mp4", "x1"),
        ("a2", "v_xyz.webm", "x2"),
    ]
    assert [m["question_id"] for m in result.problems["missing_videos"]] == ["a3"]
    assert result.problems["missing_videos"][0]["looked_for"].startswith("v_nope{")


def test_custom_spec_extensions(tmp_path):
    qa_dir, videos = source(
        tmp_path,
        ["a.mp4", "a.avi"],
        [{"video_name": "a", "question_id": 1, "question": "q"}],
        [{"question_id": 1, "answer": "x"}],
        names=("q.json", "a.json"),
    )
    spec = VideoQASpec("mine", questions_file="q.json", answers_file="a.json", video_extensions=(".avi",))
    result, out_path, _ = convert_qa(spec, qa_dir, videos, tmp_path / "out")
    assert read_jsonl(out_path)[0]["video"] == "a.avi" and result.num_problems == 0
    assert out_path == str(tmp_path / "out" / "mine_qa.jsonl")


def test_activitynet_upstream_layout_and_question_types(tmp_path):
    """Entries as MILVLG/activitynet-qa's dataset/test_q.json and test_a.json have them (type 3: yes/no)."""
    qa_dir, videos = source(
        tmp_path,
        ["v_1QIUV7WYKXg.mp4", "v_9eniCub7u60.mkv"],
        [
            {
                "video_name": "1QIUV7WYKXg",
                "question": "is the athlete wearing trousers",
                "question_id": "v_1QIUV7WYKXg_3",
            },
            {
                "video_name": "9eniCub7u60",
                "question": "does the girl in black clothes have long hair",
                "question_id": "v_9eniCub7u60_2",
            },
        ],
        [
            {"answer": "yes", "type": 3, "question_id": "v_9eniCub7u60_2"},
            {"answer": "no", "type": 3, "question_id": "v_1QIUV7WYKXg_3"},
        ],
    )
    result, out_path, report_path = convert_qa("activitynet", qa_dir, videos, tmp_path / "out")
    assert read_jsonl(out_path) == [
        {
            "question_id": "v_1QIUV7WYKXg_3",
            "video": "v_1QIUV7WYKXg.mp4",
            "question": "is the athlete wearing trousers",
            "answer": "no",
            "type": "yes_no",
        },
        {
            "question_id": "v_9eniCub7u60_2",
            "video": "v_9eniCub7u60.mkv",
            "question": "does the girl in black clothes have long hair",
            "answer": "yes",
            "type": "yes_no",
        },
    ]
    report = read_json(report_path)
    assert result.num_problems == 0 and report["benchmark"] == "activitynet" and report["split"] == "test"


def test_spec_file_fields_rename_the_source_fields(tmp_path):
    """A spec by path, with other field names, a prefix and an unnamed type value kept as it is."""
    touch(tmp_path / "videos" / "clip-7.avi")
    write_json(tmp_path / "q.json", [{"vid": "7", "qid": 1, "text": "what?"}, {"vid": "7", "qid": 2, "text": "who?"}])
    write_json(
        tmp_path / "a.json",
        [
            {"qid": 1, "reply": "x", "kind": "k1"},
            {"qid": 2, "reply": "y", "kind": 9},
            {"qid": 3, "reply": "z", "kind": True},
        ],
    )
    spec = tmp_path / "mine_qa.yaml"
    spec.write_text(
        "kind: video_qa\nname: mine\nquestions_file: q.json\nanswers_file: a.json\nid_field: qid\n"
        "video_field: vid\nquestion_field: text\nanswer_field: reply\ntype_field: kind\n"
        "type_names: {k1: first}\nvideo_prefix: clip-\n"
    )
    result, out_path, _ = convert_qa(str(spec), tmp_path, tmp_path / "videos", tmp_path / "out")
    assert read_jsonl(out_path) == [
        {"question_id": 1, "video": "clip-7.avi", "question": "what?", "answer": "x", "type": "first"},
        {"question_id": 2, "video": "clip-7.avi", "question": "who?", "answer": "y", "type": 9},
    ]
    assert result.problems["malformed_answers"] == [
        {"index": 2, "question_id": 3, "reason": "field 'kind' is bool, expected int or str"}
    ]


def test_malformed_answers_are_reported(tmp_path):
    (tmp_path / "videos").mkdir()
    touch(tmp_path / "videos" / "a.mp4")
    write_json(tmp_path / "test_q.json", [{"video_name": "a", "question_id": 1, "question": "q"}])
    answers = [{"question_id": 1, "answer": 3}, {"question_id": True, "answer": "x"}, "junk"]
    write_json(tmp_path / "test_a.json", answers)
    result, out_path, _ = convert_qa("msvd", tmp_path, tmp_path / "videos", tmp_path / "out")
    assert read_jsonl(out_path) == []
    assert [(m["index"], m["reason"]) for m in result.problems["malformed_answers"]] == [
        (0, "field 'answer' is int, expected str"),
        (1, "field 'question_id' is bool, expected int or str"),
        (2, "expected an object, got str"),
    ]
    assert result.problems["questions_without_answer"] == [1]


def test_cli_strict_and_summary(msvd, tmp_path):
    qa_dir, videos = msvd
    args = ["convert-qa", "--benchmark", "msvd", "--qa-dir", qa_dir, "--video-root", videos, "--out", tmp_path / "o"]
    loose = cli(*args)
    assert loose.returncode == 0, loose.stderr
    assert "written" in loose.stdout and "missing videos" in loose.stdout
    assert cli(*args, "--strict").returncode == 1

    # A clean source passes --strict.
    write_json(qa_dir / "test_q.json", [{"video_name": "cat", "question_id": 1, "question": "q"}])
    write_json(qa_dir / "test_a.json", [{"question_id": 1, "answer": "a"}])
    assert main([str(a) for a in args] + ["--strict"]) == 0


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "videos").mkdir()
    write_json(tmp_path / "test_q.json", {"not": "a list"})
    write_json(tmp_path / "test_a.json", [])
    args = [
        "convert-qa",
        "--benchmark",
        "msvd",
        "--qa-dir",
        str(tmp_path),
        "--video-root",
        str(tmp_path / "videos"),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "test_q.json" in err and "expected a JSON list" in err
    (tmp_path / "test_q.json").write_text("[{")
    assert main(args) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_unknown_benchmark_lists_the_specs(tmp_path, capsys):
    (tmp_path / "videos").mkdir()
    args = [
        "convert-qa",
        "--benchmark",
        "msvdqa",
        "--qa-dir",
        str(tmp_path),
        "--video-root",
        str(tmp_path / "videos"),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args) == 2
    assert "no video_qa benchmark named 'msvdqa'" in (err := capsys.readouterr().err)
    assert "known: activitynet, msrvtt, msvd" in err
    gqa = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "benchmarks", "gqa.yaml")
    assert main(args[:2] + [gqa] + args[3:]) == 2  # an image spec is not a QA spec
    assert "kind 'image', expected kind 'video_qa'" in capsys.readouterr().err
