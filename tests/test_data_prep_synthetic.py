"""make-synthetic: determinism, answers vs metadata, answers vs the decoded pixels, sizes, validate, resume."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from prep_helpers import decode_all, read_json, read_jsonl

from data_prep.cli import main
from data_prep.synthetic import COLOUR_FIRST_SHARE, describe, make_video
from data_prep.synthetic import DESCRIBE_QUESTION as DESCRIBE
from data_prep.validate import validate_file
from video_llavolta.frames import read_frames

NUM_TRAIN, NUM_TEST = 8, 5
JSON_FILES = ["train.json", "test_qa.jsonl", "metadata.jsonl", "dataset.json"]
WORDS = {1: "one", 2: "two", 3: "three"}


def make(out, seed=0, workers=1, num_train=NUM_TRAIN, num_test=NUM_TEST, *extra) -> int:
    """Run the make-synthetic CLI in-process."""
    return main(
        [
            "make-synthetic",
            "--out",
            str(out),
            "--num-train",
            str(num_train),
            "--num-test",
            str(num_test),
            "--seed",
            str(seed),
            "--workers",
            str(workers),
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The seed-0 data set (one worker)."""
    out = tmp_path_factory.mktemp("syn") / "seed0"
    assert make(out) == 0
    return out


def colour_of(pixels: np.ndarray) -> np.ndarray:
    """Per pixel, the colour name it clearly is ('' for background or blurred edges): the test's own thresholds."""
    r, g, b = (pixels[..., i].astype(int) for i in range(3))
    names = np.full(pixels.shape[:-1], "", dtype=object)
    names[(r > 150) & (g < 110) & (b < 110)] = "red"
    names[(g > 140) & (r < 110) & (b < 130)] = "green"
    names[(b > 150) & (r < 110) & (g < 150)] = "blue"
    names[(r > 150) & (g > 150) & (b < 110)] = "yellow"
    return names


