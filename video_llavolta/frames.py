"""Frame sampling for Video-LLaVA: uniform frame indices and three readers (decord, PyAV, frame dirs).

Sampling. Video-LLaVA feeds T frames taken uniformly over a clip:
``np.linspace(first, last, T, dtype=int)`` with first=0 and last=total-1, e.g. total=100, T=8 gives
[0, 14, 28, 42, 56, 70, 84, 99]. With ``start``/``end`` (seconds) the window is the frames shown
during [start, end]: frame i is on screen from i/fps to (i+1)/fps, so the window is
floor(start*fps) .. ceil(end*fps)-1, clipped to the clip.

Short clips. A clip (or window) with n < T frames is sampled by one of two named policies
(`SHORT_CLIP_POLICIES`): "linspace", upstream's (Video-LLaVA applies the same ``linspace`` to every
clip, so indices repeat: n=5, T=8 gives [0, 0, 1, 1, 2, 2, 3, 4]), the default; or "repeat_last",
every frame once and then the last one repeated up to T: [0, 1, 2, 3, 4, 4, 4, 4]. The model
always gets exactly T frames in time order, and `read_frames` emits a `ShortVideoWarning` naming the
path, the counts and the policy. A model config names its policy in `llavolta_short_clip`
(`video_llavolta.modeling.short_clip_policy`).

Backends. ``backend="auto"`` reads a directory as a frame directory and a file with decord (random
access: it seeks to the keyframe before each index instead of decoding the whole clip), falling back
to PyAV when decord is not installed or raises on the file. PyAV decodes sequentially and stops after
the last needed frame. Both convert the decoded picture to packed RGB (rgb24) at its native size
with FFmpeg's swscale (decord in its filter graph, PyAV in ``to_ndarray(format="rgb24")``); the
tests check that the two return bit-identical frames.

PyAV does not trust the container's frame count: when it is missing (mkv, webm) the frames are
counted by decoding; when the stream ends (or hits a decode error) before a needed index, the
indices are recomputed over the frames that really decode. A decode error ends the stream at the
last good frame, with a RuntimeWarning. (A count that is too small can't be noticed without decoding
the whole clip; the sample then spans only the frames the container admits to.)

Frame directories (written by `write_frame_dir`, read by `read_frames`)::

    <dir>/frames.json   {"source": str, "total_frames": int, "fps": float,
                         "indices": [int, ...], "format": "jpg" | "npy"}
    <dir>/0000.jpg      one RGB frame per sampled position 0..len(indices)-1, named
    <dir>/0001.jpg      {position:04d}.{format}; "npy" files hold a uint8 H x W x 3 array
    ...

``indices[p]`` is the source frame index of position p. The directory is written into a hidden
temporary sibling (``.<name>.<random>.tmp``), with frames.json last, and renamed into place, so a
killed job never leaves a directory that looks finished (only a ``.tmp`` sibling to delete).
Reading a directory with T stored frames returns them; with more, ``np.linspace(0, stored-1, T,
dtype=int)`` of them; with fewer, a ValueError (frames that were never stored can't be recovered).
A directory that holds every frame of its clip (a short clip's: either policy repeats frames,
never skips one) is sampled as the video itself would be, with the policy asked for, whichever
policy wrote it.

Errors. Every failure to read a video is a `VideoError` carrying the path as ``.path``:
`VideoNotFoundError` (also a FileNotFoundError), `VideoDecodeError` (not a video, no backend can
open it, corrupt frame directory) and `EmptyVideoError` (a video stream with no decodable frame).
Raw decord / PyAV exceptions never escape, and no other clip or frame is substituted. Bad arguments
(num_frames < 1, start/end outside the clip) are ValueErrors.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import uuid
import warnings
from dataclasses import dataclass

import numpy as np

BACKENDS = ("auto", "decord", "pyav", "frames")
SHORT_CLIP_POLICIES = ("linspace", "repeat_last")
DEFAULT_SHORT_CLIP = "linspace"  # Video-LLaVA's
FRAME_FORMATS = ("jpg", "npy")
# Containers read as videos, in the order a video name's lookup prefers them: Video-LLaVA's QA scripts try
# .mp4 .avi .mov .mkv; .webm (among ActivityNet's downloads) comes last.
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
# FFmpeg's tty/bintext demuxers render text files as "ANSI art" video; a text file is not a clip.
_TEXT_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})


class VideoError(Exception):
    """A video (file or frame directory) could not be read; ``.path`` names it."""

    def __init__(self, path, message: str):
        super().__init__(f"{path}: {message}")
        self.path = str(path)
        self.message = message

    def __reduce__(self):
        # Rebuild from (path, message) so the error survives pickling (e.g. DataLoader workers).
        return type(self), (self.path, self.message)


class VideoNotFoundError(VideoError, FileNotFoundError):
    """The video file or frame directory does not exist."""


class VideoDecodeError(VideoError):
    """Not a video, no backend can open it, or a frame directory is incomplete or corrupt."""


class EmptyVideoError(VideoError):
    """The file has a video stream but not a single decodable frame."""


class ShortVideoWarning(UserWarning):
    """The clip has fewer frames than asked for; some frames are repeated (see the short-clip policies)."""


@dataclass
class SampledFrames:
    """T sampled frames of one clip and where they came from."""

    frames: np.ndarray  # uint8, T x H x W x 3, RGB
    indices: list[int]  # source frame index of each of the T frames
    total_frames: int  # frames in the source clip
    fps: float  # source frame rate (0.0 when the container does not say)
    backend: str  # "decord" | "pyav" | "frames"
    source: str = ""  # the video path (for a frame directory: the video it was extracted from)


def sample_indices(
    total: int,
    num_frames: int,
    fps: float | None = None,
    start: float | None = None,
    end: float | None = None,
    short_clip: str = DEFAULT_SHORT_CLIP,
) -> list[int]:
    """Video-LLaVA's uniform frame indices over the clip, or over [start, end] seconds."""
    if total < 1:
        raise ValueError(f"total must be >= 1, got {total}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    _check_policy(short_clip)
    first, last = _window(total, fps, start, end)
    available = last - first + 1
    if available < num_frames and short_clip == "repeat_last":
        return list(range(first, last + 1)) + [last] * (num_frames - available)
    return np.linspace(first, last, num_frames, dtype=int).tolist()


def _check_policy(short_clip: str) -> None:
    if short_clip not in SHORT_CLIP_POLICIES:
        raise ValueError(f"short_clip must be one of {SHORT_CLIP_POLICIES}, got {short_clip!r}")


def _window(total: int, fps: float | None, start: float | None, end: float | None) -> tuple[int, int]:
    """First and last frame index shown during [start, end] seconds (the whole clip by default)."""
    if start is None and end is None:
        return 0, total - 1
    if fps is None or not fps > 0:
        raise ValueError(f"start/end in seconds need the clip's fps, got fps={fps}")
    duration = total / fps
    start = 0.0 if start is None else float(start)
    end = duration if end is None else float(end)
    eps = 1e-6  # absorb float noise such as 2.0 * 29.97 = 59.939999...
    if not (0.0 <= start < end <= duration + eps):
        raise ValueError(
            f"need 0 <= start < end <= clip duration ({duration:.3f}s, {total} frames at {fps:g} fps); "
            f"got start={start}, end={end}"
        )
    first = min(math.floor(start * fps + eps), total - 1)
    last = min(math.ceil(end * fps - eps) - 1, total - 1)
    return first, max(first, last)


def read_frames(
    path: str | os.PathLike,
    num_frames: int = 8,
    start: float | None = None,
    end: float | None = None,
    backend: str = "auto",
    short_clip: str = DEFAULT_SHORT_CLIP,
) -> SampledFrames:
    """Sample ``num_frames`` RGB frames uniformly from a video file or a frame directory."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    _check_policy(short_clip)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise VideoNotFoundError(path, "no such file or directory")

    if os.path.isdir(path):
        if backend not in ("auto", "frames"):
            raise VideoDecodeError(path, f"is a directory; backend={backend!r} reads video files")
        sampled = _read_frame_dir(path, num_frames, start, end, short_clip)
    elif backend == "frames":
        raise VideoDecodeError(path, "backend='frames' reads frame directories, this is a file")
    else:
        reader = {"pyav": _read_pyav, "decord": _read_decord, "auto": _read_auto}[backend]
        sampled = reader(path, num_frames, start, end, short_clip)

    distinct = len(set(sampled.indices))
    if distinct < num_frames:
        how = (
            "every frame once, the last one repeated"
            if short_clip == "repeat_last"
            else "linspace over them, so frames repeat"
        )
        warnings.warn(
            ShortVideoWarning(
                f"{path}: {distinct} frames available, {num_frames} asked for; short_clip={short_clip!r}: {how}"
            ),
            stacklevel=2,
        )
    return sampled


def _read_auto(path: str, num_frames: int, start, end, short_clip: str) -> SampledFrames:
    """decord when importable and able to read the file, else PyAV."""
    try:
        return _read_decord(path, num_frames, start, end, short_clip)
    except VideoError as decord_err:  # not installed, can't open, or failed mid-read: PyAV decides
        try:
            return _read_pyav(path, num_frames, start, end, short_clip)
        except VideoDecodeError as err:
            raise VideoDecodeError(path, f"{err.message}; decord: {decord_err.message}") from err


def _read_decord(path: str, num_frames: int, start, end, short_clip: str) -> SampledFrames:
    """Random access with decord: get_batch seeks to each index instead of decoding everything."""
    try:
        import decord
    except ImportError as err:
        raise VideoDecodeError(path, "decord is not installed") from err
    try:
        vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
        total, fps = len(vr), float(vr.get_avg_fps())
    except Exception as err:  # decord raises RuntimeError/DECORDError with C++ log text
        raise VideoDecodeError(path, f"decord cannot open it ({_first_line(err)})") from err
    if total == 0:
        raise EmptyVideoError(path, "decord found no frames")
    indices = sample_indices(total, num_frames, fps, start, end, short_clip)
    try:
        frames = vr.get_batch(indices).asnumpy()
    except Exception as err:
        raise VideoDecodeError(path, f"decord failed to decode frames ({_first_line(err)})") from err
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[0] != num_frames or frames.shape[3] != 3:
        raise VideoDecodeError(path, f"decord returned frames of shape {frames.shape}, dtype {frames.dtype}")
    return SampledFrames(frames, indices, total, fps, "decord", path)


def _read_pyav(path: str, num_frames: int, start, end, short_clip: str) -> SampledFrames:
    """Sequential decoding with PyAV, stopping after the last needed frame."""
    with _open_av(path) as container:
        stream = _video_stream(container, path)
        total = stream.frames
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
    if total <= 0:  # no frame count in the container (mkv, webm, ...): count by decoding
        _, total = _decode_av(path, set(), math.inf)
    for _ in range(2):
        if total == 0:
            raise EmptyVideoError(path, "video stream has no decodable frames")
        indices = sample_indices(total, num_frames, fps, start, end, short_clip)
        kept, decoded = _decode_av(path, set(indices), max(indices))
        if decoded > max(indices):
            return SampledFrames(_stack(path, [kept[i] for i in indices]), indices, total, fps, "pyav", path)
        # The container promised more frames than decode: resample over the ones that exist.
        total = decoded
    raise VideoDecodeError(path, "frame count changed between two decoding passes")


def _open_av(path: str):
    """av.open with every failure turned into a VideoDecodeError."""
    import av

    try:
        return av.open(path)
    except Exception as err:  # av.error.InvalidDataError, EOFError, PermissionError, ...
        raise VideoDecodeError(path, f"not a readable video ({_first_line(err)})") from err


def _video_stream(container, path: str):
    """The first video stream; text files that FFmpeg renders as ANSI art are rejected."""
    if not container.streams.video:
        raise VideoDecodeError(path, "no video stream")
    stream = container.streams.video[0]
    if stream.codec_context.name in _TEXT_CODECS:
        raise VideoDecodeError(path, f"a text file, not a video (FFmpeg reads it as {stream.codec_context.name!r})")
    return stream


def _decode_av(path: str, wanted: set[int], last: float) -> tuple[dict[int, np.ndarray], int]:
    """Decode frames 0..last in order; return the wanted ones as RGB and how many frames decoded."""
    kept: dict[int, np.ndarray] = {}
    n = 0
    with _open_av(path) as container:
        stream = _video_stream(container, path)
        try:
            for frame in container.decode(stream):
                if n in wanted:
                    kept[n] = frame.to_ndarray(format="rgb24")
                n += 1
                if n > last:
                    break
        except Exception as err:  # corrupt or truncated data: the stream ends at the last good frame
            warnings.warn(
                f"{path}: decode error after {n} frames ({_first_line(err)}); treating the clip as {n} frames long",
                RuntimeWarning,
                stacklevel=3,
            )
    return kept, n


def _stack(path: str, frames: list[np.ndarray]) -> np.ndarray:
    """Stack equally sized H x W x 3 uint8 frames, or raise VideoDecodeError."""
    shapes = {f.shape for f in frames}
    if len(shapes) != 1 or len(frames[0].shape) != 3 or frames[0].shape[2] != 3:
        raise VideoDecodeError(path, f"frames have inconsistent or non-RGB shapes {sorted(shapes)}")
    return np.stack(frames).astype(np.uint8, copy=False)


def _first_line(err: Exception) -> str:
    """First line of an exception message (decord appends whole C++ stack traces)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# ---------------------------------------------------------------------------------------------------
# Frame directories


def frame_dir_name(video: str) -> str:
    """A video's frame-directory name from its path relative to the video root: no extension, separators -> "__"."""
    stem = os.path.splitext(os.path.normpath(video))[0]
    return "__".join(part for part in re.split(r"[\\/]", stem) if part not in ("", "."))


def video_source(video: str, video_root: str | os.PathLike, frames_root: str | os.PathLike | None = None) -> str:
    """The finished frame directory `frames_root/<frame_dir_name>` (it has frames.json) if any, else the video file."""
    if frames_root is not None:
        frame_dir = os.path.join(frames_root, frame_dir_name(video))
        if os.path.isfile(os.path.join(frame_dir, "frames.json")):
            return frame_dir
    return os.path.join(video_root, video)


def write_frame_dir(
    out_dir: str | os.PathLike,
    sampled: SampledFrames,
    fmt: str = "jpg",
    quality: int = 95,
) -> str:
    """Write sampled frames as a frame directory, atomically (temp sibling + rename); returns its path."""
    if fmt not in FRAME_FORMATS:
        raise ValueError(f"fmt must be one of {FRAME_FORMATS}, got {fmt!r}")
    frames = np.asarray(sampled.frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"frames must be uint8 T x H x W x 3, got {frames.dtype} {frames.shape}")
    if len(sampled.indices) != len(frames):
        raise ValueError(f"{len(frames)} frames but {len(sampled.indices)} indices")

    out_dir = os.path.abspath(os.fspath(out_dir))
    parent, name = os.path.split(out_dir)
    os.makedirs(parent, exist_ok=True)
    # Same parent, so the final rename stays on one filesystem and is atomic.
    tmp = os.path.join(parent, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
    os.mkdir(tmp)
    try:
        for pos, frame in enumerate(frames):
            _save_frame(os.path.join(tmp, f"{pos:04d}.{fmt}"), frame, fmt, quality)
        meta = {
            "source": str(sampled.source),
            "total_frames": int(sampled.total_frames),
            "fps": float(sampled.fps),
            "indices": [int(i) for i in sampled.indices],
            "format": fmt,
        }
        with open(os.path.join(tmp, "frames.json"), "w") as f:  # last: its presence marks completeness
            json.dump(meta, f)
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _move_into_place(tmp: str, out_dir: str) -> None:
    """Rename a finished temp dir to out_dir, replacing an existing dir (one writer per dir)."""
    if not os.path.lexists(out_dir):
        os.rename(tmp, out_dir)
        return
    # rename() can't replace a non-empty dir: move the old one aside first, delete it after.
    old = f"{tmp}.old"
    os.rename(out_dir, old)
    os.rename(tmp, out_dir)
    if os.path.isdir(old):
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.remove(old)


def _save_frame(path: str, frame: np.ndarray, fmt: str, quality: int) -> None:
    """Write one H x W x 3 uint8 frame as JPEG or .npy."""
    if fmt == "npy":
        np.save(path, np.ascontiguousarray(frame), allow_pickle=False)
    else:
        from PIL import Image

        Image.fromarray(frame).save(path, format="JPEG", quality=quality)


def _read_frame_dir(path: str, num_frames: int, start, end, short_clip: str) -> SampledFrames:
    """Read num_frames frames from a frame directory (see the module docstring for the layout)."""
    if start is not None or end is not None:
        raise ValueError(f"{path}: start/end can't be applied to an already sampled frame directory")
    meta_path = os.path.join(path, "frames.json")
    if not os.path.isfile(meta_path):
        raise VideoDecodeError(path, "no frames.json: not a frame directory, or an unfinished write")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        indices = [int(i) for i in meta["indices"]]
        fmt = meta["format"]
        total, fps, source = int(meta["total_frames"]), float(meta["fps"]), str(meta["source"])
        if fmt not in FRAME_FORMATS or not indices:
            raise ValueError(f"format={fmt!r}, {len(indices)} indices")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise VideoDecodeError(meta_path, f"corrupt frames.json ({err})") from err

    stored = len(indices)
    distinct = sorted(set(indices))
    if distinct[-1] - distinct[0] + 1 == len(distinct):
        # every frame of the clip is stored (a short clip, or one of exactly T frames): sample them as the video
        first_position = {index: p for p, index in reversed(list(enumerate(indices)))}
        positions = [
            first_position[distinct[i]] for i in sample_indices(len(distinct), num_frames, short_clip=short_clip)
        ]
    elif stored < num_frames:
        raise ValueError(
            f"{path}: frame directory holds {stored} frames but {num_frames} were asked for; "
            f"re-extract it with num_frames >= {num_frames}"
        )
    elif stored == num_frames:
        positions = list(range(stored))
    else:
        positions = np.linspace(0, stored - 1, num_frames, dtype=int).tolist()
    frames = [_load_frame(os.path.join(path, f"{p:04d}.{fmt}"), fmt) for p in positions]
    return SampledFrames(_stack(path, frames), [indices[p] for p in positions], total, fps, "frames", source)


def _load_frame(path: str, fmt: str) -> np.ndarray:
    """Load one stored frame as H x W x 3 uint8, or raise VideoDecodeError naming the file."""
    try:
        if fmt == "npy":
            frame = np.load(path, allow_pickle=False)
        else:
            from PIL import Image

            with Image.open(path) as im:
                frame = np.asarray(im.convert("RGB"))
    except FileNotFoundError as err:
        raise VideoDecodeError(path, "frame file is missing") from err
    except Exception as err:  # PIL.UnidentifiedImageError, truncated JPEG, bad .npy header, ...
        raise VideoDecodeError(path, f"corrupt frame file ({_first_line(err)})") from err
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise VideoDecodeError(path, f"frame is {frame.dtype} {frame.shape}, expected uint8 H x W x 3")
    return frame
