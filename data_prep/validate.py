"""validate: check LLaVA / Video-LLaVA instruction data before a training run trips over it.

A record::

    {"id": "...", "image" | "video": "a.mp4" | ["a.mp4", ...],      (neither: a text-only sample)
     "conversations": [{"from": "human", "value": "<video>\\n..."}, {"from": "gpt", "value": "..."}, ...]}

Rules, each with the code it is reported under:

- ``not_an_object``, ``missing_id``, ``duplicate_id`` (every copy is flagged): ids present and unique.
- ``bad_conversations``, ``bad_turn``: a non-empty list of {"from": "human"|"gpt", "value": str}.
- ``role_order``: roles alternate, starting with human and ending with gpt.
- ``empty_value``: no turn is empty or whitespace.
- ``bad_media_field``: "image"/"video" is a non-empty string or a non-empty list of them.
- ``placeholder_without_media``: a ``<image>`` / ``<video>`` placeholder but no field of that kind.
- ``placeholder_count``: the placeholders of a kind don't match the number of media files of it.
- ``placeholder_in_gpt_turn``: placeholders only go in human turns.
- ``missing_media``: an image under the image root, a video under the video root, or for a video a
  finished frame directory (with frames.json) named by its video id under the frames root.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

from tqdm import tqdm

from data_prep.extract import video_id
from data_prep.io import read_json_list
from image_llavolta.jsonio import write_jsonl

PLACEHOLDERS = {"image": "<image>", "video": "<video>"}
ROLES = ("human", "gpt")


@dataclass(frozen=True)
class MediaRoots:
    """Folders the media paths of the records are relative to (None: don't check that kind)."""

    image_root: str | None = None
    video_root: str | None = None
    frames_root: str | None = None  # frame dirs from extract-frames, accepted in place of a video


def _reason(code: str, detail: str) -> dict:
    """One problem of a record."""
    return {"code": code, "detail": detail}


def check_record(record, roots: MediaRoots) -> list[dict]:
    """Every rule a single record breaks (ids are checked for uniqueness by `validate_records`)."""
    if not isinstance(record, dict):
        return [_reason("not_an_object", f"expected an object, got {type(record).__name__}")]
    reasons = []
    rid = record.get("id")
    if rid is None or isinstance(rid, bool) or not isinstance(rid, (str, int)) or str(rid).strip() == "":
        reasons.append(_reason("missing_id", f"'id' is {rid!r}"))

    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        reasons.append(_reason("bad_conversations", "'conversations' must be a non-empty list of turns"))
        turns = []
    good_turns = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("from") not in ROLES or not isinstance(turn.get("value"), str):
            expected = "{'from': 'human' | 'gpt', 'value': str}"
            reasons.append(_reason("bad_turn", f"turn {i} must be {expected}, got {turn!r}"))
            continue
        good_turns.append((i, turn["from"], turn["value"]))
        if not turn["value"].strip():
            reasons.append(_reason("empty_value", f"turn {i} ({turn['from']}) is empty"))
    if len(good_turns) == len(turns) and turns:
        roles = [role for _, role, _ in good_turns]
        expected = [ROLES[i % 2] for i in range(len(roles))]
        if roles != expected or roles[-1] != "gpt":
            reasons.append(_reason("role_order", f"roles {roles} must alternate human, gpt, ... and end with gpt"))

    for kind, tag in PLACEHOLDERS.items():
        in_human = sum(value.count(tag) for _, role, value in good_turns if role == "human")
        for i, role, value in good_turns:
            if role == "gpt" and tag in value:
                reasons.append(_reason("placeholder_in_gpt_turn", f"turn {i} (gpt) contains {tag}"))
        if kind not in record:
            if in_human:
                reasons.append(_reason("placeholder_without_media", f"{in_human} x {tag} but no {kind!r} field"))
            continue
        media = record[kind]
        paths = [media] if isinstance(media, str) else media
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p.strip() for p in paths):
            detail = f"{kind!r} must be a non-empty path or list of paths, got {media!r}"
            reasons.append(_reason("bad_media_field", detail))
            continue
        if in_human != len(paths):
            detail = f"{in_human} x {tag} in human turns but {len(paths)} {kind} file(s)"
            reasons.append(_reason("placeholder_count", detail))
        for path in paths:
            if not _media_exists(kind, path, roots):
                reasons.append(_reason("missing_media", f"{kind} {path!r} not found{_where(kind, roots)}"))
    return reasons


def _media_exists(kind: str, path: str, roots: MediaRoots) -> bool:
    """Whether a media file (or, for a video, its extracted frame dir) exists; True when unchecked."""
    root = roots.image_root if kind == "image" else roots.video_root
    if root is None and (kind == "image" or roots.frames_root is None):
        return True
    if root is not None and os.path.exists(os.path.join(root, path)):
        return True
    if kind == "video" and roots.frames_root is not None:
        return os.path.isfile(os.path.join(roots.frames_root, video_id(path), "frames.json"))
    return False


def _where(kind: str, roots: MediaRoots) -> str:
    """' under <roots>' for an error message."""
    places = [roots.image_root] if kind == "image" else [roots.video_root, roots.frames_root]
    places = [p for p in places if p is not None]
    return f" under {' or '.join(places)}" if places else ""


@dataclass
class ValidationResult:
    """Outcome of validating a list of records."""

    num_records: int = 0
    bad: list[dict] = field(default_factory=list)  # {"index", "id", "reasons", "record"}

    @property
    def counts(self) -> Counter:
        """Bad records per reason code (a record counts once per code)."""
        return Counter(code for b in self.bad for code in {r["code"] for r in b["reasons"]})

    def summary_rows(self) -> list[tuple[str, object]]:
        """(label, value) rows for the end-of-run table."""
        rows = [("records", self.num_records), ("ok", self.num_records - len(self.bad)), ("bad", len(self.bad))]
        return rows + [(f"  {code}", n) for code, n in sorted(self.counts.items())]


def validate_records(records: list, roots: MediaRoots = MediaRoots(), progress: bool = False) -> ValidationResult:
    """Check every record; duplicate ids flag every record that shares the id."""
    reasons = [check_record(r, roots) for r in tqdm(records, desc="validate", unit="record", disable=not progress)]
    where: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        if isinstance(r, dict) and isinstance(r.get("id"), (str, int)) and not isinstance(r.get("id"), bool):
            where.setdefault(str(r["id"]), []).append(i)
    for rid, indices in where.items():
        if len(indices) > 1:
            for i in indices:
                reasons[i].append(_reason("duplicate_id", f"id {rid!r} is used by records {indices}"))
    result = ValidationResult(num_records=len(records))
    for i, (record, rs) in enumerate(zip(records, reasons)):
        if rs:
            rid = record.get("id") if isinstance(record, dict) else None
            result.bad.append({"index": i, "id": rid, "reasons": rs, "record": record})
    return result


def validate_file(
    path: str | os.PathLike,
    image_root: str | None = None,
    video_root: str | None = None,
    frames_root: str | None = None,
    bad_out: str | os.PathLike | None = None,
    progress: bool = True,
) -> ValidationResult:
    """Validate an instruction JSON file; media roots default to the file's own folder."""
    path = os.fspath(path)
    records = read_json_list(path, "records")
    folder = os.path.dirname(os.path.abspath(path))
    roots = MediaRoots(image_root or folder, video_root or folder, frames_root)
    result = validate_records(records, roots, progress=progress)
    if bad_out is not None:
        write_jsonl(bad_out, result.bad)
    return result
