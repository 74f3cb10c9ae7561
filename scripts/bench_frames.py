"""Frame sampling speed: decord vs PyAV vs pre-extracted frame directories (jpg, npy), side by side.

Each clip is 320x240 libx264 (yuv420p, CRF 23, preset medium, x264's default keyframe interval of
250 plus scene-cut keyframes), 30 fps: a textured camera pan with a moving square, generated with
PyAV into a temp dir. Every reader samples Video-LLaVA's 8 uniform frames through
`video_llavolta.frames.read_frames` (open + sample + close, as a data loader does per clip).
Readers run interleaved, round by round; the median is reported.

Video-LLaVA's indices always include the clip's last frame, so a sequential decoder (PyAV) decodes the
whole clip; decord seeks to the keyframe before each index. The second table shows it: decord's time
for 8 frames against decord decoding every frame, and the frames each reader has to decode (for
decord an estimate from the keyframe positions: seek to the keyframe at or before each index, decode
forward, keep going forward when the next index is in the same GOP).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import av
import numpy as np

from video_llavolta.frames import read_frames, sample_indices, write_frame_dir

HEIGHT, WIDTH, FPS = 240, 320, 30
READERS = ("decord", "pyav", "frames-jpg", "frames-npy")


def clip_frames(num_frames: int, seed: int = 0):
    """Yield frames of a textured pan with a moving square (deterministic, compresses like real video)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (HEIGHT // 8 + 2, (WIDTH + 4 * num_frames) // 8 + 2, 3), dtype=np.uint8)
    texture = np.kron(coarse, np.ones((8, 8, 1), np.uint8))  # smooth-ish blocks; a pan moves them
    for t in range(num_frames):
        x = (2 * t) % (texture.shape[1] - WIDTH)
        frame = texture[:HEIGHT, x : x + WIDTH].copy()
        sx, sy = (7 * t) % (WIDTH - 40), (5 * t) % (HEIGHT - 40)
        frame[sy : sy + 40, sx : sx + 40] = (255, (9 * t) % 256, 0)
        yield frame


def write_clip(path: str, num_frames: int) -> None:
    """Encode one benchmark clip with PyAV (libx264 defaults)."""
    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.height, stream.width, stream.pix_fmt = HEIGHT, WIDTH, "yuv420p"
        for frame in clip_frames(num_frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def keyframes(path: str) -> list[int]:
    """Presentation indices of the keyframes, from packet timestamps (no decoding)."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.pts is not None]
    order = {pts: i for i, pts in enumerate(sorted(pts for pts, _ in packets))}
    return sorted(order[pts] for pts, key in packets if key)


def frames_decoded_by_seeking(indices: list[int], keys: list[int]) -> int:
    """Frames a seek-to-keyframe reader decodes for sorted indices (continuing forward within a GOP)."""
    decoded, position = 0, -1  # position: last frame decoded so far
    for index in indices:
        key = max(k for k in keys if k <= index)
        if position < key or position > index:  # must seek: decode from the keyframe
            decoded += index - key + 1
        else:  # already inside this GOP, before the target: keep decoding forward
            decoded += index - position
        position = index
    return decoded


def decord_decode_all(path: str) -> float:
    """Seconds for decord to decode every frame of a clip in order (what seeking avoids)."""
    import decord

    start = time.perf_counter()
    vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    for _ in range(len(vr)):
        vr.next()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per reader and clip (median reported)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512, 4096], help="clip lengths in frames")
    parser.add_argument("--frames", type=int, default=8, help="frames sampled per clip")
    parser.add_argument("--keep", help="write clips and frame dirs here and keep them (default: a temp dir)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or tmp
        os.makedirs(root, exist_ok=True)
        sources = {}
        for n in args.sizes:
            path = os.path.join(root, f"clip_{n}.mp4")
            start = time.perf_counter()
            write_clip(path, n)
            sampled = read_frames(path, args.frames, backend="pyav")
            sources[n, "decord"] = sources[n, "pyav"] = path
            for fmt in ("jpg", "npy"):
                sources[n, f"frames-{fmt}"] = write_frame_dir(os.path.join(root, f"clip_{n}_{fmt}"), sampled, fmt=fmt)
            size, seconds = os.path.getsize(path) / 1e6, time.perf_counter() - start
            print(f"clip {n:5d} frames: {size:6.2f} MB, written in {seconds:5.1f} s")

        for (_, reader), path in sources.items():  # warm-up: imports, page cache
            read_frames(path, args.frames, backend=reader.split("-")[0])
        times = {key: [] for key in sources}
        for _ in range(args.rounds):
            for (n, reader), path in sources.items():
                start = time.perf_counter()
                read_frames(path, args.frames, backend=reader.split("-")[0])
                times[n, reader].append(time.perf_counter() - start)

        print(
            f"\n{args.frames} frames per clip, median of {args.rounds} interleaved rounds "
            f"({HEIGHT}x{WIDTH} libx264, {FPS} fps; decord num_threads=1, PyAV default threading)"
        )
        print(f"{'clip':>6} {'reader':>11} {'ms/clip':>9} {'frames/s':>9} {'time / decord':>14}")
        for n in args.sizes:
            base = statistics.median(times[n, "decord"])
            for reader in READERS:
                t = statistics.median(times[n, reader])
                print(f"{n:6d} {reader:>11} {t * 1e3:9.2f} {args.frames / t:9.0f} {t / base:13.2f}x")

        print("\ndecord seeks instead of decoding the whole clip:")
        print(
            f"{'clip':>6} {'keyframes':>9} {'decoded: decord (est.)':>23} {'pyav':>6} "
            f"{'decord 8 frames':>16} {'decord all frames':>18}"
        )
        for n in args.sizes:
            path = sources[n, "decord"]
            keys = keyframes(path)
            indices = sample_indices(n, args.frames)
            all_s = decord_decode_all(path)
            print(
                f"{n:6d} {len(keys):9d} {frames_decoded_by_seeking(indices, keys):23d} {max(indices) + 1:6d} "
                f"{statistics.median(times[n, 'decord']) * 1e3:13.1f} ms {all_s * 1e3:15.1f} ms"
            )


if __name__ == "__main__":
    main()
