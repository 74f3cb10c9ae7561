"""Files a person can read and a killed run cannot corrupt: atomic JSON / JSONL writers and a tolerant JSONL reader."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterable, Mapping

logger = logging.getLogger(__name__)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically: a temp file in the same folder, then rename over the target."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.part")
    try:
        with open(tmp, "x", encoding="utf-8") as f:  # not mkstemp: that makes the file private (0600)
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path: str | os.PathLike, obj) -> None:
    """Write indented JSON atomically."""
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> None:
    """Write one JSON object per line, atomically."""
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_jsonl(path: str | os.PathLike, missing_ok: bool = False) -> list[dict]:
    """JSON objects, one a line; a cut-off last line (a killed writer) is ignored, any other bad line is an error."""
    path = os.fspath(path)
    if missing_ok and not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):  # no newline after it: the write was cut off
                logger.warning("%s: ignoring the cut-off last line %d", path, number)
                continue
            raise ValueError(f"{path}:{number}: not valid JSON ({err})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        records.append(record)
    return records


def read_json(path: str | os.PathLike, what: str = "results") -> dict:
    """A JSON object from `path`, or a ValueError naming the file."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); delete it to start the {what} over") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of {what}, got {type(data).__name__}")
    return data


# Prediction files and their sidecars (`preds.failures.jsonl`, `preds.settings.json`): written by the answering
# loop in `generation`, read by the judges and scorers.


def sidecar_path(pred_path: str | os.PathLike, suffix: str) -> str:
    """`preds.jsonl` -> `preds<suffix>` (e.g. `.failures.jsonl`, `.settings.json`)."""
    return os.path.splitext(os.fspath(pred_path))[0] + suffix


def failures_path(pred_path: str | os.PathLike) -> str:
    """The failures JSONL that goes with a predictions file: questions whose media failed to load."""
    return sidecar_path(pred_path, ".failures.jsonl")


def settings_path(pred_path: str | os.PathLike) -> str:
    """The settings JSON that goes with a predictions file: model, compression, prompt, generation, counts."""
    return sidecar_path(pred_path, ".settings.json")


def read_failures(pred_path: str | os.PathLike, predicted: Iterable[str] = frozenset()) -> dict[str, dict]:
    """question id (str) -> failure record beside a predictions file; the last copy wins, predicted ids dropped."""
    predicted = set(predicted)
    failures = {str(f["question_id"]): f for f in read_jsonl(failures_path(pred_path), missing_ok=True)}
    return {k: v for k, v in failures.items() if k not in predicted}


def read_settings(pred_path: str | os.PathLike) -> dict | None:
    """The `settings` a predictions file's settings sidecar records, or None when it has no sidecar."""
    sidecar = settings_path(pred_path)
    if not os.path.exists(sidecar):
        return None
    settings = read_json(sidecar, "settings").get("settings")
    if settings is not None and not isinstance(settings, dict):
        raise ValueError(f"{sidecar}: 'settings' must be a JSON object, got {type(settings).__name__}")
    return settings


def check_settings(
    path: str | os.PathLike, stored: Mapping | None, settings: Mapping, what: str = "predictions"
) -> None:
    """Refuse to continue `path` (holding `what`) when its stored settings differ, naming every one that does."""
    stored = dict(stored or {})
    changed = sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))
    if changed:
        details = "; ".join(f"{k}: {stored.get(k)!r} -> {settings.get(k)!r}" for k in changed)
        raise ValueError(
            f"{os.fspath(path)} holds {what} made with other settings ({details}); "
            "write elsewhere or delete it to start over"
        )
