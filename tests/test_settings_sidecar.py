"""One settings sidecar reader and one settings check, shared by the answering loop, the merge, scoring and probe."""

import json

import pytest

from image_llavolta.jsonio import check_settings, read_settings, settings_path


def test_read_settings(tmp_path):
    preds = tmp_path / "preds.jsonl"
    assert settings_path(preds) == str(tmp_path / "preds.settings.json")
    assert read_settings(preds) is None  # no sidecar: nothing to compare with
    (tmp_path / "preds.settings.json").write_text(json.dumps({"settings": {"model": "m"}, "status": "complete"}))
    assert read_settings(preds) == {"model": "m"}
    (tmp_path / "preds.settings.json").write_text('{"settings": ')
    with pytest.raises(ValueError, match="preds.settings.json: not valid JSON"):
        read_settings(preds)
    (tmp_path / "preds.settings.json").write_text('{"settings": [1]}')
    with pytest.raises(ValueError, match="preds.settings.json: 'settings' must be a JSON object"):
        read_settings(preds)


def test_check_settings_names_every_difference():
    check_settings("p.jsonl", {"a": 1, "b": [2]}, {"b": [2], "a": 1})  # equal: no error
    with pytest.raises(ValueError) as err:
        check_settings("p.jsonl", {"a": 1, "b": 2, "gone": 0}, {"a": 1, "b": 3, "new": 4}, "a sweep")
    assert str(err.value) == (
        "p.jsonl holds a sweep made with other settings (b: 2 -> 3; gone: 0 -> None; "
        "new: None -> 4); write elsewhere or delete it to start over"
    )
    with pytest.raises(ValueError, match=r"p.jsonl holds predictions made with other settings \(a: None -> 1\)"):
        check_settings("p.jsonl", None, {"a": 1})
