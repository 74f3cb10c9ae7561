"""Helpers for the data_prep tests: small clips written with PyAV, JSON(L) readers, running the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import av
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def clip(num_frames: int, seed: int, height: int = 48, width: int = 64) -> np.ndarray:
    """T x H x W x 3 uint8 frames: a seed-coloured background and a block that moves one step per frame."""
    rng = np.random.default_rng(seed)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    frames[:] = rng.integers(0, 200, 3, dtype=np.uint8)
    for t in range(num_frames):
        x, y = (3 * t) % (width - 12), (2 * t) % (height - 12)
        frames[t, y : y + 12, x : x + 12] = (255, (t * 23) % 256, 255 - (t * 7) % 256)
    return frames


def write_clip(path: str | os.PathLike, frames: np.ndarray, codec: str = "libx264", fps: int = 25) -> str:
    """Encode RGB frames to a yuv420p video; the container follows the file extension."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(path, mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if codec == "mpeg4":
            stream.bit_rate = 2_000_000
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def decode_all(path: str | os.PathLike) -> np.ndarray:
    """Every frame of a video, decoded with PyAV directly."""
    with av.open(os.fspath(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Every line of a JSONL file, parsed."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_json(path: str | os.PathLike):
    """A JSON file, parsed."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_json(path: str | os.PathLike, obj) -> str:
    """Write a JSON file (test input)."""
    path = os.fspath(path)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)
    return path


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m data_prep ARGS` in a subprocess from the repo root."""
    return subprocess.run(
        [sys.executable, "-m", "data_prep", *map(str, args)], cwd=REPO, capture_output=True, text=True, **kwargs
    )


def cli_popen(*args: str, **kwargs) -> subprocess.Popen:
    """Start `python -m data_prep ARGS` in its own process group (so a test can kill it with its workers)."""
    return subprocess.Popen(
        [sys.executable, "-m", "data_prep", *map(str, args)],
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **kwargs,
    )
