"""validate: one hand-built record per rule, media lookup (roots, frame dirs), the CLI's output and exit codes."""

from __future__ import annotations

import json

import pytest
from prep_helpers import read_jsonl, write_json

from data_prep.cli import main
from data_prep.validate import MediaRoots, check_record, validate_records


def turns(*values: str) -> list[dict]:
    """Alternating human/gpt turns with the given values."""
    return [{"from": ("human", "gpt")[i % 2], "value": v} for i, v in enumerate(values)]


@pytest.fixture
def media(tmp_path):
    """Roots with img/a.jpg, img/b.jpg, vid/v.mp4, and a finished frame dir for 'clips/w.mp4'."""
    for rel in ["img/a.jpg", "img/b.jpg", "vid/v.mp4"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "frames" / "clips__w").mkdir(parents=True)
    (tmp_path / "frames" / "clips__w" / "frames.json").write_text("{}")
    (tmp_path / "frames" / "clips__u").mkdir()  # unfinished: no frames.json
    return MediaRoots(str(tmp_path / "img"), str(tmp_path / "vid"), str(tmp_path / "frames"))


NO_ROOTS = MediaRoots()


def codes(record, roots=NO_ROOTS) -> list[str]:
    """The reason codes a single record gets."""
    return [r["code"] for r in check_record(record, roots)]


def test_good_records(media):
    good = [
        {"id": "v", "video": "v.mp4", "conversations": turns("<video>\nWhat now?", "A cat jumps.", "Why?", "Food.")},
        {"id": 2, "image": ["a.jpg", "b.jpg"], "conversations": turns("<image>\n<image>\nCompare.", "Same.")},
        {"id": "t", "conversations": turns("Hello?", "Hi.")},  # text-only
        {"id": "w", "video": "clips/w.mp4", "conversations": turns("<video>\nq", "a")},  # only its frame dir exists
    ]
    result = validate_records(good, media)
    assert result.num_records == 4 and result.bad == []


@pytest.mark.parametrize(
    "record, expected",
    [
        ("not a dict", ["not_an_object"]),
        ({"conversations": turns("q", "a")}, ["missing_id"]),
        ({"id": "  ", "conversations": turns("q", "a")}, ["missing_id"]),
        ({"id": "x"}, ["bad_conversations"]),
        ({"id": "x", "conversations": []}, ["bad_conversations"]),
        ({"id": "x", "conversations": [{"from": "user", "value": "q"}, {"from": "gpt", "value": "a"}]}, ["bad_turn"]),
        ({"id": "x", "conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "a"}]}, ["bad_turn"]),
        ({"id": "x", "conversations": turns("q", "a")[::-1]}, ["role_order"]),  # starts with gpt
        ({"id": "x", "conversations": turns("q", "a", "q2")}, ["role_order"]),  # ends with human
        ({"id": "x", "conversations": turns("q")[:1] * 2 + turns("q", "a")[1:]}, ["role_order"]),  # human twice
        ({"id": "x", "conversations": turns("q", "  \n")}, ["empty_value"]),
        ({"id": "x", "conversations": turns("<video>\nq", "a")}, ["placeholder_without_media"]),
        (
            {"id": "x", "image": "a.jpg", "conversations": turns("<video>\nq", "a")},
            ["placeholder_count", "placeholder_without_media"],
        ),
        ({"id": "x", "video": "v.mp4", "conversations": turns("q", "a")}, ["placeholder_count"]),
        ({"id": "x", "video": "v.mp4", "conversations": turns("<video>\n<video>\nq", "a")}, ["placeholder_count"]),
        ({"id": "x", "image": ["a.jpg", "b.jpg"], "conversations": turns("<image>\nq", "a")}, ["placeholder_count"]),
        ({"id": "x", "video": "v.mp4", "conversations": turns("<video>\nq", "a <video>")}, ["placeholder_in_gpt_turn"]),
        ({"id": "x", "video": [], "conversations": turns("<video>\nq", "a")}, ["bad_media_field"]),
        ({"id": "x", "video": 3, "conversations": turns("<video>\nq", "a")}, ["bad_media_field"]),
        ({"id": "x", "image": "gone.jpg", "conversations": turns("<image>\nq", "a")}, ["missing_media"]),
        ({"id": "x", "video": "clips/u.mp4", "conversations": turns("<video>\nq", "a")}, ["missing_media"]),
    ],
)
def test_each_rule(record, expected, media):
    assert codes(record, media) == expected


def test_media_roots_are_kind_specific(media):
    # a.jpg exists under the image root only: as a video it is missing.
    assert codes({"id": "x", "video": "a.jpg", "conversations": turns("<video>\nq", "a")}, media) == ["missing_media"]
    # Without roots nothing is looked up.
    assert codes({"id": "x", "video": "nowhere.mp4", "conversations": turns("<video>\nq", "a")}) == []


def test_duplicate_ids_flag_every_copy():
    records = [{"id": i, "conversations": turns("q", "a")} for i in ["a", "b", "a", 7, "7"]]
    result = validate_records(records)
    assert [(b["index"], [r["code"] for r in b["reasons"]]) for b in result.bad] == [
        (0, ["duplicate_id"]),
        (2, ["duplicate_id"]),
        (3, ["duplicate_id"]),
        (4, ["duplicate_id"]),
    ]
    assert "records [0, 2]" in result.bad[0]["reasons"][0]["detail"]


def test_cli_summary_bad_out_and_exit_codes(tmp_path, media, capsys):
    records = [
        {"id": "ok", "video": "v.mp4", "conversations": turns("<video>\nq", "a")},
        {"id": "gone", "video": "gone.mp4", "conversations": turns("<video>\nq", "a")},
        {"id": "order", "conversations": turns("q", "a", "q")},
        {"id": "both", "video": "gone.mp4", "conversations": turns("q", "")},
    ]
    data = write_json(tmp_path / "data.json", records)
    bad_out = tmp_path / "bad.jsonl"
    args = ["validate", data, "--video-root", media.video_root, "--bad-out", str(bad_out)]
    assert main(args) == 1
    out = capsys.readouterr().out
    table = dict(line.split() for line in out.splitlines() if len(line.split()) == 2 and line.split()[1].isdigit())
    assert table == {
        "records": "4",
        "ok": "1",
        "bad": "3",
        "missing_media": "2",
        "role_order": "1",
        "empty_value": "1",
        "placeholder_count": "1",
    }
    bad = read_jsonl(bad_out)
    assert [b["id"] for b in bad] == ["gone", "order", "both"]
    assert [r["code"] for r in bad[2]["reasons"]] == ["empty_value", "placeholder_count", "missing_media"]
    assert bad[0]["record"] == records[1]
    assert main(args + ["--allow-bad"]) == 0


def test_default_root_is_the_json_folder(tmp_path):
    (tmp_path / "v.mp4").write_bytes(b"")
    data = write_json(tmp_path / "d.json", [{"id": "a", "video": "v.mp4", "conversations": turns("<video>\nq", "a")}])
    assert main(["validate", data]) == 0


def test_not_a_list_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"id": 1}))
    assert main(["validate", str(path)]) == 2
    assert "d.json: expected a JSON list" in capsys.readouterr().err
