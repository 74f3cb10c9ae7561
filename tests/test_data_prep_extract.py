"""extract-frames: good/corrupt/missing videos, short clips, ids, workers, and resuming after a kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import numpy as np
import pytest
from prep_helpers import cli, cli_popen, clip, read_jsonl, write_clip

from data_prep.cli import main
from data_prep.extract import find_videos, video_id
from video_llavolta.frames import read_frames

T = 8


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """A folder with three good clips (two codecs, three containers), a short clip and a corrupt file."""
    root = tmp_path_factory.mktemp("videos")
    write_clip(root / "a.mp4", clip(30, seed=1), codec="libx264")
    write_clip(root / "b.avi", clip(20, seed=2), codec="mpeg4")
    write_clip(root / "sub" / "c.MKV", clip(40, seed=3), codec="libx264")  # upper-case extension, nested
    write_clip(root / "short.mp4", clip(5, seed=4), codec="mpeg4")
    (root / "corrupt.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (root / "notes.txt").write_text("not a video")
    return root


def frame_files(frame_dir) -> list[str]:
    """Frame files (not frames.json) of a frame dir."""
    return sorted(n for n in os.listdir(frame_dir) if n != "frames.json")


def load_npy_dir(frame_dir) -> np.ndarray:
    """The frames of an npy frame dir, in position order."""
    return np.stack([np.load(os.path.join(frame_dir, n)) for n in frame_files(frame_dir)])


def test_video_ids_from_folder_and_list(videos, tmp_path):
    assert video_id(os.path.join("sub", "dir", "x.mp4")) == "sub__dir__x"
    found = dict(find_videos(videos))
    assert sorted(found) == ["a", "b", "corrupt", "short", "sub__c"]  # notes.txt is not a video
    assert found["sub__c"] == str(videos / "sub" / "c.MKV")

    listing = tmp_path / "list.txt"
    listing.write_text(f"# comment\n{videos / 'a.mp4'}\n\nrel/x.mp4\n")
    found = find_videos(listing)
    assert found[1] == ("rel__x", str(tmp_path / "rel" / "x.mp4"))  # relative to the list file's folder
    # An absolute entry outside the list's folder: the whole path is the id.
    whole_path_id = str(videos / "a").lstrip(os.sep).replace(os.sep, "__")
    assert found[0] == (whole_path_id, str(videos / "a.mp4"))


def test_good_corrupt_and_missing(videos, tmp_path):
    shutil.copytree(videos, tmp_path / "clips")
    listing = tmp_path / "videos.txt"
    # Relative entries resolve against the list file's folder; "missing.mp4" does not exist.
    listing.write_text("\n".join(f"clips/{n}" for n in ["a.mp4", "b.avi", "sub/c.MKV", "corrupt.mp4", "missing.mp4"]))
    out = tmp_path / "out"
    prefix, videos = "clips", tmp_path / "clips"

    assert main(["extract-frames", str(listing), "--out", str(out), "--format", "npy", "--num-frames", str(T)]) == 1

    failures = {f["video_id"]: f for f in read_jsonl(out / "failures.jsonl")}
    assert sorted(failures) == [f"{prefix}__corrupt", f"{prefix}__missing"]
    assert failures[f"{prefix}__corrupt"]["error"] == "VideoDecodeError"
    assert failures[f"{prefix}__missing"]["error"] == "VideoNotFoundError"
    assert all(f["reason"] for f in failures.values())

    manifest = read_jsonl(out / "manifest.jsonl")
    by_id = {r["video_id"]: r for r in manifest}
    assert sorted(by_id) == [f"{prefix}__a", f"{prefix}__b", f"{prefix}__sub__c"]
    # linspace(0, total - 1, 8) truncated, by hand: 29/7 = 4.14.., 19/7 = 2.71.., 39/7 = 5.57..
    assert by_id[f"{prefix}__a"]["indices"] == [0, 4, 8, 12, 16, 20, 24, 29]
    assert by_id[f"{prefix}__b"]["indices"] == [0, 2, 5, 8, 10, 13, 16, 19]
    assert by_id[f"{prefix}__sub__c"]["indices"] == [0, 5, 11, 16, 22, 27, 33, 39]
    for name, vid in [("a.mp4", "a"), ("b.avi", "b"), ("sub/c.MKV", "sub__c")]:
        rec = by_id[f"{prefix}__{vid}"]
        assert rec["num_frames"] == T and rec["format"] == "npy" and rec["short"] is False
        assert rec["source"] == str(videos / name)
        expected = read_frames(videos / name, num_frames=T)
        assert rec["total_frames"] == expected.total_frames
        frame_dir = out / rec["video_id"]
        assert frame_files(frame_dir) == [f"{p:04d}.npy" for p in range(T)]
        np.testing.assert_array_equal(load_npy_dir(frame_dir), expected.frames)  # exactly equal

    # --allow-failures: same failures, exit 0; the good videos are skipped, the failed ones retried.
    assert main(["extract-frames", str(listing), "--out", str(out), "--format", "npy", "--allow-failures"]) == 0
    assert sorted(f["video_id"] for f in read_jsonl(out / "failures.jsonl")) == sorted(failures)
    assert read_jsonl(out / "manifest.jsonl") == manifest


def test_cli_subprocess_exit_codes_and_summary(videos, tmp_path):
    bad = cli("extract-frames", videos, "--out", tmp_path / "o1", "--num-frames", "4")
    assert bad.returncode == 1
    assert "failed" in bad.stdout and "corrupt" in bad.stdout
    ok = cli("extract-frames", videos, "--out", tmp_path / "o2", "--num-frames", "4", "--allow-failures")
    assert ok.returncode == 0
    missing = cli("extract-frames", tmp_path / "nope", "--out", tmp_path / "o3")
    assert missing.returncode == 2 and "nope" in missing.stderr


def test_short_clip_is_marked(videos, tmp_path):
    out = tmp_path / "out"
    assert main(["extract-frames", str(videos / "short.mp4"), "--out", str(out), "--format", "npy"]) == 0
    (rec,) = read_jsonl(out / "manifest.jsonl")
    assert rec["short"] is True and "5 frames available" in rec["warnings"][0]
    assert rec["indices"] == [0, 0, 1, 1, 2, 2, 3, 4]  # Video-LLaVA's linspace over the 5 frames
    frames = load_npy_dir(out / "short")
    assert frames.shape[0] == T
    for a, b in ((0, 1), (2, 3), (4, 5)):
        np.testing.assert_array_equal(frames[a], frames[b])


def test_duplicate_video_ids_fail_both(tmp_path):
    write_clip(tmp_path / "in" / "x.mp4", clip(10, seed=5))
    write_clip(tmp_path / "in" / "x.avi", clip(10, seed=6), codec="mpeg4")
    write_clip(tmp_path / "in" / "y.mp4", clip(10, seed=7))
    out = tmp_path / "out"
    assert main(["extract-frames", str(tmp_path / "in"), "--out", str(out)]) == 1
    failures = read_jsonl(out / "failures.jsonl")
    assert [(f["video_id"], f["error"]) for f in failures] == [("x", "DuplicateVideoId")] * 2
    assert [r["video_id"] for r in read_jsonl(out / "manifest.jsonl")] == ["y"]
    assert not (out / "x").exists()


def test_two_workers_match_one(videos, tmp_path):
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        main(["extract-frames", str(videos), "--out", str(out), "--workers", str(workers), "--allow-failures"])
        outs.append(out)
    one, two = outs
    assert (one / "manifest.jsonl").read_bytes() == (two / "manifest.jsonl").read_bytes()
    assert (one / "failures.jsonl").read_bytes() == (two / "failures.jsonl").read_bytes()
    ids = [r["video_id"] for r in read_jsonl(one / "manifest.jsonl")]
    assert ids == ["a", "b", "short", "sub__c"]
    for vid in ids:
        assert frame_files(one / vid) == frame_files(two / vid) == [f"{p:04d}.jpg" for p in range(T)]
        for name in frame_files(one / vid):
            assert (one / vid / name).read_bytes() == (two / vid / name).read_bytes()


def summary_table(stdout: str) -> dict[str, str]:
    """The end-of-run table's rows (label -> value) from the CLI's stdout."""
    return dict(line.rsplit(None, 1) for line in stdout.splitlines() if line[:1].isalpha() and "  " in line)


def assert_complete(out, ids, num_frames, fmt="jpg"):
    """Every video exactly once in the manifest, each frame dir with exactly num_frames frames, no temp dirs."""
    lines = (out / "manifest.jsonl").read_text().splitlines()
    manifest_ids = [json.loads(line)["video_id"] for line in lines]  # every line parses
    assert sorted(manifest_ids) == sorted(ids)  # each exactly once
    for vid in ids:
        assert frame_files(out / vid) == [f"{p:04d}.{fmt}" for p in range(num_frames)]
        with open(out / vid / "frames.json") as f:
            assert len(json.load(f)["indices"]) == num_frames
    assert not [n for n in os.listdir(out) if n.endswith((".tmp", ".old", ".part"))]


def test_resume_after_simulated_kill(tmp_path):
    src = tmp_path / "in"
    ids = [f"v{i}" for i in range(7)]
    for i, vid in enumerate(ids):
        write_clip(src / f"{vid}.mp4", clip(12 + i, seed=10 + i))
    out = tmp_path / "out"
    args = ["extract-frames", str(src), "--out", str(out), "--num-frames", "4", "--format", "npy"]
    assert main(args) == 0
    before = {vid: load_npy_dir(out / vid) for vid in ids}

    # What a kill can leave behind:
    os.remove(out / "v0" / "frames.json")  # v0: a dir without frames.json
    leftover = out / ".v1.0123abcd.tmp"  # v1: a temp dir from a write that never finished
    leftover.mkdir()
    np.save(leftover / "0000.npy", np.zeros((2, 2, 3), np.uint8))
    (out / ".v1.4567cdef.tmp.old").mkdir()
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(line)["video_id"] for line in lines] == ids  # sorted by id
    lines = [line for line in lines if json.loads(line)["video_id"] != "v2"]  # v2: dir complete, no manifest line
    shutil.rmtree(out / "v3")  # v3: manifest line, no dir
    lines.append(lines[-2])  # v5 twice
    lines.append(lines[-2][: len(lines[-2]) // 2])  # v6's line cut off mid-way (and no newline)
    (out / "manifest.jsonl").write_text("\n".join(lines))

    main(args)
    # Redone: v0 (no frames.json), v2 (not in manifest), v3 (dir gone), v6 (its line was cut off).
    result_lines = read_jsonl(out / "manifest.jsonl")
    assert_complete(out, ids, 4, "npy")
    for vid in ids:
        np.testing.assert_array_equal(load_npy_dir(out / vid), before[vid])
    assert [r["video_id"] for r in result_lines] == ids


def test_resume_counts(tmp_path, capsys):
    src = tmp_path / "in"
    for i in range(4):
        write_clip(src / f"v{i}.mp4", clip(10, seed=i))
    out = tmp_path / "out"
    assert main(["extract-frames", str(src), "--out", str(out), "--num-frames", "3"]) == 0
    os.remove(out / "v1" / "frames.json")
    capsys.readouterr()
    assert main(["extract-frames", str(src), "--out", str(out), "--num-frames", "3"]) == 0
    table = summary_table(capsys.readouterr().out)
    assert table["extracted"] == "1" and table["skipped (already complete)"] == "3" and table["failed"] == "0"
    # --overwrite redoes everything.
    assert main(["extract-frames", str(src), "--out", str(out), "--num-frames", "3", "--overwrite"]) == 0
    table = summary_table(capsys.readouterr().out)
    assert table["extracted"] == "4" and table["skipped (already complete)"] == "0"
    # A different T makes every dir incomplete: all redone, with the new count.
    assert main(["extract-frames", str(src), "--out", str(out), "--num-frames", "5"]) == 0
    assert_complete(out, [f"v{i}" for i in range(4)], 5)


def test_resume_after_real_kill(tmp_path):
    src = tmp_path / "in"
    ids = [f"v{i:02d}" for i in range(30)]
    for i, vid in enumerate(ids):
        write_clip(src / f"{vid}.mp4", clip(40, seed=100 + i, height=96, width=128))
    out = tmp_path / "out"
    args = ["extract-frames", src, "--out", out, "--num-frames", "16", "--workers", "2"]

    proc = cli_popen(*args)
    deadline = time.monotonic() + 60
    finished = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            finished = (out / "manifest.jsonl").read_text().count("\n")
        except FileNotFoundError:
            pass
        if finished >= 3:
            os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its pool workers
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert 3 <= finished < len(ids), f"killed after {finished} videos: not half way"

    done = cli(*args)
    assert done.returncode == 0, done.stderr
    assert_complete(out, ids, 16)
    for vid in ids[::7]:  # spot-check content against a direct read
        expected = read_frames(src / f"{vid}.mp4", num_frames=16)
        assert read_frames(out / vid, num_frames=16).indices == expected.indices
