"""convert-qa: MSVD-QA, MSRVTT-QA and ActivityNet-QA (Video-ChatGPT layout) to one unified JSONL.

Source layout (Video-ChatGPT's quantitative evaluation)::

    <qa_dir>/test_q.json   [{"video_name": str, "question_id": int | str, "question": str}, ...]
    <qa_dir>/test_a.json   [{"question_id": int | str, "answer": str}, ...]
    <video_root>/...       <prefix><video_name><ext>, anywhere below the root

Output, one line per usable question, in test_q.json's order::

    {"question_id": <as in test_q.json>, "video": <path relative to video_root>, "question": str, "answer": str}

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

from data_prep.io import VIDEO_EXTENSIONS, read_json_list
from image_llavolta.jsonio import write_json, write_jsonl

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


@dataclass(frozen=True)
class QASpec:
    """Where a Video-ChatGPT-layout QA benchmark keeps its files and how its videos are named."""

    questions_file: str = "test_q.json"
    answers_file: str = "test_a.json"
    video_prefix: str = ""  # prepended to video_name to get the file name
    extensions: tuple[str, ...] = VIDEO_EXTENSIONS  # tried in this order


BENCHMARKS: dict[str, QASpec] = {
    "msvd": QASpec(),
    "msrvtt": QASpec(),
    "activitynet": QASpec(video_prefix="v_"),  # test_q.json says "abc", the file is v_abc.mp4
}


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


def _check_entry(entry, fields: dict[str, tuple[type, ...]]) -> str | None:
    """Why an entry is malformed (first reason), or None when it is fine."""
    if not isinstance(entry, dict):
        return f"expected an object, got {type(entry).__name__}"
    for name, types in fields.items():
        value = entry.get(name)
        if name not in entry:
            return f"missing field {name!r}"
        if isinstance(value, bool) or not isinstance(value, types):
            return f"field {name!r} is {type(value).__name__}, expected {' or '.join(t.__name__ for t in types)}"
        if isinstance(value, str) and not value.strip():
            return f"field {name!r} is empty"
    return None


def _unique_by_id(entries: list, fields: dict, kind: str, problems: dict) -> tuple[dict[str, dict], set[str]]:
    """Well-formed entries keyed by str(question_id), and all ids seen; malformed/duplicate ones reported."""
    groups: dict[str, list[dict]] = {}
    for index, entry in enumerate(entries):
        reason = _check_entry(entry, fields)
        if reason:
            qid = entry.get("question_id") if isinstance(entry, dict) else None
            problems[f"malformed_{kind}"].append({"index": index, "question_id": qid, "reason": reason})
        else:
            groups.setdefault(str(entry["question_id"]), []).append(entry)
    unique = {}
    for key, group in groups.items():
        if len(group) == 1:
            unique[key] = group[0]
            continue
        # Copies that differ only in int-vs-str id are the same entry.
        identical = all({**e, "question_id": key} == {**group[0], "question_id": key} for e in group)
        problems[f"duplicate_{kind}"].append(
            {"question_id": group[0]["question_id"], "copies": len(group), "identical": identical, "kept": identical}
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


def join_qa(questions: list, answers: list, videos: dict[str, list[str]], spec: QASpec) -> QAResult:
    """Join questions and answers by question_id and resolve each video; every problem is reported."""
    result = QAResult(records=[], num_questions=len(questions), num_answers=len(answers))
    problems = result.problems
    id_types = (int, str)
    q_unique, q_ids = _unique_by_id(
        questions, {"video_name": (str,), "question_id": id_types, "question": (str,)}, "questions", problems
    )
    a_unique, a_ids = _unique_by_id(answers, {"question_id": id_types, "answer": (str,)}, "answers", problems)

    for key in sorted(a_ids - q_ids, key=_natural):
        problems["answers_without_question"].append(_first_id(answers, key))
    for key, q in q_unique.items():  # dicts keep test_q.json's order
        if key not in a_ids:
            problems["questions_without_answer"].append(q["question_id"])
            continue
        if key not in a_unique:  # its answer had conflicting duplicates: already reported
            continue
        name = spec.video_prefix + q["video_name"]
        candidates = videos.get(name, [])
        if not candidates:
            looked_for = name + "{" + ",".join(spec.extensions) + "}"
            problems["missing_videos"].append(
                {"question_id": q["question_id"], "video_name": q["video_name"], "looked_for": looked_for}
            )
            continue
        if len(candidates) > 1:
            problems["ambiguous_videos"].append(
                {"question_id": q["question_id"], "candidates": candidates, "used": candidates[0]}
            )
        answer = a_unique[key]["answer"]
        result.records.append(
            {"question_id": q["question_id"], "video": candidates[0], "question": q["question"], "answer": answer}
        )
    return result


def _first_id(entries: list, key: str):
    """The question_id, as written in the source, of the first entry whose id normalises to key."""
    return next(e["question_id"] for e in entries if isinstance(e, dict) and str(e.get("question_id")) == key)


def _natural(key: str):
    """Sort numeric ids numerically and the rest as text."""
    return (0, int(key), "") if key.lstrip("-").isdigit() else (1, 0, key)


def convert_qa(
    benchmark: str,
    qa_dir: str | os.PathLike,
    video_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    spec: QASpec | None = None,
) -> tuple[QAResult, str, str]:
    """Convert one benchmark; writes <out>/<benchmark>_qa.jsonl and its report, returns (result, paths)."""
    if spec is None:
        if benchmark not in BENCHMARKS:
            raise ValueError(f"unknown benchmark {benchmark!r}; known: {', '.join(BENCHMARKS)}")
        spec = BENCHMARKS[benchmark]
    qa_dir, video_root = os.fspath(qa_dir), os.fspath(video_root)
    if not os.path.isdir(video_root):
        raise FileNotFoundError(f"{video_root}: video folder does not exist")
    q_path, a_path = os.path.join(qa_dir, spec.questions_file), os.path.join(qa_dir, spec.answers_file)
    result = join_qa(load_entries(q_path), load_entries(a_path), index_videos(video_root, spec.extensions), spec)

    out_path = os.path.join(out_dir, f"{benchmark}_qa.jsonl")
    report_path = os.path.join(out_dir, f"{benchmark}_qa_report.json")
    write_jsonl(out_path, result.records)
    write_json(report_path, result.report(
        benchmark=benchmark, questions_file=q_path, answers_file=a_path, video_root=video_root, output=out_path
    ))
    return result, out_path, report_path
