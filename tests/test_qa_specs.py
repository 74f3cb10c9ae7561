"""Video QA benchmark specs: the shipped three pinned to upstream's evaluation, spec errors, the unified QA reader."""

import json
import os

import pytest

from video_llavolta.benchmarks import VideoQASpec, load_qa_spec, qa_spec_files, read_qa
from video_llavolta.judge import RUBRIC_VERSION

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What Video-LLaVA's videollava/eval/video/run_inference_video_qa.py (MSVD, MSRVTT) and run_inference_video_qa_act.py
# (ActivityNet) do: the file tried is os.path.join(video_dir, f"{video_name}{fmt}") (ActivityNet: f"v_{video_name}...")
# for fmt in these, in order; the user turn is the frames' tokens, "\n", the question; max_new_tokens=1024.
UPSTREAM_FORMATS = [".mp4", ".avi", ".mov", ".mkv"]
UPSTREAM_PREFIX = {"msvd": "", "msrvtt": "", "activitynet": "v_"}
# MILVLG/activitynet-qa dataset/README.md: question types 0-2, answer types of the free questions 3-8.
ACTIVITYNET_TYPES = [
    "motion",
    "spatial_relation",
    "temporal_relation",
    "yes_no",
    "color",
    "object",
    "location",
    "number",
    "other",
]


def test_shipped_specs_follow_upstream():
    files = qa_spec_files()
    assert set(files) == set(UPSTREAM_PREFIX)
    for name, path in files.items():
        spec = load_qa_spec(name)
        assert os.path.basename(path) == f"{name}_qa.yaml" and spec == load_qa_spec(path)
        assert spec.split == "test" and (spec.questions_file, spec.answers_file) == ("test_q.json", "test_a.json")
        assert (spec.id_field, spec.video_field, spec.question_field, spec.answer_field) == (
            "question_id",
            "video_name",
            "question",
            "answer",
        )
        assert spec.video_file_stem("abc") == UPSTREAM_PREFIX[name] + "abc"
        assert list(spec.video_extensions[:4]) == UPSTREAM_FORMATS
        assert spec.render("what is the man doing?") == "<video>\nwhat is the man doing?"
        assert spec.max_new_tokens == 1024 and spec.template is None
        assert spec.judge.rubric == RUBRIC_VERSION and spec.judge.model.startswith("gpt-3.5-turbo-")
    activitynet = load_qa_spec("activitynet")
    assert activitynet.type_field == "type"
    assert [activitynet.type_name(i) for i in range(9)] == ACTIVITYNET_TYPES
    assert load_qa_spec("msvd").type_field is None and load_qa_spec("msrvtt").type_field is None


def test_a_spec_needs_only_a_name(tmp_path):
    spec = load_qa_spec(write(tmp_path / "mini_qa.yaml", "kind: video_qa\nname: mini\n"))
    assert spec == VideoQASpec("mini") and spec.judge is None and spec.render("q") == "<video>\nq"
    assert json.loads(json.dumps(spec.to_dict()))["video_extensions"] == [".mp4", ".avi", ".mov", ".mkv", ".webm"]


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def test_unified_qa_reader(tmp_path):
    path = tmp_path / "qa.jsonl"
    records = [{"question_id": i, "video": f"v{i}.mp4", "question": "q", "answer": "a"} for i in range(3)]
    write(path, "".join(json.dumps(r) + "\n" for r in records))
    assert read_qa(path) == records and read_qa(path, limit=2) == records[:2]
    with pytest.raises(ValueError, match="limit must be >= 1"):
        read_qa(path, limit=0)
    write(path, json.dumps(records[0]) + "\n" + json.dumps({**records[1], "question_id": "0"}) + "\n")
    with pytest.raises(ValueError, match="question id '0' appears more than once"):  # ids compared as strings
        read_qa(path)
    write(path, json.dumps({"question_id": 1, "question": "q", "answer": "a"}) + "\n")
    with pytest.raises(ValueError, match=r"record 1 lacks \['video'\]"):
        read_qa(path)
    write(path, "")
    with pytest.raises(ValueError, match="no questions"):
        read_qa(path)