def centroid(mask: np.ndarray) -> np.ndarray:
    """(x, y) mean of a boolean mask's pixels."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def shape_from_pixels(mask: np.ndarray) -> str:
    """Square: the bounding box's corners are filled; triangle (apex up): its top half has far less than its bottom.

    Measured on 1,600 decoded shapes (sizes 5-16, both codecs): corner fill is >= 0.77 for squares and
    <= 0.67 otherwise; top/bottom is <= 0.60 for triangles (1/3 when sharp) and >= 0.68 for discs.
    """
    ys, xs = np.nonzero(mask)
    box = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = box.shape
    q, half = max(1, round(min(h, w) / 4)), h // 2
    corners = np.mean([box[:q, :q].mean(), box[:q, -q:].mean(), box[-q:, :q].mean(), box[-q:, -q:].mean()])
    if corners > 0.72:
        return "square"
    return "triangle" if box[:half].sum() / box[h - half :].sum() < 0.64 else "circle"


def the_one(objects: list[dict], **match) -> dict:
    """The single object matching the given fields (the question must be unambiguous)."""
    found = [o for o in objects if all(o[k] == v for k, v in match.items() if v is not None)]
    assert len(found) == 1, f"{match} matches {len(found)} objects"
    return found[0]


def expected_answer(question: str, meta: dict) -> tuple[str, dict | None]:
    """(answer, object asked about) re-derived from the metadata by parsing the question."""
    objects = meta["objects"]
    if question == "How many objects are in the video?":
        return WORDS[len(objects)], None
    if m := re.fullmatch(r"What colour is the (\w+)\?", question):
        o = the_one(objects, shape=m[1])
        return o["colour"], o
    if m := re.fullmatch(r"What shape is the (\w+) object\?", question):
        o = the_one(objects, colour=m[1])
        return o["shape"], o
    if m := re.fullmatch(r"Which way is the (?:(\w+) )?(\w+) moving\?", question):
        o = the_one(objects, colour=m[1], shape=m[2])
        return o["direction"], o
    raise AssertionError(f"unexpected question {question!r}")


def questions_in_files(out) -> list[tuple[str, str, str, str]]:
    """(video, type or '', question, answer) of every test question and every training turn."""
    qs = [(q["video"], q["type"], q["question"], q["answer"]) for q in read_jsonl(out / "test_qa.jsonl")]
    for sample in read_json(out / "train.json"):
        conv = sample["conversations"]
        for human, gpt in zip(conv[::2], conv[1::2]):
            if human["value"] != DESCRIBE:  # a phrase, checked by its own test
                qs.append((sample["video"], "", human["value"].removeprefix("<video>\n"), gpt["value"]))
    return qs


def described_objects(answer: str) -> list[tuple[str, str, str]]:
    """(colour, shape, direction) of each object in a description, in either of its two phrasings."""
    phrase = r"a (\w+) (\w+) moving (\w+)|the (\w+) is (\w+) and moving (\w+)"
    assert re.fullmatch(rf"(?:{phrase})(?: and (?:{phrase}))*", answer), answer
    found = []
    for m in re.finditer(phrase, answer):
        colour, shape, direction = m.groups()[:3] if m[1] else (m[5], m[4], m[6])
        found.append((colour, shape, direction))
    return found


def test_sizes_honour_the_flags(data):
    metas = read_jsonl(data / "metadata.jsonl")
    train = read_json(data / "train.json")
    test_qa = read_jsonl(data / "test_qa.jsonl")
    assert len(metas) == NUM_TRAIN + NUM_TEST
    assert sorted(os.listdir(data / "videos")) == sorted([".generator.json"] + [m["video"] for m in metas])
    train_videos = {s["video"] for s in train}
    test_videos = {q["video"] for q in test_qa}
    assert len(train_videos) == NUM_TRAIN and len(test_videos) == NUM_TEST
    assert not train_videos & test_videos  # disjoint splits: no shared file ...
    content = {m["split"]: set() for m in metas}
    for m in metas:  # ... and no test video that is a training video under another name
        look = {k: v for k, v in m.items() if k not in ("video_id", "split", "index", "video")}
        content[m["split"]].add(json.dumps(look))
    assert len(content["train"]) == NUM_TRAIN and len(content["test"]) == NUM_TEST
    assert not content["train"] & content["test"]
    assert read_jsonl(data / "failures.jsonl") == []
    card = read_json(data / "dataset.json")
    assert card["seed"] == 0
    assert card["counts"]["train_videos"] == NUM_TRAIN and card["counts"]["test_videos"] == NUM_TEST
    assert card["counts"]["test_questions"] == len(test_qa)
    for meta in metas:
        assert 16 <= meta["num_frames"] <= 32 and 64 <= meta["width"] <= 128 and 64 <= meta["height"] <= 128
        assert 1 <= len(meta["objects"]) <= 3 and meta["count"] == len(meta["objects"])
        frames = decode_all(data / "videos" / meta["video"])
        assert frames.shape == (meta["num_frames"], meta["height"], meta["width"], 3)


def test_training_conversations_ask_each_type_about_every_object(data):
    """Per video an overview (count and directions in either order, then a description); for 2-3 objects also a
    colour and a shape conversation. Colour and shape never meet (mixing leaks: "What shape is the red object?"
    answers "What colour is the circle?"); every object a type can name is asked about once."""
    metas = {m["video"]: m for m in read_jsonl(data / "metadata.jsonl") if m["split"] == "train"}
    kinds_seen: dict[str, list[str]] = {video: [] for video in metas}
    phrasings, overview_openers = set(), set()
    for sample in read_json(data / "train.json"):
        meta, conv = metas[sample["video"]], sample["conversations"]
        video_id, kind = sample["id"].rsplit("_", 1)
        assert video_id == meta["video_id"]
        kinds_seen[sample["video"]].append(kind)
        humans = [t["value"] for t in conv[::2]]
        questions = [humans[0].removeprefix("<video>\n"), *humans[1:]]
        assert humans[0].startswith("<video>\n") and not any("<video>" in q for q in questions)
        asked = list(zip(questions, [t["value"] for t in conv[1::2]]))
        if kind == "overview":
            *asked, (describe_q, description) = asked
            assert describe_q == DESCRIBE
            objects = described_objects(description)
            assert sorted(objects) == sorted((o["colour"], o["shape"], o["direction"]) for o in meta["objects"])
            phrasings.add(description.split()[0])
            count_turns = [k for k, (q, _) in enumerate(asked) if q == "How many objects are in the video?"]
            assert len(count_turns) == 1 and count_turns[0] in (0, len(asked) - 1)  # before or after the directions
            assert asked.pop(count_turns[0])[1] == WORDS[meta["count"]]
            overview_openers.add("count" if count_turns[0] == 0 else "direction")
            qtype = "direction"
        else:
            qtype = kind
            assert meta["count"] > 1, "a one-object video gets no colour or shape conversation"
        asked_about = [expected_answer(q, meta) for q, _ in asked]
        assert [answer for answer, _ in asked_about] == [a for _, a in asked]
        names = sorted(o["colour"] for _, o in asked_about)
        shapes = [o["shape"] for o in meta["objects"]]
        nameable = [o for o in meta["objects"] if qtype != "colour" or shapes.count(o["shape"]) == 1]
        assert names == sorted(o["colour"] for o in nameable)  # each object once, none left out
        prefix = {"colour": "What colour", "shape": "What shape", "direction": "Which way"}[qtype]
        assert all(q.startswith(prefix) for q, _ in asked)
    for video, meta in metas.items():
        shapes = [o["shape"] for o in meta["objects"]]
        kinds = {"overview"}
        if meta["count"] > 1:
            kinds |= {"shape"} | ({"colour"} if any(shapes.count(s) == 1 for s in shapes) else set())
        assert sorted(kinds_seen[video]) == sorted(kinds)
    assert phrasings == {"a", "the"}  # both word orders, colour-shape and shape-colour
    assert overview_openers == {"count", "direction"}  # either can open: a test question always opens


def test_descriptions_are_colour_first_at_the_configured_share():
    """Over 2,000 seeded descriptions the colour-first share is COLOUR_FIRST_SHARE, within 4 binomial s.d."""
    objects = make_video(0, "train", 0)["objects"]
    rng = np.random.default_rng(0)
    draws = [describe(objects, rng) for _ in range(2000)]
    assert all(
        sorted(described_objects(d)) == sorted((o["colour"], o["shape"], o["direction"]) for o in objects)
        for d in draws
    )
    share = sum(d.startswith("a ") for d in draws) / len(draws)
    sd = (COLOUR_FIRST_SHARE * (1 - COLOUR_FIRST_SHARE) / len(draws)) ** 0.5
    assert abs(share - COLOUR_FIRST_SHARE) < 4 * sd


def test_test_questions_cover_the_types(data):
    metas = {m["video"]: m for m in read_jsonl(data / "metadata.jsonl")}
    by_video: dict[str, list[str]] = {}
    for q in read_jsonl(data / "test_qa.jsonl"):
        by_video.setdefault(q["video"], []).append(q["type"])
        assert q["question_id"] == f"{metas[q['video']]['video_id']}_{q['type']}"
    for video, types in by_video.items():
        shapes = [o["shape"] for o in metas[video]["objects"]]
        has_unique_shape = any(shapes.count(s) == 1 for s in shapes)
        assert types == ["count"] + ["colour"] * has_unique_shape + ["shape", "direction"]


def test_answers_match_metadata(data):
    metas = {m["video"]: m for m in read_jsonl(data / "metadata.jsonl")}
    questions = questions_in_files(data)
    assert len(questions) > 3 * (NUM_TRAIN + NUM_TEST)
    for video, _, question, answer in questions:
        assert re.fullmatch(r"[a-z]+", answer), answer  # one lowercase word
        expected, _ = expected_answer(question, metas[video])
        assert answer == expected, (video, question)


def test_answers_match_the_pixels(data):
    metas = {m["video"]: m for m in read_jsonl(data / "metadata.jsonl")}
    checked = {"count": 0, "colour": 0, "shape": 0, "direction": 0}
    for video, _, question, answer in questions_in_files(data):
        meta = metas[video]
        sampled = read_frames(data / "videos" / video, num_frames=2)  # first and last frame
        assert sampled.indices == [0, meta["num_frames"] - 1]
        first, last = colour_of(sampled.frames[0]), colour_of(sampled.frames[1])
        _, obj = expected_answer(question, meta)
        if question.startswith("How many"):
            present = [c for c in ("red", "green", "blue", "yellow") if (first == c).sum() >= 15]
            assert WORDS[len(present)] == answer, (video, present)
            checked["count"] += 1
        elif question.startswith("What colour"):
            x, y = obj["start"]  # the named shape's centre in the first frame
            assert first[y, x] == answer, (video, question, sampled.frames[0][y, x])
            checked["colour"] += 1
        elif question.startswith("What shape"):
            assert shape_from_pixels(first == obj["colour"]) == answer, (video, question)
            checked["shape"] += 1
        else:  # direction: where the object's colour moved between the first and the last frame
            dx, dy = centroid(last == obj["colour"]) - centroid(first == obj["colour"])
            along, across = {"left": (-dx, dy), "right": (dx, dy), "up": (-dy, dx), "down": (dy, dx)}[answer]
            assert along > 10 and abs(across) < 2, (video, question, dx, dy)
            checked["direction"] += 1
    assert min(checked.values()) >= 5, checked


def test_validate_accepts_train_json(data):
    result = validate_file(data / "train.json", video_root=str(data / "videos"), progress=False)
    assert result.num_records == len(read_json(data / "train.json")) and result.bad == []
    assert main(["validate", str(data / "train.json"), "--video-root", str(data / "videos")]) == 0


def test_same_seed_same_data_different_seed_different_data(data, tmp_path):
    assert make(tmp_path / "again", seed=0, workers=2) == 0  # other worker count, same files
    for name in JSON_FILES:
        assert (tmp_path / "again" / name).read_bytes() == (data / name).read_bytes(), name
    for meta in read_jsonl(data / "metadata.jsonl"):
        np.testing.assert_array_equal(
            decode_all(tmp_path / "again" / "videos" / meta["video"]), decode_all(data / "videos" / meta["video"])
        )

    assert make(tmp_path / "other", seed=1) == 0
    other = read_jsonl(tmp_path / "other" / "metadata.jsonl")
    mine = read_jsonl(data / "metadata.jsonl")
    assert [m["objects"] for m in other] != [m["objects"] for m in mine]
    a = decode_all(data / "videos" / "train_00000.mp4")
    b = decode_all(tmp_path / "other" / "videos" / "train_00000.mp4")
    assert a.shape != b.shape or not np.array_equal(a, b)

    # Fewer videos with the same seed: the same first videos (a video depends on its index only).
    assert make(tmp_path / "fewer", seed=0, num_train=3, num_test=1) == 0
    assert read_jsonl(tmp_path / "fewer" / "metadata.jsonl") == mine[:3] + [mine[NUM_TRAIN]]


def test_resume_and_settings_guard(data, tmp_path, capsys):
    out = tmp_path / "syn"
    assert make(out, seed=0) == 0
    os.remove(out / "videos" / "train_00002.mp4")
    (out / "videos" / ".train_00005.mp4.123.part").write_bytes(b"half a video")
    capsys.readouterr()
    assert make(out, seed=0) == 0
    table = capsys.readouterr().out
    assert re.search(r"videos written\s+1\n", table)
    assert re.search(rf"videos already there\s+{NUM_TRAIN + NUM_TEST - 1}\n", table)
    assert sorted(os.listdir(out / "videos")) == sorted(os.listdir(data / "videos"))  # .part removed
    redone = decode_all(out / "videos" / "train_00002.mp4")
    np.testing.assert_array_equal(redone, decode_all(data / "videos" / "train_00002.mp4"))
    for name in JSON_FILES:
        assert (out / name).read_bytes() == (data / name).read_bytes(), name

    assert make(out, seed=5) == 2  # other settings in the same folder: refused
    assert "seed" in capsys.readouterr().err
    assert make(out, 5, 1, NUM_TRAIN, NUM_TEST, "--overwrite") == 0
    assert read_json(out / "dataset.json")["seed"] == 5


def test_a_frame_too_small_for_its_objects_draws_another_size():
    # Seed 0, train 1312: three objects in a 72x72 frame never fitted (1,000 layouts touched); it used to raise.
    from data_prep.synthetic import SIZE_RANGE, make_video

    meta = make_video(0, "train", 1312)
    assert meta["count"] == len(meta["objects"]) == 3
    assert meta["width"] == meta["height"] and meta["width"] % 2 == 0
    assert SIZE_RANGE[0] <= meta["width"] <= SIZE_RANGE[1]
    t = np.linspace(0, 1, meta["num_frames"])[:, None]
    centres = [np.array(o["start"]) + (np.array(o["end"]) - np.array(o["start"])) * t for o in meta["objects"]]
    for i, a in enumerate(meta["objects"]):
        assert a["size"] < min(centres[i].min(), meta["width"] - centres[i].max())  # inside the frame throughout
        for j in range(i + 1, 3):
            b = meta["objects"][j]
            apart = np.abs(centres[i] - centres[j]).max(axis=1) - a["size"] - b["size"]
            assert apart.min() >= 3, (i, j)  # boxes 3 px apart at least, in every frame
    assert make_video(0, "train", 1311)["width"] == 124  # fitted at its first size: as before the fix
