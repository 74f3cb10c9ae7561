"""The quickstart's video-tower pretraining: patch labels against the rendered pixels, learning, what it touches."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch

import data_prep.synthetic as syn
from data_prep.extract import extract_frames
from llavolta.tower_pretrain import TARGETS, TowerPretrainConfig, load_patch_targets, lr_factor, pretrain_video_tower
from video_llavolta.configs import tiny_video_llava_config
from video_llavolta.models.video_llava import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def labels_from_pixels(frame: np.ndarray, meta: dict, grid: int, min_cover: float) -> tuple[np.ndarray, np.ndarray]:
    """Per patch, the object colour filling the largest share of its pixels (if >= min_cover), and that object's shape.

    Independent of patch_labels: it reads the rendered RGB values instead of evaluating the shape masks.
    """
    h = frame.shape[0]
    shape_of = {o["colour"]: o["shape"] for o in meta["objects"]}
    colour_ids = np.zeros(grid * grid, np.int64)
    shape_ids = np.zeros_like(colour_ids)
    for cell in range(grid * grid):
        r, c = divmod(cell, grid)
        rows = slice(r * h // grid, -(-(r + 1) * h // grid))
        cols = slice(c * h // grid, -(-(c + 1) * h // grid))
        patch = frame[rows, cols].reshape(-1, 3)
        shares = {name: np.all(patch == rgb, axis=1).mean() for name, rgb in syn.COLOURS.items() if name in shape_of}
        if shares:
            name, share = max(shares.items(), key=lambda kv: kv[1])
            if share >= min_cover:
                colour_ids[cell] = list(syn.COLOURS).index(name) + 1
                shape_ids[cell] = syn.SHAPES.index(shape_of[name]) + 1
    return colour_ids, shape_ids


@pytest.mark.parametrize("index", range(6))
@pytest.mark.parametrize("grid", [4, 6])
def test_patch_labels_match_the_rendered_pixels(index, grid):
    meta = syn.make_video(0, "train", index)
    frames = syn.render(meta)
    picked = [0, meta["num_frames"] // 2, meta["num_frames"] - 1]
    labels = syn.patch_labels(meta, picked, grid, min_cover=0.2)
    for k, t in enumerate(picked):
        colour, shape = labels_from_pixels(frames[t], meta, grid, 0.2)
        np.testing.assert_array_equal(labels["colour"][k], colour, err_msg=f"video {index} frame {t}")
        np.testing.assert_array_equal(labels["shape"][k], shape, err_msg=f"video {index} frame {t}")
    assert (labels["colour"] > 0).any()  # objects are found at all


def test_patch_labels_refuse_non_square_frames():
    meta = dict(syn.make_video(0, "train", 0), width=96, height=64)
    with pytest.raises(ValueError, match="train_00000: patch labels need square frames, got 96x64"):
        syn.patch_labels(meta, [0], 4)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("towerdata")
    syn.make_synthetic(root / "syn", num_train=12, num_test=2, seed=5, progress=False)
    extract_frames(root / "syn" / "videos", root / "frames", num_frames=4, fmt="npy", progress=False)
    return root


def tiny_model():
    config = tiny_video_llava_config(
        layers=1, hidden=32, image_size=32, patch_size=8, num_frames=4, vision={"hidden": 32, "layers": 2, "heads": 2}
    )
    return build_model(config, seed=0)


def test_targets_line_up_with_the_extracted_frames(synthetic):
    model = tiny_model()
    pixels, labels = load_patch_targets(
        str(synthetic / "syn" / "metadata.jsonl"), str(synthetic / "frames"), model.config
    )
    assert pixels.shape == (12, 4, 3, 32, 32) and labels["colour"].shape == labels["shape"].shape == (12, 4, 16)
    # Where a patch is labelled with a colour, the decoded frame's pixels there are mostly that colour.
    means = pixels.unflatten(-1, (4, 8)).unflatten(-3, (4, 8)).mean(dim=(-1, -3))  # (N, T, 3, 4, 4) per patch
    means = means.flatten(-2).transpose(-1, -2)  # (N, T, 16, 3), normalised RGB
    red = labels["colour"] == list(syn.COLOURS).index("red") + 1
    background = labels["colour"] == 0
    assert red.any() and background.any()
    assert means[red][:, 0].mean() > means[background][:, 0].mean()  # red patches are redder than the rest


def test_pretraining_learns_and_touches_only_the_video_tower(synthetic):
    model = tiny_model()
    pixels, labels = load_patch_targets(
        str(synthetic / "syn" / "metadata.jsonl"), str(synthetic / "frames"), model.config
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = pretrain_video_tower(
        model, pixels, labels, TowerPretrainConfig(steps=200, batch_size=32, lr=3e-3), progress=False
    )
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("model.video_tower.") for k in changed)
    assert report["final_loss"] < 0.5 * report["first_loss"]
    assert report["train_object_patch_accuracy"]["colour"] > 0.8  # chance is 1/4 among object patches
    assert not model.model.video_tower.training


def test_pretraining_is_deterministic(synthetic):
    reports, weights = [], []
    for _ in range(2):
        model = tiny_model()
        pixels, labels = load_patch_targets(
            str(synthetic / "syn" / "metadata.jsonl"), str(synthetic / "frames"), model.config
        )
        reports.append(
            pretrain_video_tower(model, pixels, labels, TowerPretrainConfig(steps=5, batch_size=2), progress=False)
        )
        weights.append(model.model.video_tower.state_dict())
    assert reports[0]["final_loss"] == reports[1]["final_loss"]
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=0, atol=0)


def test_lr_warms_up_holds_then_falls_to_zero():
    config = TowerPretrainConfig(steps=100, decay_share=0.2)  # 5 warm-up steps, 20 decay steps
    assert [lr_factor(s, config) for s in (0, 2, 4, 50, 80, 90, 99)] == pytest.approx([0.2, 0.6, 1, 1, 1, 0.5, 0.05])
    model = tiny_model()  # and the optimizer steps with exactly these lrs
    pixels = torch.zeros(2, 4, 3, 32, 32)
    labels = {name: torch.zeros(2, 4, 16, dtype=torch.long) for name in TARGETS}
    seen = []
    with mock.patch("torch.optim.AdamW.step", lambda self, *a, **k: seen.append(self.param_groups[0]["lr"])):
        pretrain_video_tower(
            model,
            pixels,
            labels,
            progress=False,
            config=TowerPretrainConfig(steps=10, lr=1e-3, batch_size=2, decay_share=0.5),
        )
    assert seen == pytest.approx([1e-3] * 6 + [8e-4, 6e-4, 4e-4, 2e-4])  # warm-up rounds to one step


@pytest.mark.parametrize(
    "bad",
    [
        dict(steps=0),
        dict(batch_size=0),
        dict(lr=0.0),
        dict(min_cover=1.5),
        dict(decay_share=0.0),
        dict(decay_share=1.5),
    ],
)
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError, match="tower pretraining"):
        TowerPretrainConfig(**bad).validate()
