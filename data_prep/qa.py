"""convert-qa: MSVD-QA, MSRVTT-QA and ActivityNet-QA (Video-ChatGPT layout) to one unified JSONL.

What a benchmark's files look like is its spec (`configs/benchmarks/<name>_qa.yaml`, `video_llavolta.benchmarks`):
the question and answer files, their field names, the video-name rule (ActivityNet's ``v_`` prefix) and the
extensions to try. Source layout, with the shipped specs' names::

    <qa_dir>/test_q.json   [{"video_name": str, "question_id": int | str, "question": str}, ...]
    <qa_dir>/test_a.json   [{"question_id": int | str, "answer": str, ["type": ...]}, ...]
    <video_root>/...       <prefix><video_name><ext>, anywhere below the root

Output, one line per usable question, in test_q.json's order::

    {"question_id": <as in test_q.json>, "video": <path relative to video_root>, "question": str, "answer": str}

plus "type" (named by the spec's type_names) when the spec has a type_field and the answer carries it.
Questions and answers are joined by question_id (compared as str, so 7 and "7" are the same id),
never by list position. Every problem is reported (counts and ids in the report JSON) and the
question it touches is left out: malformed entries, duplicate ids (identical copies are kept once
and listed as kept; conflicting copies are all dropped), questions without an answer, answers
without a question, and videos that are not found. A video name matching several files (``a.mp4``
and ``a.avi``) takes the first extension in the spec's order and is listed as ambiguous.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from data_prep.io import read_json_list
from image_llavolta.jsonio import write_json, write_jsonl
from video_llavolta.benchmarks import VideoQASpec, load_qa_spec

PROBLEMS = (
    "malformed_questions",
    "malformed_answers",
    "duplicate_questions",
    "duplicate_answers",
    "questions_without_answer",
    "answers_without_question",
    "missing_videos",
    "ambiguous_videos",
)


@dataclass
class QAResult:
    """Unified records plus everything that was wrong with the source."""

    records: list[dict]
    problems: dict[str, list] = field(default_factory=lambda: {name: [] for name in PROBLEMS})
    num_questions: int = 0
    num_answers: int = 0

    @property
    def num_problems(self) -> int:
        """Total number of reported problems (identical duplicates included)."""
        return sum(len(v) for v in self.problems.values())

    def report(self, **extra) -> dict:
        """The report JSON: inputs, counts and every problem with its ids."""
        counts = {"questions": self.num_questions, "answers": self.num_answers, "written": len(self.records)}
        counts.update({name: len(items) for name, items in self.problems.items()})
        return {**extra, "counts": counts, "problems": self.problems}

    def summary_rows(self) -> list[tuple[str, object]]:
        """(label, value) rows for the end-of-run table."""
        rows = [("questions", self.num_questions), ("answers", self.num_answers), ("written", len(self.records))]
        return rows + [(name.replace("_", " "), len(items)) for name, items in self.problems.items()]


def load_entries(path: str | os.PathLike) -> list:
    """Load a JSON list (test_q.json / test_a.json), or raise an error naming the file."""
    return read_json_list(path, "entries")


ID_TYPES = (int, str)


def _check_entry(entry, fields: dict[str, tuple[type, ...]], optional: dict[str, tuple[type, ...]]) -> str | None:
    """Why an entry is malformed (first reason), or None when it is fine; `optional` fields may be absent."""
    if not isinstance(entry, dict):
        return f"expected an object, got {type(entry).__name__}"
    for name, types in {**fields, **optional}.items():
        value = entry.get(name)
        if name not in entry:
            if name in optional:
                continue
            return f"missing field {name!r}"
        if isinstance(value, bool) or not isinstance(value, types):
            return f"field {name!r} is {type(value).__name__}, expected {' or '.join(t.__name__ for t in types)}"
        if isinstance(value, str) and not value.strip():
            return f"field {name!r} is empty"
    return None


def _unique_by_id(
    entries: list, id_field: str, fields: dict, optional: dict, kind: str, problems: dict
) -> tuple[dict[str, dict], set[str]]:
    """Well-formed entries keyed by str(id), and all ids seen; malformed/duplicate ones reported."""
    groups: dict[str, list[dict]] = {}
    for index, entry in enumerate(entries):
        reason = _check_entry(entry, fields, optional)
        if reason:
            qid = entry.get(id_field) if isinstance(entry, dict) else None
            problems[f"malformed_{kind}"].append({"index": index, "question_id": qid, "reason": reason})
        else:
            groups.setdefault(str(entry[id_field]), []).append(entry)
    unique = {}
    for key, group in groups.items():
        if len(group) == 1:
            unique[key] = group[0]
            continue
        # Copies that differ only in int-vs-str id are the same entry.
        identical = all({**e, id_field: key} == {**group[0], id_field: key} for e in group)
        problems[f"duplicate_{kind}"].append(
            {"question_id": group[0][id_field], "copies": len(group), "identical": identical, "kept": identical}
        )
        if identical:
            unique[key] = group[0]
    return unique, set(groups)


def index_videos(video_root: str | os.PathLike, extensions: tuple[str, ...]) -> dict[str, list[str]]:
    """File name without extension -> relative paths (posix) of the videos under video_root, best first."""
    rank = {ext.lower(): i for i, ext in enumerate(extensions)}
    found: dict[str, list[tuple[int, str]]] = {}
    for folder, dirs, files in os.walk(video_root):
        dirs.sort()
        for name in files:
            stem, ext = os.path.splitext(name)
            if ext.lower() in rank:
                rel = os.path.relpath(os.path.join(folder, name), video_root).replace(os.sep, "/")
                found.setdefault(stem, []).append((rank[ext.lower()], rel))
    return {stem: [rel for _, rel in sorted(items)] for stem, items in found.items()}


def join_qa(questions: list, answers: list, videos: dict[str, list[str]], spec: VideoQASpec) -> QAResult:
    """Join questions and answers by the spec's id field and resolve each video; every problem is reported."""
    result = QAResult(records=[], num_questions=len(questions), num_answers=len(answers))
    problems = result.problems
    qid, video = spec.id_field, spec.video_field
    q_unique, q_ids = _unique_by_id(
        questions, qid, {video: (str,), qid: ID_TYPES, spec.question_field: (str,)}, {}, "questions", problems
    )
    a_unique, a_ids = _unique_by_id(
        answers,
        qid,
        {qid: ID_TYPES, spec.answer_field: (str,)},
        {spec.type_field: ID_TYPES} if spec.type_field else {},
        "answers",
        problems,
    )

    for key in sorted(a_ids - q_ids, key=_natural):
        problems["answers_without_question"].append(_first_id(answers, qid, key))
    for key, q in q_unique.items():  # dicts keep test_q.json's order
        if key not in a_ids:
            problems["questions_without_answer"].append(q[qid])
            continue
        if key not in a_unique:  # its answer had conflicting duplicates: already reported
            continue
        stem = spec.video_file_stem(q[video])
        candidates = videos.get(stem, [])
        if not candidates:
            looked_for = stem + "{" + ",".join(spec.video_extensions) + "}"
            problems["missing_videos"].append({"question_id": q[qid], "video_name": q[video], "looked_for": looked_for})
            continue
        if len(candidates) > 1:
            problems["ambiguous_videos"].append(
                {"question_id": q[qid], "candidates": candidates, "used": candidates[0]}
            )
        answer = a_unique[key]
        record = {
            "question_id": q[qid],
            "video": candidates[0],
            "question": q[spec.question_field],
            "answer": answer[spec.answer_field],
        }
        if spec.type_field and spec.type_field in answer:
            record["type"] = spec.type_name(answer[spec.type_field])
        result.records.append(record)
    return result


