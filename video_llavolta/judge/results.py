"""Judging a predictions file: every question counted, metrics per benchmark / question type / overall, and a table.

Accuracy = yes / judged and the mean score over judged questions; parse failures, API errors and missing
predictions (a video that failed to load, or a question of the QA file without a prediction) are counted, never
judged as "no".
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence

from image_llavolta.jsonio import read_failures, read_jsonl, sidecar_path, write_json, write_jsonl
from image_llavolta.tables import format_table, percent

from ..benchmarks import VideoQASpec, read_qa
from .offline import OFFLINE_NOTE

STATUSES = ("judged", "parse_failure", "api_error", "missing")
PROBLEMS = STATUSES[1:]
PREDICTION_FIELDS = ("question_id", "question", "answer", "pred")


def metrics(rows: Sequence[dict]) -> dict:
    """accuracy = yes / judged, mean score over judged, and the count of each outcome."""
    judged = [r for r in rows if r["status"] == "judged"]
    yes = sum(bool(r["match"]) for r in judged)
    return {
        "questions": len(rows),
        "judged": len(judged),
        "yes": yes,
        "accuracy": yes / len(judged) if judged else None,
        "score": sum(r["score"] for r in judged) / len(judged) if judged else None,
        "parse_failures": sum(r["status"] == "parse_failure" for r in rows),
        "api_errors": sum(r["status"] == "api_error" for r in rows),
        "missing": sum(r["status"] == "missing" for r in rows),
    }


def _by_type(rows: Sequence[dict]) -> dict:
    types = sorted({r["type"] for r in rows if r.get("type") is not None}, key=str)
    return {str(t): metrics([r for r in rows if r.get("type") == t]) for t in types}


def name_files(paths, default_name: str | None) -> dict[str, str]:
    """{benchmark: path} from one path or a mapping; one path is named `default_name` or its file name."""
    if isinstance(paths, Mapping):
        return {str(k): os.fspath(v) for k, v in paths.items()}
    path = os.fspath(paths)
    return {default_name or os.path.splitext(os.path.basename(path))[0]: path}


def _row(name: str, record: dict, **extra) -> dict:
    return {
        "benchmark": name,
        "question_id": record["question_id"],
        "type": record.get("type"),
        "question": record.get("question"),
        "answer": record.get("answer"),
        **extra,
    }


def _load_rows(name: str, pred_path: str, qa_path: str | None) -> list[dict]:
    """One row per question (predicted or missing) of one benchmark, references checked against the QA file."""
    rows, seen = [], set()
    for number, p in enumerate(read_jsonl(pred_path), 1):
        missing = [k for k in PREDICTION_FIELDS if k not in p]
        if missing or not isinstance(p["pred"], str):
            raise ValueError(f"{pred_path}: prediction {number} lacks {missing or ['a string pred']}")
        key = str(p["question_id"])
        if key in seen:
            raise ValueError(f"{pred_path}: question id {p['question_id']!r} has more than one prediction")
        seen.add(key)
        rows.append(_row(name, p, pred=p["pred"]))
    for key, f in read_failures(pred_path, seen).items():
        seen.add(key)
        rows.append(_row(name, f, pred=None, status="missing", error=f.get("reason", "failed")))
    if qa_path is not None:
        qa = {str(r["question_id"]): r for r in read_qa(qa_path)}
        for row in rows:
            ref = qa.get(str(row["question_id"]))
            if ref is None:
                raise ValueError(f"{pred_path}: question id {row['question_id']!r} is not in {qa_path}")
            if row["answer"] is not None and row["answer"] != ref["answer"]:
                raise ValueError(
                    f"{pred_path}: question id {row['question_id']!r} has answer {row['answer']!r} "
                    f"but {qa_path} says {ref['answer']!r}: predictions from another QA file?"
                )
            row["question"], row["answer"] = ref["question"], ref["answer"]  # a failure record may lack them
        for key, ref in qa.items():
            if key not in seen:
                rows.append(_row(name, ref, pred=None, status="missing", error="no prediction"))
    return rows


def judge_predictions(
    pred_path,
    judge,
    out_path: str | os.PathLike,
    benchmark: str | None = None,
    qa_path=None,
    specs: Mapping[str, VideoQASpec] | None = None,
) -> dict:
    """Judge one predictions file (or {benchmark: file}); write the results JSON and per-question judgments.

    `qa_path`: the QA JSONL (or {benchmark: file}) to check references against and count absent predictions as
    missing. `specs`: the benchmarks' specs, recorded in the results.
    """
    preds = name_files(pred_path, benchmark)
    if qa_path is None or isinstance(qa_path, Mapping):
        qas = name_files(qa_path, None) if qa_path is not None else {}
    elif len(preds) == 1:
        qas = {next(iter(preds)): os.fspath(qa_path)}
    else:
        raise ValueError("several predictions files need their QA files as {benchmark: path}")
    if qas and set(qas) != set(preds):
        raise ValueError(f"QA files {sorted(qas)} do not match the predictions' benchmarks {sorted(preds)}")
    rows = [row for name, path in preds.items() for row in _load_rows(name, path, qas.get(name))]

    pending = [r for r in rows if "status" not in r]
    for row, j in zip(pending, judge.judge_many([(r["question"], r["answer"], r["pred"]) for r in pending])):
        row.update(status=j.status, match=j.match, score=j.score, reply=j.reply, error=j.error)

    described = judge.describe()  # after judging: LLM judges report request counts and server-side model names
    results = {
        "judge": described,
        "comparable_with_gpt_judged": judge.comparable_with_gpt,
        "note": "accuracy = yes / judged; score = mean over judged (0-5); parse failures, API errors and "
        "missing predictions are counted, not judged" + ("" if judge.comparable_with_gpt else ". " + OFFLINE_NOTE),
        "predictions": preds,
        "specs": {name: spec.to_dict() for name, spec in (specs or {}).items()},
        "overall": metrics(rows),
        "by_type": _by_type(rows),
        "by_benchmark": {
            name: {**metrics(sub), "by_type": _by_type(sub)}
            for name in preds
            for sub in [[r for r in rows if r["benchmark"] == name]]
        },
        "problems": {
            status: [
                {
                    "benchmark": r["benchmark"],
                    "question_id": r["question_id"],
                    "error": r.get("error"),
                    **({"reply": r["reply"]} if r.get("reply") is not None else {}),
                }
                for r in rows
                if r["status"] == status
            ]
            for status in PROBLEMS
        },
        "judgments": sidecar_path(out_path, ".judgments.jsonl"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_jsonl(results["judgments"], rows)
    write_json(out_path, results)
    return results


HEADERS = ("", "questions", "judged", "accuracy", "score", "parse fail", "api errors", "missing")


def _table_row(label: str, m: dict) -> list:
    score = None if m["score"] is None else f"{m['score']:.2f}"
    return [
        label,
        m["questions"],
        m["judged"],
        percent(m["accuracy"]),
        score,
        m["parse_failures"],
        m["api_errors"],
        m["missing"],
    ]


def format_results(results: dict) -> str:
    """The results as text: the judge, a table per benchmark, per question type and overall, and the problems."""
    judge = results["judge"]
    lines = [f"judge: {judge['name']}" + (f" ({judge['model']})" if judge.get("model") else "")]
    if not results["comparable_with_gpt_judged"]:
        lines.append(f"NOTE: {OFFLINE_NOTE}")
    rows = []
    for name, m in results["by_benchmark"].items():
        rows.append(_table_row(name, m))
        rows += [_table_row(f"  {t}", mt) for t, mt in m["by_type"].items()]
    if len(results["by_benchmark"]) > 1:
        rows.append(_table_row("overall", results["overall"]))
    lines.append(format_table(rows, HEADERS))
    for status, items in results["problems"].items():
        if items:
            ids = ", ".join(str(i["question_id"]) for i in items[:5]) + (" ..." if len(items) > 5 else "")
            lines.append(f"{status.replace('_', ' ')}: {len(items)} ({ids})")
    return "\n".join(lines)


def print_results(results: dict, file=None) -> None:
    """Print `format_results` after a blank line."""
    print("\n" + format_results(results), file=file or sys.stdout)
