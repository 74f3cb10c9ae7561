"""Test helper: deterministic synthetic clips written with PyAV."""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np


def moving_squares(num_frames: int, height: int = 52, width: int = 70) -> np.ndarray:
    """T x H x W x 3 uint8 frames in which every frame is easy to tell apart, even after lossy coding.

    A fixed colour ramp, a background blue level that jumps by 37 (mod 256) per frame, and a
    yellow-ish square that moves diagonally; no randomness, so a clip is a pure function of its size.
    """
    ys, xs = np.mgrid[0:height, 0:width]
    side = max(4, min(height, width) // 4)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        frames[t, ..., 0] = xs * 255 // width
        frames[t, ..., 1] = ys * 255 // height
        frames[t, ..., 2] = (t * 37) % 256
        x0, y0 = (t * 5) % (width - side), (t * 3) % (height - side)
        frames[t, y0 : y0 + side, x0 : x0 + side] = (255, 255 - (t * 11) % 256, 0)
    return frames


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    codec: str = "libx264",
    fps: int | Fraction = 30,
    bit_rate: int | None = None,
    options: dict[str, str] | None = None,
) -> str:
    """Encode T x H x W x 3 uint8 RGB frames to a yuv420p clip; the container follows the extension.

    mpeg4 defaults to a low bit rate that blurs small test frames into each other, so it gets 4 Mb/s
    unless told otherwise. ``options`` go to the muxer (e.g. {"movflags": "faststart"}).
    """
    path = os.fspath(path)
    with av.open(path, mode="w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        if bit_rate or codec == "mpeg4":
            stream.bit_rate = bit_rate or 4_000_000
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():  # flush delayed (B-)frames
            container.mux(packet)
    return path


def write_empty_video(path: str | os.PathLike, codec: str = "mpeg4") -> str:
    """An AVI with a declared video stream and not a single packet: opens fine, decodes zero frames.

    (mp4/mov drop a track without samples and mkv/webm without clusters fail to open, so AVI it is.)
    """
    path = os.fspath(path)
    with av.open(path, mode="w", format="avi") as container:
        stream = container.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()  # write the header although no packet will ever come
    return path


def identify(frames: np.ndarray, reference: np.ndarray) -> list[int]:
    """For each decoded frame, the index of the closest reference frame (mean absolute difference)."""
    ref = reference.astype(np.int16)
    return [int(np.abs(ref - f.astype(np.int16)).mean(axis=(1, 2, 3)).argmin()) for f in frames]
