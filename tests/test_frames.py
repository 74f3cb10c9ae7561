"""Frame sampling: index formula, decord/PyAV agreement, error types, short clips, frame directories."""

from __future__ import annotations

import json
import os
import pickle
import sys
import warnings

import av
import numpy as np
import pytest
from videos import identify, moving_squares, write_empty_video, write_video

from video_llavolta import frames as vf
from video_llavolta.frames import (
    EmptyVideoError,
    SampledFrames,
    ShortVideoWarning,
    VideoDecodeError,
    VideoError,
    VideoNotFoundError,
    read_frames,
    sample_indices,
    write_frame_dir,
)

try:
    import decord
except ImportError:  # decord ships x86_64 wheels only; PyAV-only tests still run elsewhere
    decord = None
needs_decord = pytest.mark.skipif(decord is None, reason="decord is not installed")

H, W = 52, 70  # deliberately not a multiple of 16


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """(codec, n) -> (path, source frames) for libx264 and mpeg4 clips of 8, 30 and 100 frames."""
    root = tmp_path_factory.mktemp("clips")
    out = {}
    for codec in ("libx264", "mpeg4"):
        for n in (8, 30, 100):
            src = moving_squares(n, H, W)
            out[codec, n] = (write_video(root / f"{codec}_{n}.mp4", src, codec=codec), src)
    return out


