"""extract-frames: sample T frames of every video in a folder or list file into frame directories.

Output folder::

    <out>/<video_id>/        one frame directory per video (layout: `video_llavolta.frames`)
    <out>/manifest.jsonl     one line per finished video, sorted by video_id at the end of a run
    <out>/failures.jsonl     one line per video that failed in the latest run

``video_id`` is the video's path relative to the input folder (or to the list file's folder) without
its extension, with path separators replaced by ``__``: ``<root>/cats/a.mp4`` -> ``cats__a``. Two
videos that map to the same id (``a.mp4`` and ``a.avi``) both fail with ``DuplicateVideoId``.

Resuming. A rerun skips a video when its manifest line and its frame directory agree and the
directory is complete (frames.json plus exactly T frame files of the asked format); everything
else is redone: leftover ``.tmp`` directories of a killed run are deleted, a directory without
frames.json or a manifest line without its directory is redone, and a truncated last manifest line
is dropped. Workers only write frame directories; the main process alone appends manifest and
failure lines (flushed one by one) and finally rewrites the manifest deduplicated, atomically.
Failed videos are retried on every run: failures.jsonl only ever lists the latest run's failures.
One run per output folder at a time (a second run would delete the first one's temp dirs).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from dataclasses import dataclass, field
from functools import partial

from tqdm import tqdm

from image_llavolta.jsonio import write_jsonl
from video_llavolta.frames import VIDEO_EXTENSIONS, ShortVideoWarning, VideoError, read_frames, write_frame_dir
from video_llavolta.frames import frame_dir_name as video_id  # one naming rule for writers and readers

from .io import map_unordered

MANIFEST = "manifest.jsonl"
FAILURES = "failures.jsonl"
# Temp dirs of video_llavolta.frames.write_frame_dir: ".<name>.<8 hex>.tmp" (and ".tmp.old" while replacing).
_TEMP_DIR = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp(\.old)?$")


# ---------------------------------------------------------------------------------------------------
# Finding videos


def find_videos(source: str | os.PathLike) -> list[tuple[str, str]]:
    """(video_id, absolute path) of every video under a folder, in a list file, or of one video file."""
    source = os.path.abspath(os.fspath(source))
    if os.path.isdir(source):
        found = []
        for folder, dirs, files in os.walk(source):
            dirs.sort()
            for name in sorted(files):
                if name.lower().endswith(VIDEO_EXTENSIONS):
                    path = os.path.join(folder, name)
                    found.append((video_id(os.path.relpath(path, source)), path))
        return found
    if not os.path.isfile(source):
        raise FileNotFoundError(f"{source}: no such folder or list file")
    if source.lower().endswith(VIDEO_EXTENSIONS):
        return [(video_id(os.path.basename(source)), source)]
    return _read_list_file(source)


def _read_list_file(list_path: str) -> list[tuple[str, str]]:
    """Videos named in a list file: one path per line, blank lines and '#' comments ignored."""
    root = os.path.dirname(list_path)
    found = []
    try:
        with open(list_path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{list_path}: not a text list file of video paths ({err})") from err
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = os.path.normpath(os.path.join(root, entry))  # join keeps an absolute entry as it is
        rel = os.path.relpath(path, root)
        if rel.startswith(os.pardir):  # outside the list's folder: use the whole path as the id
            rel = os.path.splitdrive(path)[1]
        found.append((video_id(rel), path))
    return found


# ---------------------------------------------------------------------------------------------------
# Resume bookkeeping


def read_manifest(path: str | os.PathLike) -> dict[str, dict]:
    """video_id -> manifest record; unparsable lines (a line cut off by a kill) are dropped, the last copy wins."""
    records: dict[str, dict] = {}
    if not os.path.exists(path):
        return records
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("video_id"), str):
                records[record["video_id"]] = record
    return records


def frame_dir_complete(path: str | os.PathLike, num_frames: int, fmt: str) -> bool:
    """True when the dir has a readable frames.json and exactly num_frames frame files of format fmt."""
    try:
        with open(os.path.join(path, "frames.json"), encoding="utf-8") as f:
            meta = json.load(f)
        files = [n for n in os.listdir(path) if n.endswith(f".{fmt}")]
    except (OSError, ValueError):
        return False
    expected = {f"{p:04d}.{fmt}" for p in range(num_frames)}
    return (
        isinstance(meta, dict)
        and meta.get("format") == fmt
        and len(meta.get("indices", ())) == num_frames
        and set(files) == expected
    )


def remove_temp_dirs(out_dir: str | os.PathLike) -> int:
    """Delete the half-written temp dirs a killed run left behind; returns how many."""
    removed = 0
    for name in os.listdir(out_dir):
        path = os.path.join(out_dir, name)
        if _TEMP_DIR.match(name) and os.path.isdir(path):
            shutil.rmtree(path)
            removed += 1
    return removed


# ---------------------------------------------------------------------------------------------------
# Extraction


def extract_one(job: tuple[str, str], out_dir: str, num_frames: int, fmt: str, quality: int) -> dict:
    """Extract one video into <out_dir>/<video_id>; returns a manifest record or a failure record."""
    vid, source = job
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sampled = read_frames(source, num_frames=num_frames)
        write_frame_dir(os.path.join(out_dir, vid), sampled, fmt=fmt, quality=quality)
    except VideoError as err:
        return {"video_id": vid, "source": source, "error": type(err).__name__, "reason": err.message}
    except Exception as err:  # anything else (disk full, a bug): recorded, never fatal for the whole run
        return {"video_id": vid, "source": source, "error": type(err).__name__, "reason": str(err)}
    record = {
        "video_id": vid,
        "source": source,
        "total_frames": int(sampled.total_frames),
        "fps": float(sampled.fps),
        "indices": [int(i) for i in sampled.indices],
        "num_frames": num_frames,
        "format": fmt,
        "short": any(issubclass(w.category, ShortVideoWarning) for w in caught),
    }
    if caught:
        record["warnings"] = [str(w.message) for w in caught]
    return record


@dataclass
class ExtractResult:
    """What one extract-frames run did."""

    out_dir: str
    done: list[str] = field(default_factory=list)  # video_ids extracted in this run
    skipped: list[str] = field(default_factory=list)  # already complete from an earlier run
    failed: list[dict] = field(default_factory=list)  # failure records (also in failures.jsonl)
    short: list[str] = field(default_factory=list)  # extracted in this run with fewer than T frames
    temp_dirs_removed: int = 0

    def summary_rows(self) -> list[tuple[str, object]]:
        """(label, value) rows for the end-of-run table."""
        return [
            ("extracted", len(self.done)),
            ("  of which short (< T frames)", len(self.short)),
            ("skipped (already complete)", len(self.skipped)),
            ("failed", len(self.failed)),
            ("manifest", os.path.join(self.out_dir, MANIFEST)),
            ("failures", os.path.join(self.out_dir, FAILURES)),
        ]


def extract_frames(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    num_frames: int = 8,
    fmt: str = "jpg",
    quality: int = 95,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> ExtractResult:
    """Extract num_frames frames of every video into <out_dir>/<video_id>/, resuming earlier runs."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if fmt not in ("jpg", "npy"):
        raise ValueError(f"format must be 'jpg' or 'npy', got {fmt!r}")
    out_dir = os.path.abspath(os.fspath(out_dir))
    os.makedirs(out_dir, exist_ok=True)
    manifest_path, failures_path = os.path.join(out_dir, MANIFEST), os.path.join(out_dir, FAILURES)
    result = ExtractResult(out_dir, temp_dirs_removed=remove_temp_dirs(out_dir))

    sources_by_id: dict[str, list[str]] = {}
    for vid, path in find_videos(source):
        sources_by_id.setdefault(vid, []).append(path)
    old = read_manifest(manifest_path)

    manifest: dict[str, dict] = {}  # what the manifest will say at the end
    failures: list[dict] = []
    pending: list[tuple[str, str]] = []
    for vid in sorted(sources_by_id):
        paths = sources_by_id[vid]
        if len(paths) > 1:
            reason = f"{len(paths)} videos map to the id {vid!r}: {', '.join(paths)}; rename all but one"
            failures += [{"video_id": vid, "source": p, "error": "DuplicateVideoId", "reason": reason} for p in paths]
            continue
        rec = old.get(vid)
        complete = (
            not overwrite
            and rec is not None
            and rec.get("source") == paths[0]
            and rec.get("num_frames") == num_frames
            and rec.get("format") == fmt
            and frame_dir_complete(os.path.join(out_dir, vid), num_frames, fmt)
        )
        if complete:
            manifest[vid] = rec
            result.skipped.append(vid)
        else:
            pending.append((vid, paths[0]))
    # Records of videos outside this run's input stay, as long as their frame dir still exists.
    for vid, rec in old.items():
        if vid not in sources_by_id and os.path.isfile(os.path.join(out_dir, vid, "frames.json")):
            manifest[vid] = rec

    # Start from a clean manifest (no cut-off line to append to) and an empty failure list.
    write_jsonl(manifest_path, (manifest[v] for v in sorted(manifest)))
    write_jsonl(failures_path, failures)
    job = partial(extract_one, out_dir=out_dir, num_frames=num_frames, fmt=fmt, quality=quality)
    try:
        with open(manifest_path, "a", encoding="utf-8") as mf, open(failures_path, "a", encoding="utf-8") as ff:
            bar = tqdm(total=len(pending), desc="extract-frames", unit="video", disable=not progress)
            for record in map_unordered(job, pending, workers):
                if "error" in record:
                    failures.append(record)
                    _append_line(ff, record)
                else:
                    manifest[record["video_id"]] = record
                    result.done.append(record["video_id"])
                    if record["short"]:
                        result.short.append(record["video_id"])
                    _append_line(mf, record)
                bar.update()
                bar.set_postfix(failed=len(failures), refresh=False)
            bar.close()
    finally:  # also on Ctrl-C: leave a deduplicated, sorted manifest behind
        write_jsonl(manifest_path, (manifest[v] for v in sorted(manifest)))
    write_jsonl(failures_path, sorted(failures, key=lambda r: (r["video_id"], r["source"])))
    result.failed = failures
    return result


def _append_line(f, record: dict) -> None:
    """Append one JSON line and flush, so a kill loses at most the line being written."""
    f.write(json.dumps(record, ensure_ascii=False) + "\n")
    f.flush()
