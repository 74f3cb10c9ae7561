"""convert-qa: join by question_id, duplicates, orphans, missing videos, ActivityNet's prefix, extensions."""

from __future__ import annotations

import pytest
from prep_helpers import cli, read_json, read_jsonl, write_json

from data_prep.cli import main
from data_prep.qa import BENCHMARKS, QASpec, convert_qa


def touch(path) -> None:
    """An empty file standing in for a video (convert-qa only looks the file up)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


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
    videos = tmp_path / "videos"
    touch(videos / "v_abc.mp4")
    touch(videos / "xyz.mkv")  # no v_ prefix: not an ActivityNet file name
    touch(videos / "v_xyz.webm")
    touch(videos / "abc.mp4")  # decoy without the prefix
    qa_dir = tmp_path / "qa"
    qa_dir.mkdir()
    write_json(qa_dir / "test_q.json", [
        {"video_name": "abc", "question_id": "a1", "question": "q1"},
        {"video_name": "xyz", "question_id": "a2", "question": "q2"},
        {"video_name": "nope", "question_id": "a3", "question": "q3"},
    ])
    write_json(qa_dir / "test_a.json", [
        {"question_id": "a3", "answer": "x3"},
        {"question_id": "a2", "answer": "x2"},
        {"question_id": "a1", "answer": "x1"},
    ])
    assert BENCHMARKS["activitynet"].video_prefix == "v_"
    result, out_path, _ = convert_qa("activitynet", qa_dir, videos, tmp_path / "out")
    assert [(r["question_id"], r["video"], r["answer"]) for r in read_jsonl(out_path)] == [
        ("a1", "v_abc.mp4", "x1"), ("a2", "v_xyz.webm", "x2"),
    ]
    assert [m["question_id"] for m in result.problems["missing_videos"]] == ["a3"]
    assert result.problems["missing_videos"][0]["looked_for"].startswith("v_nope{")


def test_custom_spec_extensions(tmp_path):
    videos = tmp_path / "videos"
    touch(videos / "a.mp4")
    touch(videos / "a.avi")
    qa_dir = tmp_path / "qa"
    qa_dir.mkdir()
    write_json(qa_dir / "q.json", [{"video_name": "a", "question_id": 1, "question": "q"}])
    write_json(qa_dir / "a.json", [{"question_id": 1, "answer": "x"}])
    spec = QASpec(questions_file="q.json", answers_file="a.json", extensions=(".avi",))
    result, out_path, _ = convert_qa("mine", qa_dir, videos, tmp_path / "out", spec=spec)
    assert read_jsonl(out_path)[0]["video"] == "a.avi" and result.num_problems == 0


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
    args = ["convert-qa", "--benchmark", "msvd", "--qa-dir", str(tmp_path), "--video-root", str(tmp_path / "videos"),
            "--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "test_q.json" in err and "expected a JSON list" in err
    (tmp_path / "test_q.json").write_text("[{")
    assert main(args) == 2
    assert "not valid JSON" in capsys.readouterr().err