def _first_id(entries: list, id_field: str, key: str):
    """The id, as written in the source, of the first entry whose id normalises to key."""
    return next(e[id_field] for e in entries if isinstance(e, dict) and str(e.get(id_field)) == key)


def _natural(key: str):
    """Sort numeric ids numerically and the rest as text."""
    return (0, int(key), "") if key.lstrip("-").isdigit() else (1, 0, key)


def convert_qa(
    benchmark: str | os.PathLike | VideoQASpec,
    qa_dir: str | os.PathLike,
    video_root: str | os.PathLike,
    out_dir: str | os.PathLike,
) -> tuple[QAResult, str, str]:
    """Convert one benchmark (a spec, or a spec's name or path); writes <out>/<name>_qa.jsonl and its report.

    Returns (result, output path, report path).
    """
    spec = benchmark if isinstance(benchmark, VideoQASpec) else load_qa_spec(benchmark)
    qa_dir, video_root = os.fspath(qa_dir), os.fspath(video_root)
    if not os.path.isdir(video_root):
        raise FileNotFoundError(f"{video_root}: video folder does not exist")
    q_path, a_path = os.path.join(qa_dir, spec.questions_file), os.path.join(qa_dir, spec.answers_file)
    videos = index_videos(video_root, spec.video_extensions)
    result = join_qa(load_entries(q_path), load_entries(a_path), videos, spec)

    out_path = os.path.join(out_dir, f"{spec.name}_qa.jsonl")
    report_path = os.path.join(out_dir, f"{spec.name}_qa_report.json")
    write_jsonl(out_path, result.records)
    write_json(
        report_path,
        result.report(
            benchmark=spec.name,
            split=spec.split,
            spec=spec.to_dict(),
            questions_file=q_path,
            answers_file=a_path,
            video_root=video_root,
            output=out_path,
        ),
    )
    return result, out_path, report_path
