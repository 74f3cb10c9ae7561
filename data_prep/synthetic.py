"""make-synthetic: a small, deterministic video QA data set of coloured shapes moving in straight lines.

Each video (16-32 frames at 8 fps, width and height each an even number in [64, 128]) shows 1-3
objects on a plain black, gray or white background. Every object has its own shape (circle, square,
triangle; shapes may repeat), its own colour (red, green, blue, yellow; never shared within a
video) and moves in a straight line left, right, up or down, staying fully in the frame and never
touching another object. A video is a pure function of (seed, split, index), so the same seed
gives the same files however many workers run and however many videos are asked for.

Questions (answers are single lowercase words, for an exact-match judge):

- count:     "How many objects are in the video?"           -> "one" | "two" | "three"
- colour:    "What colour is the circle?"                   -> "red" ...   (only if one circle)
- shape:     "What shape is the red object?"                -> "circle" ... (colours are unique)
- direction: "Which way is the square moving?"              -> "left" | "right" | "up" | "down"
             ("the red square" when the shape alone is ambiguous); needs more than one frame.

Output folder::

    videos/<split>_<index:05d>.mp4   mpeg4 (default) or libx264, yuv420p
    train.json       Video-LLaVA instruction format. Per training video an overview conversation (id
                     "<video_id>_overview"): the count and the direction of every object, in either order,
                     then "What objects are in the video?" (answer: every object as "a red circle moving left"
                     or "the circle is red and moving left", joined by "and"). Videos with two or three
                     objects also get a colour and a shape conversation ("<video_id>_colour", "_shape"), the
                     type asked about every object it can name. Each type opens with the question
                     make_questions picks for it, as a test video would get it.
    test_qa.jsonl    convert-qa's unified format plus "type": one line per question per test video
    metadata.jsonl   the ground truth of every video (train and test)
    dataset.json     seed, sizes, counts and question types
    failures.jsonl   videos that could not be written (empty when all went well)

Resuming: videos are written to a temp file and renamed, so a video file that exists is complete; a
rerun with the same generator settings only writes the missing ones. A folder written with other
settings (seed, codec) is refused unless --overwrite.

Why train.json looks like that: answers of one word seldom teach a from-scratch model which object a question
names ("picking"), and picking is learned late. So:
- each training conversation asks its type about every object the type can name, and the overview ends with a
  description of all the objects;
- a pass over the data is short, so that more passes fit the quickstart's time: a one-object video gets no colour
  or shape conversation (its description holds both, and there is nothing to pick), and count and direction share
  the overview (a count gives no direction away; either type opens it, as a test question opens its own
  conversation), 2.2 conversations per video;
- the description's word order decides which way round picking is learned: "a red circle" teaches naming a shape
  after a colour (shape picking), "the circle is red" the reverse. Shape picking is the slower to form, so three
  descriptions in four are colour-first (not all: colour picking needs the other order).
Colour and shape never share a conversation: "What shape is the red object?" would answer a later "What colour
is the circle?", and a model learns to copy. Within a type, a later colour turn can be answered by elimination;
the first turn cannot.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from tqdm import tqdm

from data_prep.io import map_unordered
from image_llavolta.jsonio import write_json, write_jsonl

GENERATOR_VERSION = 1  # bump when a change alters the videos a seed gives (it guards the videos folder)
QUESTIONS_VERSION = 3  # bump when a change alters the questions or conversations a seed gives
FPS = 8
FRAME_RANGE = (16, 32)
SIZE_RANGE = (64, 128)
COLOURS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (40, 80, 230), "yellow": (240, 220, 40)}
BACKGROUNDS = {"black": (16, 16, 16), "gray": (128, 128, 128), "white": (240, 240, 240)}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
SPLITS = {"train": 0, "test": 1}  # part of each video's seed, so the splits never share a video
QUESTION_TYPES = {
    "count": "How many objects are in the video?",
    "colour": "What colour is the {shape}?",
    "shape": "What shape is the {colour} object?",
    "direction": "Which way is the {shape} moving? / Which way is the {colour} {shape} moving?",
}
OVERVIEW_TYPES = ("count", "direction")  # share one training conversation, which ends with a description
PICKING_TYPES = ("colour", "shape")  # a training conversation each, on videos with an object to pick
DESCRIBE_QUESTION = "What objects are in the video?"  # training only: its answer is a phrase, not one word
# Colour-first descriptions ("a red circle") teach shape picking, the slower of the two to form (module docstring).
COLOUR_FIRST_SHARE = 0.75
CODECS = {
    # Measured on 2 CPU cores, ~100 x 100 px, 24 frames: mpeg4 ~7 ms per video, libx264 ultrafast ~12 ms.
    "mpeg4": {"bit_rate": 2_000_000},  # the default rate (200 kb/s) smears small shapes' colours
    "libx264": {"options": {"preset": "ultrafast", "crf": "18"}},
}


# ---------------------------------------------------------------------------------------------------
# Ground truth


def make_video(seed: int, split: str, index: int) -> dict:
    """The ground-truth record of one video: a pure function of (seed, split, index)."""
    rng = np.random.default_rng([seed, SPLITS[split], index, 0])
    num_frames = int(rng.integers(FRAME_RANGE[0], FRAME_RANGE[1] + 1))
    width = height = _frame_size(rng)
    background = str(rng.choice(list(BACKGROUNDS)))
    count = int(rng.integers(1, 4))
    for _ in range(100):
        objects = _place_objects(rng, count, width, height, num_frames)
        if objects is not None:
            break
        # Three long paths can leave no room in a small frame (1 video in 5,000): draw another size. The rng
        # stream only goes on past a failure, so this never changes a video that fits at its first size.
        width = height = _frame_size(rng)
    else:  # pragma: no cover - would need 100,000 unlucky draws
        raise RuntimeError(f"seed {seed}, {split} {index}: no room for {count} separate objects")
    vid = f"{split}_{index:05d}"
    return {
        "video_id": vid,
        "split": split,
        "index": index,
        "video": f"{vid}.mp4",
        "num_frames": num_frames,
        "fps": FPS,
        "width": width,
        "height": height,
        "background": background,
        "count": count,
        "objects": objects,
    }


def _frame_size(rng: np.random.Generator) -> int:
    """A square frame's side: an even number in SIZE_RANGE."""
    # Square frames: Video-LLaVA's processing centre-crops, which would cut objects off a wide frame's sides.
    return 2 * int(rng.integers(SIZE_RANGE[0] // 2, SIZE_RANGE[1] // 2 + 1))


def _place_objects(rng: np.random.Generator, count: int, width: int, height: int, num_frames: int) -> list | None:
    """count objects that never touch, by rejection sampling (1,000 draws), or None if none of the draws fits."""
    for _ in range(1000):
        objects = _sample_objects(rng, count, width, height)
        if not _objects_touch(objects, num_frames):
            return objects
    return None


def _sample_objects(rng: np.random.Generator, count: int, width: int, height: int) -> list[dict]:
    """count objects with distinct colours, random shapes, sizes and straight-line paths."""
    colours = rng.choice(list(COLOURS), size=count, replace=False)
    objects = []
    for colour in colours:
        shape = str(rng.choice(SHAPES))
        # half-extent in pixels: 1/10 to 1/6 of the frame, so a shape spans a few patches of a small vision tower
        size = int(rng.integers(max(5, min(width, height) // 10), min(width, height) // 6 + 1))
        direction = str(rng.choice(list(DIRECTIONS)))
        dx, dy = DIRECTIONS[direction]
        along, across = (width, height) if dx else (height, width)
        lo, hi = size + 1, along - size - 2  # keep the whole shape (and a pixel of margin) in frame
        # Travel at least 40% of the free track so the direction is plain from first vs last frame.
        dist = int(rng.integers(int(0.4 * (hi - lo)), hi - lo + 1))
        first = int(rng.integers(lo, hi - dist + 1))
        a, b = (first, first + dist) if dx + dy > 0 else (first + dist, first)
        c = int(rng.integers(size + 1, across - size - 1))
        start, end = ([a, c], [b, c]) if dx else ([c, a], [c, b])
        objects.append(
            {"shape": shape, "colour": str(colour), "size": size, "direction": direction, "start": start, "end": end}
        )
    return objects


def position(obj: dict, t: int, num_frames: int) -> tuple[float, float]:
    """Centre (x, y) of an object in frame t: linear from start (first frame) to end (last frame)."""
    f = t / (num_frames - 1)
    return tuple(s + (e - s) * f for s, e in zip(obj["start"], obj["end"]))


def _objects_touch(objects: list[dict], num_frames: int, margin: float = 3.0) -> bool:
    """Whether any two objects' bounding boxes come within margin pixels of each other in any frame."""
    for t in range(num_frames):
        boxes = [(position(o, t, num_frames), o["size"]) for o in objects]
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                (xi, yi), si = boxes[i]
                (xj, yj), sj = boxes[j]
                gap = si + sj + margin
                if abs(xi - xj) < gap and abs(yi - yj) < gap:
                    return True
    return False


def all_questions(meta: dict) -> dict[str, list[dict]]:
    """Every question a video answers, by type: count once, the others once per object they can name."""
    objects = meta["objects"]
    shape_counts = Counter(o["shape"] for o in objects)

    def name(o):  # "the circle", or "the red square" when the shape alone is ambiguous
        return o["shape"] if shape_counts[o["shape"]] == 1 else f"{o['colour']} {o['shape']}"

    def question(qtype, text, answer):
        return {"type": qtype, "question": text, "answer": answer}

    return {
        "count": [question("count", QUESTION_TYPES["count"], NUMBER_WORDS[meta["count"]])],
        # "the circle" must name exactly one object
        "colour": [
            question("colour", f"What colour is the {o['shape']}?", o["colour"])
            for o in objects
            if shape_counts[o["shape"]] == 1
        ],
        # colours are unique within a video
        "shape": [question("shape", f"What shape is the {o['colour']} object?", o["shape"]) for o in objects],
        "direction": [question("direction", f"Which way is the {name(o)} moving?", o["direction"]) for o in objects],
    }


def make_questions(meta: dict, seed: int) -> list[dict]:
    """One question of each applicable type about a seeded choice of object, each {"type", "question", "answer"}."""
    # Its own stream (last entry 1), so adding a question type never changes the videos.
    rng = np.random.default_rng([seed, SPLITS[meta["split"]], meta["index"], 1])
    everything = all_questions(meta)
    questions = everything["count"] + [
        everything[t][rng.integers(len(everything[t]))] for t in ("colour", "shape", "direction") if everything[t]
    ]
    order = rng.permutation(len(questions))
    return [questions[i] for i in order]


def describe(objects: list[dict], rng: np.random.Generator) -> str:
    """Every object in a seeded order, phrased "a red circle moving left and ..." (a share COLOUR_FIRST_SHARE of
    descriptions) or "the circle is red and moving left and ..."."""
    order = [objects[i] for i in rng.permutation(len(objects))]
    if rng.random() < COLOUR_FIRST_SHARE:
        return " and ".join(f"a {o['colour']} {o['shape']} moving {o['direction']}" for o in order)
    return " and ".join(f"the {o['shape']} is {o['colour']} and moving {o['direction']}" for o in order)


# ---------------------------------------------------------------------------------------------------
# Pixels


def render(meta: dict) -> np.ndarray:
    """T x H x W x 3 uint8 RGB frames of a video record."""
    t_count, h, w = meta["num_frames"], meta["height"], meta["width"]
    frames = np.empty((t_count, h, w, 3), np.uint8)
    frames[:] = BACKGROUNDS[meta["background"]]
    ys, xs = np.mgrid[0:h, 0:w]
    for t in range(t_count):
        for obj in meta["objects"]:
            x, y = position(obj, t, t_count)
            # Only the box around the shape can be inside it: 2-3x faster than testing every pixel.
            r = obj["size"] + 1
            box = (slice(max(0, int(y) - r), int(y) + r + 2), slice(max(0, int(x) - r), int(x) + r + 2))
            mask = shape_mask(obj["shape"], xs[box] - x, ys[box] - y, obj["size"])
            frames[t][box][mask] = COLOURS[obj["colour"]]
    return frames


def shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, size: int) -> np.ndarray:
    """Pixels inside a shape, given each pixel's offset (dx, dy) from the shape's centre."""
    if shape == "circle":
        return dx * dx + dy * dy <= size * size
    if shape == "square":
        return (np.abs(dx) <= size) & (np.abs(dy) <= size)
    if shape == "triangle":  # apex up, base 2*size wide at the bottom
        return (dy >= -size) & (dy <= size) & (np.abs(dx) <= (dy + size) / 2)
    raise ValueError(f"unknown shape {shape!r}")


def patch_labels(meta: dict, frame_indices: list[int], grid: int, min_cover: float = 0.2) -> dict[str, np.ndarray]:
    """Per sampled frame and patch of a grid x grid split, the covering object's colour and shape ids (0: none).

    Returns {"colour", "shape"}: (T, grid * grid) int64 arrays, patches row-major as a ViT orders them; colour ids
    index COLOURS + 1 and shape ids SHAPES + 1. A patch belongs to the object that covers most of it, if that
    object covers at least `min_cover` of it. Frames are square, so Video-LLaVA's resize never crops them.
    """
    h, w = meta["height"], meta["width"]
    if h != w:
        raise ValueError(f"{meta['video_id']}: patch labels need square frames, got {w}x{h}")
    ys, xs = np.mgrid[0:h, 0:w]
    edges = [(i * h) // grid for i in range(grid)], [-(-(i + 1) * h // grid) for i in range(grid)]
    colour = np.zeros((len(frame_indices), grid * grid), np.int64)
    shape = np.zeros_like(colour)
    for k, t in enumerate(frame_indices):
        best = np.zeros(grid * grid)
        for obj in meta["objects"]:
            x, y = position(obj, t, meta["num_frames"])
            mask = shape_mask(obj["shape"], xs - x, ys - y, obj["size"])
            cover = np.array([mask[r0:r1, c0:c1].mean() for r0, r1 in zip(*edges) for c0, c1 in zip(*edges)])
            take = (cover > best) & (cover >= min_cover)
            best[take] = cover[take]
            colour[k, take] = list(COLOURS).index(obj["colour"]) + 1
            shape[k, take] = SHAPES.index(obj["shape"]) + 1
    return {"colour": colour, "shape": shape}


def encode(path: str, frames: np.ndarray, fps: int, codec: str) -> None:
    """Encode RGB frames to an .mp4 (yuv420p) atomically: a temp file in the same folder, then rename."""
    import av  # imported here: only the workers that encode need it

    settings = CODECS[codec]
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.part")
    try:
        with av.open(tmp, mode="w", format="mp4") as container:
            stream = container.add_stream(codec, rate=fps, options=settings.get("options", {}))
            stream.height, stream.width = frames.shape[1:3]
            stream.pix_fmt = "yuv420p"
            stream.codec_context.thread_count = 1  # one thread per encoder: we parallelise over videos
            if "bit_rate" in settings:
                stream.bit_rate = settings["bit_rate"]
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())  # flush delayed frames
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_video(meta: dict, videos_dir: str, codec: str) -> dict:
    """Render and encode one video; returns {"video_id"} or a failure record with the error."""
    try:
        encode(os.path.join(videos_dir, meta["video"]), render(meta), meta["fps"], codec)
    except Exception as err:  # recorded in failures.jsonl; the other videos go on
        return {"video_id": meta["video_id"], "error": type(err).__name__, "reason": str(err)}
    return {"video_id": meta["video_id"]}


# ---------------------------------------------------------------------------------------------------
# The data set


@dataclass
class SyntheticResult:
    """What one make-synthetic run did."""

    out_dir: str
    written: int = 0
    skipped: int = 0
    failed: list[dict] = field(default_factory=list)
    counts: dict = field(default_factory=dict)

    def summary_rows(self) -> list[tuple[str, object]]:
        """(label, value) rows for the end-of-run table."""
        rows = [("videos written", self.written), ("videos already there", self.skipped), ("failed", len(self.failed))]
        for key, value in self.counts.items():
            if isinstance(value, dict):  # per-type counts, indented under their total
                rows += [(f"  {k}", v) for k, v in value.items()]
            else:
                rows.append((key.replace("_", " "), value))
        return rows


def make_synthetic(
    out_dir: str | os.PathLike,
    num_train: int = 1000,
    num_test: int = 200,
    seed: int = 0,
    workers: int = 1,
    codec: str = "mpeg4",
    overwrite: bool = False,
    progress: bool = True,
) -> SyntheticResult:
    """Generate (or finish generating) the synthetic data set under out_dir."""
    if num_train < 0 or num_test < 0:
        raise ValueError(f"num_train and num_test must be >= 0, got {num_train}, {num_test}")
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {list(CODECS)}, got {codec!r}")
    out_dir = os.path.abspath(os.fspath(out_dir))
    videos_dir = os.path.join(out_dir, "videos")
    _prepare_videos_dir(videos_dir, {"generator_version": GENERATOR_VERSION, "seed": seed, "codec": codec}, overwrite)

    metas = [make_video(seed, "train", i) for i in range(num_train)]
    metas += [make_video(seed, "test", i) for i in range(num_test)]
    wanted = {m["video"] for m in metas}
    for name in os.listdir(videos_dir):  # videos of a bigger earlier run, or temp files of a killed one
        if (name.endswith(".mp4") and name not in wanted) or name.endswith(".part"):
            os.remove(os.path.join(videos_dir, name))
    todo = [m for m in metas if not os.path.exists(os.path.join(videos_dir, m["video"]))]
    result = SyntheticResult(out_dir, skipped=len(metas) - len(todo))

    job = partial(write_video, videos_dir=videos_dir, codec=codec)
    with tqdm(total=len(todo), desc="make-synthetic", unit="video", disable=not progress) as bar:
        for record in map_unordered(job, todo, workers):
            if "error" in record:
                result.failed.append(record)
            else:
                result.written += 1
            bar.update()
    failed = {r["video_id"] for r in result.failed}
    ok = [m for m in metas if m["video_id"] not in failed]
    train = [m for m in ok if m["split"] == "train"]
    test = [m for m in ok if m["split"] == "test"]

    train_samples = [s for m in train for s in _train_samples(m, seed)]
    test_qa = [
        {
            "question_id": f"{m['video_id']}_{q['type']}",
            "video": m["video"],
            "question": q["question"],
            "answer": q["answer"],
            "type": q["type"],
        }
        for m in test
        for q in sorted(make_questions(m, seed), key=lambda q: list(QUESTION_TYPES).index(q["type"]))
    ]
    result.counts = {
        "train_videos": len(train),
        "test_videos": len(test),
        "train_samples": len(train_samples),
        "test_questions": len(test_qa),
        "test_questions_by_type": dict(sorted(Counter(q["type"] for q in test_qa).items())),
    }
    write_json(os.path.join(out_dir, "train.json"), train_samples)
    write_jsonl(os.path.join(out_dir, "test_qa.jsonl"), test_qa)
    write_jsonl(os.path.join(out_dir, "metadata.jsonl"), ok)
    write_jsonl(os.path.join(out_dir, "failures.jsonl"), sorted(result.failed, key=lambda r: r["video_id"]))
    write_json(os.path.join(out_dir, "dataset.json"), _dataset_card(seed, codec, num_train, num_test, result.counts))
    return result


def _prepare_videos_dir(videos_dir: str, params: dict, overwrite: bool) -> None:
    """Create videos/ with a settings marker; refuse to mix videos of other settings unless overwrite."""
    marker = os.path.join(videos_dir, ".generator.json")
    if os.path.isdir(videos_dir) and os.listdir(videos_dir):
        try:
            with open(marker, encoding="utf-8") as f:
                old = json.load(f)
        except (OSError, ValueError):
            old = None
        if old != params:
            if not overwrite:
                raise ValueError(
                    f"{videos_dir} holds videos made with other settings ({old}, now {params}); "
                    f"pass --overwrite to replace them or choose another --out"
                )
            for name in os.listdir(videos_dir):
                if re.fullmatch(r"\.?.+\.(mp4|part|json)", name):
                    os.remove(os.path.join(videos_dir, name))
    os.makedirs(videos_dir, exist_ok=True)
    write_json(marker, params)


def _train_samples(meta: dict, seed: int) -> list[dict]:
    """The video's Video-LLaVA instruction samples: an overview, then colour and shape conversations."""
    rng = np.random.default_rng([seed, SPLITS[meta["split"]], meta["index"], 2])
    everything = all_questions(meta)
    # One object's colour and shape are in its description, and there is no object to pick.
    kinds = OVERVIEW_TYPES + (PICKING_TYPES if meta["count"] > 1 else ())
    blocks = {}
    for first in make_questions(meta, seed):  # each type opens with the question a test video would get for it
        if first["type"] not in kinds:
            continue
        rest = [q for q in everything[first["type"]] if q != first]
        blocks[first["type"]] = [first, *(rest[i] for i in rng.permutation(len(rest)))]
    # Count and direction share one conversation, in make_questions' order (either opens it): a count gives no
    # direction away, and a test question is always a conversation's first.
    overview = [turn for qtype, block in blocks.items() if qtype in OVERVIEW_TYPES for turn in block]
    conversations = {"overview": [*overview, {"question": DESCRIBE_QUESTION, "answer": describe(meta["objects"], rng)}]}
    conversations.update((qtype, blocks[qtype]) for qtype in PICKING_TYPES if qtype in blocks)
    samples = []
    for name, turns in conversations.items():
        conversation = []
        for k, turn in enumerate(turns):
            conversation += [
                {"from": "human", "value": ("<video>\n" if k == 0 else "") + turn["question"]},
                {"from": "gpt", "value": turn["answer"]},
            ]
        samples.append({"id": f"{meta['video_id']}_{name}", "video": meta["video"], "conversations": conversation})
    return samples


def _dataset_card(seed: int, codec: str, num_train: int, num_test: int, counts: dict) -> dict:
    """dataset.json: what the data set is and how it was made (no timings, so it stays reproducible)."""
    return {
        "name": "llavolta-synthetic-shapes",
        "description": "Coloured shapes moving in straight lines on a plain background; "
        "questions about count, colour, shape and direction of motion, answered with one lowercase word.",
        "generator_version": GENERATOR_VERSION,
        "questions_version": QUESTIONS_VERSION,
        "seed": seed,
        "requested": {"num_train": num_train, "num_test": num_test},
        "counts": counts,
        "video": {
            "codec": codec,
            "container": "mp4",
            "pix_fmt": "yuv420p",
            "fps": FPS,
            "num_frames": list(FRAME_RANGE),
            "width_and_height_px": list(SIZE_RANGE),
            "objects_per_video": [1, 3],
        },
        "colours": {k: list(v) for k, v in COLOURS.items()},
        "backgrounds": {k: list(v) for k, v in BACKGROUNDS.items()},
        "shapes": list(SHAPES),
        "directions": list(DIRECTIONS),
        "question_types": QUESTION_TYPES,
        "training_only_question": DESCRIBE_QUESTION,
        "answers": {
            "count": list(NUMBER_WORDS.values()),
            "colour": list(COLOURS),
            "shape": list(SHAPES),
            "direction": list(DIRECTIONS),
        },
        "files": {
            "videos": "videos/<split>_<index>.mp4 (paths in the JSON files are relative to videos/)",
            "train.json": "Video-LLaVA instruction format: per training video an overview (count, every object's "
            "direction, a description), and for videos of 2-3 objects a colour and a shape conversation that ask "
            "about every object the type can name",
            "test_qa.jsonl": "unified QA format (question_id, video, question, answer) plus type",
            "metadata.jsonl": "ground truth per video: size, frames, background, objects with paths",
            "failures.jsonl": "videos that could not be written",
        },
    }