def decode_all(path) -> np.ndarray:
    """Every frame of a clip, decoded with PyAV directly (the test's own reference)."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


# --- sample_indices ------------------------------------------------------------------------------


def test_index_formula_by_hand():
    # linspace(0, 99, 8): steps of 99/7 = 14.142..., truncated.
    assert sample_indices(100, 8) == [0, 14, 28, 42, 56, 70, 84, 99]
    assert sample_indices(8, 8) == list(range(8))
    assert sample_indices(1, 3) == [0, 0, 0]


def test_short_clip_policies():
    """Video-LLaVA's processing_video.py samples np.linspace(0, duration - 1, num_frames, dtype=int) for every clip,
    however short: 5 frames, 8 asked -> linspace(0, 4, 8) = 0, .57, 1.14, 1.71, 2.29, 2.86, 3.43, 4 -> truncated."""
    assert sample_indices(5, 8) == [0, 0, 1, 1, 2, 2, 3, 4]  # the default: upstream's
    assert sample_indices(5, 8, short_clip="linspace") == [0, 0, 1, 1, 2, 2, 3, 4]
    assert sample_indices(5, 8, short_clip="repeat_last") == [0, 1, 2, 3, 4, 4, 4, 4]
    assert sample_indices(100, 8, short_clip="repeat_last") == sample_indices(100, 8)  # long clips: the same
    with pytest.raises(ValueError, match="short_clip must be one of"):
        sample_indices(5, 8, short_clip="loop")


def test_start_end_window_by_hand():
    # 300 frames at 30 fps, [2 s, 4 s] -> frames 60..119; linspace steps of 59/7 = 8.43.
    assert sample_indices(300, 8, fps=30, start=2, end=4) == [60, 68, 76, 85, 93, 102, 110, 119]
    assert sample_indices(300, 4, fps=30, start=9) == [270, 279, 289, 299]
    assert sample_indices(300, 2, fps=30, end=1) == [0, 29]
    # a 0.1 s window holds 3 frames (30, 31, 32): the short-clip policy applies inside it
    assert sample_indices(300, 5, fps=30, start=1.0, end=1.1) == [30, 30, 31, 31, 32]
    assert sample_indices(300, 5, fps=30, start=1.0, end=1.1, short_clip="repeat_last") == [30, 31, 32, 32, 32]


@pytest.mark.parametrize(
    "kwargs",
    [dict(start=4, end=2), dict(start=2, end=2), dict(start=-1, end=2), dict(start=2, end=11), dict(start=10.5)],
)
def test_start_end_validation(kwargs):
    with pytest.raises(ValueError, match="start"):
        sample_indices(300, 8, fps=30, **kwargs)


def test_start_end_need_fps_and_counts_must_be_positive():
    with pytest.raises(ValueError, match="fps"):
        sample_indices(300, 8, start=1, end=2)
    with pytest.raises(ValueError):
        sample_indices(0, 8)
    with pytest.raises(ValueError):
        sample_indices(10, 0)


# --- decord vs PyAV ---------------------------------------------------------------------------------


@needs_decord
@pytest.mark.parametrize("codec", ["libx264", "mpeg4"])
@pytest.mark.parametrize("n", [8, 30, 100])
def test_decord_and_pyav_identical(clips, codec, n):
    path, src = clips[codec, n]
    d = read_frames(path, 8, backend="decord")
    p = read_frames(path, 8, backend="pyav")
    assert (d.backend, p.backend) == ("decord", "pyav")
    assert d.indices == p.indices == sample_indices(n, 8)
    assert d.total_frames == p.total_frames == n
    assert d.fps == p.fps == 30.0
    assert d.frames.dtype == np.uint8 and d.frames.shape == (8, H, W, 3)
    assert np.array_equal(d.frames, p.frames)
    assert np.array_equal(p.frames, decode_all(path)[p.indices])
    assert identify(d.frames, src) == d.indices  # the right frames, not just the same ones


@needs_decord
def test_auto_prefers_decord(clips):
    path, _ = clips["libx264", 30]
    assert read_frames(path).backend == "decord"


@needs_decord
def test_start_end_read(tmp_path):
    src = moving_squares(100, H, W)
    path = write_video(tmp_path / "ten_seconds.mp4", src, fps=10)
    expected = [20, 22, 25, 28, 30, 33, 36, 39]  # [2 s, 4 s] at 10 fps = frames 20..39
    d = read_frames(path, 8, start=2, end=4, backend="decord")
    p = read_frames(path, 8, start=2, end=4, backend="pyav")
    assert d.indices == p.indices == expected
    assert np.array_equal(d.frames, p.frames)
    assert identify(p.frames, src) == expected
    with pytest.raises(ValueError, match="duration"):
        read_frames(path, 8, start=2, end=11)


@needs_decord
def test_missing_frame_count_is_counted_by_decoding(tmp_path):
    # Matroska stores no frame count (stream.frames == 0): PyAV has to count by decoding.
    src = moving_squares(37, H, W)
    path = write_video(tmp_path / "clip.mkv", src)
    with av.open(path) as container:
        assert container.streams.video[0].frames == 0
    p = read_frames(path, 8, backend="pyav")
    d = read_frames(path, 8, backend="decord")
    assert p.total_frames == d.total_frames == 37
    assert p.indices == d.indices == sample_indices(37, 8)
    assert np.array_equal(p.frames, d.frames)


def test_overstated_frame_count_resamples_real_frames(tmp_path):
    # faststart puts the index first; cutting the file in half leaves an index promising 40 frames.
    src = moving_squares(40, H, W)
    full = write_video(tmp_path / "full.mp4", src, options={"movflags": "faststart"})
    data = open(full, "rb").read()
    half = tmp_path / "half.mp4"
    half.write_bytes(data[: len(data) // 2])
    with av.open(str(half)) as container:
        assert container.streams.video[0].frames == 40
    with pytest.warns(RuntimeWarning, match="decode error"):
        p = read_frames(half, 8, backend="auto")  # decord can't read it, PyAV takes over
    assert p.backend == "pyav"
    assert 8 <= p.total_frames < 40
    assert p.indices == sample_indices(p.total_frames, 8)
    assert np.array_equal(p.frames, decode_all(full)[p.indices])


# --- short clips ------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", [pytest.param("decord", marks=needs_decord), "pyav"])
def test_short_clip_warns_and_repeats_last_frame(clips, backend):
    path, src = clips["libx264", 8]
    with pytest.warns(ShortVideoWarning, match=r"8 frames available, 12 asked for; short_clip='repeat_last'") as record:
        s = read_frames(path, 12, backend=backend, short_clip="repeat_last")
    assert str(path) in str(record[0].message)
    assert s.indices == list(range(8)) + [7, 7, 7, 7]
    assert s.frames.shape == (12, H, W, 3)
    assert all(np.array_equal(s.frames[i], s.frames[7]) for i in range(8, 12))
    assert identify(s.frames[:8], src) == list(range(8))


@pytest.mark.parametrize("backend", [pytest.param("decord", marks=needs_decord), "pyav"])
def test_short_clip_samples_linspace_by_default(clips, backend):
    path, src = clips["libx264", 8]
    with pytest.warns(ShortVideoWarning, match=r"short_clip='linspace'"):
        s = read_frames(path, 12, backend=backend)
    assert s.indices == np.linspace(0, 7, 12, dtype=int).tolist() == [0, 0, 1, 1, 2, 3, 3, 4, 5, 5, 6, 7]
    assert identify(s.frames, src) == s.indices


@pytest.mark.parametrize("written", ["linspace", "repeat_last"])
def test_short_clip_frame_dir_is_resampled_with_the_policy_asked_for(clips, tmp_path, written):
    path, src = clips["libx264", 8]
    with pytest.warns(ShortVideoWarning):
        sampled = read_frames(path, 12, backend="pyav", short_clip=written)
    frame_dir = write_frame_dir(tmp_path / "short", sampled, fmt="npy")
    for policy in ("linspace", "repeat_last"):
        with pytest.warns(ShortVideoWarning):
            s = read_frames(frame_dir, 12, short_clip=policy)
        assert s.indices == sample_indices(8, 12, short_clip=policy)
        assert identify(s.frames, src) == s.indices
    # it holds every frame of the clip, so fewer frames are sampled as from the video: linspace(0, 7, 6)
    s = read_frames(frame_dir, 6)
    assert s.indices == sample_indices(8, 6) == [0, 1, 2, 4, 5, 7]
    assert identify(s.frames, src) == s.indices


def test_no_warning_when_enough_frames(clips):
    path, _ = clips["mpeg4", 8]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_frames(path, 8, backend="pyav")


# --- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["auto", "decord", "pyav", "frames"])
def test_missing_path(tmp_path, backend):
    path = tmp_path / "nope.mp4"
    with pytest.raises(VideoNotFoundError) as info:
        read_frames(path, backend=backend)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, VideoError)
    assert info.value.path == str(path) and str(path) in str(info.value)


@pytest.mark.parametrize("backend", ["auto", "decord", "pyav"])
def test_random_bytes_are_not_a_video(tmp_path, backend):
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoDecodeError) as info:
        read_frames(path, backend=backend)
    assert info.value.path == str(path)


@pytest.mark.parametrize("backend", ["auto", "decord", "pyav"])
@pytest.mark.parametrize("text", ["hello\n", "lorem ipsum dolor sit amet\n" * 200])
def test_text_file_is_not_a_video(tmp_path, backend, text):
    # Both decord and PyAV *open* a long .txt file: FFmpeg's tty demuxer renders it as ANSI art.
    path = tmp_path / "notes.txt"
    path.write_text(text)
    with pytest.raises(VideoDecodeError) as info:
        read_frames(path, backend=backend)
    assert info.value.path == str(path)


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in list(stream.encode(frame)) + list(stream.encode()):
            container.mux(packet)
    with pytest.raises(VideoDecodeError, match="no video stream"):
        read_frames(path, backend="pyav")
    with pytest.raises(VideoDecodeError):
        read_frames(path)


@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_video_stream_without_packets_is_empty(tmp_path, backend):
    path = write_empty_video(tmp_path / "empty.avi")
    with av.open(path) as container:  # really a video stream, and really no frame
        assert len(container.streams.video) == 1
        assert sum(1 for _ in container.decode(video=0)) == 0
    with pytest.raises(EmptyVideoError) as info:
        read_frames(path, backend=backend)
    assert info.value.path == path


def test_decord_alone_reports_unreadable_empty_video(tmp_path):
    path = write_empty_video(tmp_path / "empty.avi")
    with pytest.raises(VideoError) as info:  # decord refuses to open it at all
        read_frames(path, backend="decord")
    assert info.value.path == path


def test_index_promising_frames_with_no_data_is_empty(tmp_path):
    # The index says 10 frames, the media data was cut right after its header: nothing decodes.
    full = write_video(tmp_path / "full.mp4", moving_squares(10, H, W), options={"movflags": "faststart"})
    data = open(full, "rb").read()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: data.index(b"mdat") + 4])
    with av.open(str(cut)) as container:
        assert container.streams.video[0].frames == 10
    with pytest.raises(EmptyVideoError):
        read_frames(cut)


def test_errors_pickle():
    err = pickle.loads(pickle.dumps(VideoNotFoundError("/x/clip.mp4", "no such file")))
    assert isinstance(err, FileNotFoundError) and err.path == "/x/clip.mp4"
    assert str(err) == "/x/clip.mp4: no such file"


def test_bad_arguments(clips):
    path, _ = clips["libx264", 8]
    with pytest.raises(ValueError):
        read_frames(path, 0)
    with pytest.raises(ValueError):
        read_frames(path, backend="opencv")


# --- backend fallback --------------------------------------------------------------------------------


@needs_decord
def test_falls_back_to_pyav_when_decord_cannot_open(clips, monkeypatch):
    path, _ = clips["libx264", 30]
    expected = read_frames(path, 8, backend="decord").frames

    def refuse(*args, **kwargs):
        raise RuntimeError("decord: unsupported format")

    monkeypatch.setattr(decord, "VideoReader", refuse)
    s = read_frames(path, 8)
    assert s.backend == "pyav" and np.array_equal(s.frames, expected)
    with pytest.raises(VideoDecodeError, match="unsupported format"):
        read_frames(path, 8, backend="decord")


def test_falls_back_to_pyav_without_decord(clips, monkeypatch):
    path, _ = clips["mpeg4", 30]
    monkeypatch.setitem(sys.modules, "decord", None)  # makes `import decord` raise ImportError
    assert read_frames(path, 8).backend == "pyav"


# --- frame directories -------------------------------------------------------------------------------


def test_npy_frame_dir_is_identical(clips, tmp_path):
    path, _ = clips["libx264", 100]
    direct = read_frames(path, 8)
    out = write_frame_dir(tmp_path / "clip", direct, fmt="npy")
    assert sorted(os.listdir(out)) == [f"{i:04d}.npy" for i in range(8)] + ["frames.json"]
    meta = json.loads(open(os.path.join(out, "frames.json")).read())
    assert meta == {"source": path, "total_frames": 100, "fps": 30.0, "indices": direct.indices, "format": "npy"}
    stored = read_frames(out, 8)
    assert stored.backend == "frames"
    assert (stored.indices, stored.total_frames, stored.fps, stored.source) == (direct.indices, 100, 30.0, path)
    assert np.array_equal(stored.frames, direct.frames)


def test_jpg_frame_dir_is_close(clips, tmp_path):
    path, _ = clips["mpeg4", 100]
    direct = read_frames(path, 8)
    stored = read_frames(write_frame_dir(tmp_path / "clip", direct, fmt="jpg", quality=95), 8)
    assert stored.indices == direct.indices and stored.frames.shape == direct.frames.shape
    diff = np.abs(stored.frames.astype(np.int16) - direct.frames.astype(np.int16))
    assert diff.mean() < 2.0  # JPEG at quality 95 is lossy but close


def test_frame_dir_with_more_frames_subsamples(clips, tmp_path):
    path, _ = clips["libx264", 100]
    sixteen = read_frames(path, 16)
    s = read_frames(write_frame_dir(tmp_path / "clip", sixteen, fmt="npy"), 8)
    positions = [0, 2, 4, 6, 8, 10, 12, 15]  # linspace(0, 15, 8) truncated
    assert s.indices == [sixteen.indices[p] for p in positions]
    assert np.array_equal(s.frames, sixteen.frames[positions])


def test_frame_dir_with_fewer_frames_refuses(clips, tmp_path):
    path, _ = clips["libx264", 100]
    out = write_frame_dir(tmp_path / "clip", read_frames(path, 4), fmt="npy")
    with pytest.raises(ValueError, match="holds 4 frames but 8") as info:
        read_frames(out, 8)
    assert out in str(info.value)
    with pytest.raises(ValueError, match="start/end"):
        read_frames(out, 4, start=0, end=1)


def test_frame_dir_errors_name_the_file(clips, tmp_path):
    path, _ = clips["libx264", 30]
    sampled = read_frames(path, 8)

    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(VideoDecodeError, match="frames.json") as info:
        read_frames(bare)
    assert info.value.path == str(bare)

    missing = write_frame_dir(tmp_path / "missing", sampled, fmt="npy")
    os.remove(os.path.join(missing, "0003.npy"))
    with pytest.raises(VideoDecodeError, match="missing") as info:
        read_frames(missing)
    assert info.value.path == os.path.join(missing, "0003.npy")

    corrupt = write_frame_dir(tmp_path / "corrupt", sampled, fmt="jpg")
    with open(os.path.join(corrupt, "0005.jpg"), "wb") as f:
        f.write(b"not a jpeg")
    with pytest.raises(VideoDecodeError) as info:
        read_frames(corrupt)
    assert info.value.path == os.path.join(corrupt, "0005.jpg")

    bad_json = write_frame_dir(tmp_path / "bad_json", sampled, fmt="npy")
    with open(os.path.join(bad_json, "frames.json"), "w") as f:
        f.write("{truncated")
    with pytest.raises(VideoDecodeError) as info:
        read_frames(bad_json)
    assert info.value.path == os.path.join(bad_json, "frames.json")

    with pytest.raises(VideoDecodeError):
        read_frames(missing, backend="pyav")  # a directory is not a file for PyAV


def test_frame_dir_write_is_atomic(clips, tmp_path, monkeypatch):
    path, _ = clips["libx264", 30]
    sampled = read_frames(path, 8)
    save = vf._save_frame

    def die_on_fourth(file, frame, fmt, quality):
        if file.endswith("0003.npy"):
            raise KeyboardInterrupt  # like a job killed mid-write
        save(file, frame, fmt, quality)

    monkeypatch.setattr(vf, "_save_frame", die_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        write_frame_dir(tmp_path / "clip", sampled, fmt="npy")
    assert os.listdir(tmp_path) == []  # neither a half-written dir nor a leftover temp dir


def test_frame_dir_rewrite_replaces_old(clips, tmp_path):
    path, _ = clips["libx264", 30]
    out = write_frame_dir(tmp_path / "clip", read_frames(path, 16), fmt="jpg")
    write_frame_dir(out, read_frames(path, 8), fmt="npy")
    assert sorted(os.listdir(tmp_path)) == ["clip"]
    assert sorted(os.listdir(out)) == [f"{i:04d}.npy" for i in range(8)] + ["frames.json"]


def test_write_frame_dir_validates(tmp_path):
    bad = SampledFrames(np.zeros((2, 4, 4, 3), np.float32), [0, 1], 2, 30.0, "pyav")
    with pytest.raises(ValueError, match="uint8"):
        write_frame_dir(tmp_path / "x", bad)
    with pytest.raises(ValueError, match="fmt"):
        write_frame_dir(tmp_path / "x", bad, fmt="png")
