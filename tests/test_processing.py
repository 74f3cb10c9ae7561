"""Image / frame preprocessing against independent references (transformers, hand-built, per-frame loops)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from image_llavolta.processing import (
    CLIP_MEAN,
    CLIP_STD,
    PAD_COLOR,
    PREPROCESSING_KEY,
    expand2square,
    preprocessing_mode,
    process_image,
    process_images,
)
from video_llavolta.processing import process_frames

MEAN = np.array(CLIP_MEAN, np.float32)
STD = np.array(CLIP_STD, np.float32)


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """H x W x 3 uint8 noise with a smooth ramp, so resampling has something to do."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, width, dtype=np.float32)[None, :, None]
    return np.clip(ramp + rng.integers(0, 56, (height, width, 3)), 0, 255).astype(np.uint8)


def normalize_hwc(pixels: np.ndarray) -> torch.Tensor:
    """Reference normalization of an H x W x 3 array in [0, 255] to a (3, H, W) tensor."""
    pixels = pixels.astype(np.float32) / np.float32(255.0)
    return torch.from_numpy(((pixels - MEAN) / STD).transpose(2, 0, 1).copy())


# --- images ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("height,width", [(300, 400), (401, 233), (224, 500), (97, 150), (256, 256)])
def test_process_image_matches_transformers_clip_processor(height, width):
    from transformers import CLIPImageProcessor

    reference = CLIPImageProcessor(
        size={"shortest_edge": 224},
        crop_size={"height": 224, "width": 224},
        do_center_crop=True,
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
        resample=Image.Resampling.BICUBIC,
    )
    image = Image.fromarray(random_image(height, width))
    expected = reference(images=image, return_tensors="pt")["pixel_values"][0]
    ours = process_image(image)
    assert ours.shape == expected.shape == (3, 224, 224)
    # Same PIL bicubic resize and crop; only float32 rounding in /255 and normalize may differ.
    torch.testing.assert_close(ours, expected.float(), atol=1e-5, rtol=0)


def test_pad_to_square_by_hand():
    image = random_image(60, 100, seed=1)  # wide: 20 rows of background above and below
    canvas = np.empty((100, 100, 3), np.uint8)
    canvas[:] = (122, 116, 104)  # int(255 * CLIP_MEAN)
    canvas[20:80] = image
    assert PAD_COLOR == (122, 116, 104)
    assert np.array_equal(np.asarray(expand2square(Image.fromarray(image))), canvas)
    # size == side: no resize, no crop, so the output is just the normalized canvas
    torch.testing.assert_close(
        process_image(image, size=100, pad_to_square=True), normalize_hwc(canvas), atol=1e-6, rtol=0
    )
    # smaller size: identical to processing the hand-built square
    assert torch.equal(process_image(image, size=48, pad_to_square=True), process_image(canvas, size=48))


def test_pad_to_square_tall_image_is_centred():
    image = random_image(90, 31, seed=2)
    square = np.asarray(expand2square(Image.fromarray(image)))
    assert square.shape == (90, 90, 3)
    left = (90 - 31) // 2
    assert np.array_equal(square[:, left : left + 31], image)
    assert (square[:, :left] == PAD_COLOR).all() and (square[:, left + 31 :] == PAD_COLOR).all()


def test_image_with_short_side_at_size_is_not_resampled():
    image = random_image(224, 300, seed=3)
    left = (300 - 224) // 2  # transformers floors the crop offset
    assert torch.equal(process_image(image), normalize_hwc(image[:, left : left + 224]))


def test_process_image_inputs_shapes_and_flip():
    array = random_image(120, 90, seed=4)
    out = process_image(array, size=64)
    assert out.dtype == torch.float32 and out.shape == (3, 64, 64)
    assert torch.equal(out, process_image(Image.fromarray(array), size=64))  # array == PIL input
    assert torch.equal(out, process_image(array, size=64))  # deterministic: no hidden randomness
    assert torch.equal(process_image(array, size=64, flip=True), out.flip(-1))
    batch = process_images([array, array[:, ::-1]], size=64)
    assert batch.shape == (2, 3, 64, 64) and batch.dtype == torch.float32
    with pytest.raises(ValueError):
        process_image(np.zeros((10, 10), np.uint8))


# --- frames ---------------------------------------------------------------------------------------


def reference_frames(frames: np.ndarray, size: int) -> torch.Tensor:
    """Per-frame loop: resize the unnormalized image, slice the centre, then normalize."""
    height, width = frames.shape[1:3]
    short, long = min(height, width), max(height, width)
    new_long = long * size // short  # exact integer floor of long / short * size
    new_h, new_w = (new_long, size) if width < height else (size, new_long)
    top, left = round((new_h - size) / 2), round((new_w - size) / 2)
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    out = []
    for frame in frames:
        x = torch.from_numpy(frame.copy()).permute(2, 0, 1)[None].float()  # 0..255, not normalized
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)[0]
        out.append((x[:, top : top + size, left : left + size] / 255.0 - mean) / std)
    return torch.stack(out)


@pytest.mark.parametrize("height,width,size", [(52, 70, 32), (90, 50, 40), (240, 320, 224), (480, 360, 224)])
def test_process_frames_matches_per_frame_reference(height, width, size):
    frames = np.stack([random_image(height, width, seed=s) for s in range(3)])
    ours = process_frames(frames, size=size)
    assert ours.dtype == torch.float32 and ours.shape == (3, 3, size, size)
    # normalize-then-resize vs resize-then-normalize: equal up to float32 rounding; 1e-5 is ~1/1000
    # of one grey level after normalization (1 / 255 / std ~ 0.015).
    torch.testing.assert_close(ours, reference_frames(frames, size), atol=1e-5, rtol=0)


def test_process_frames_tiny_case_by_hand():
    # 4x4 -> 2x2: bilinear with align_corners=False at scale 1/2 averages each 2x2 block.
    frame = np.arange(16, dtype=np.uint8).reshape(4, 4, 1).repeat(3, axis=2) * 10
    blocks = np.array([[25.0, 45.0], [105.0, 125.0]], np.float32)  # e.g. (0+10+40+50)/4
    expected = normalize_hwc(blocks[..., None].repeat(3, axis=2))
    torch.testing.assert_close(process_frames(frame[None], size=2)[0], expected, atol=1e-6, rtol=0)


def test_process_frames_crop_offset_rounds_half_to_even():
    # 2x5 at size 2: no resize (short side is 2), crop offset round(3 / 2) = 2 -> columns 2..3.
    frame = np.arange(30, dtype=np.uint8).reshape(2, 5, 3)
    expected = normalize_hwc(frame[:, 2:4])
    torch.testing.assert_close(process_frames(frame[None], size=2)[0], expected, atol=1e-6, rtol=0)


def test_frames_with_short_side_at_size_are_not_resampled():
    frames = np.stack([random_image(224, 300, seed=s) for s in range(2)])
    left = round((300 - 224) / 2)
    expected = torch.stack([normalize_hwc(f[:, left : left + 224]) for f in frames])
    assert torch.equal(process_frames(frames), expected)


def test_process_frames_flip_and_validation():
    frames = np.stack([random_image(60, 80, seed=s) for s in range(4)])
    out = process_frames(frames, size=48)
    assert out.shape == (4, 3, 48, 48)
    assert torch.equal(process_frames(frames, size=48, flip=True), out.flip(-1))
    assert torch.equal(process_frames(frames, size=48), out)  # no random flip by default
    with pytest.raises(ValueError):
        process_frames(frames.astype(np.float32))
    with pytest.raises(ValueError):
        process_frames(frames[0])


# --- LanguageBind's image transform ---------------------------------------------------------------


def cubic_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of torchvision's tensor bicubic resize without antialias: Keys' kernel (a = -0.75) at
    half-pixel centres, src = (dst + 0.5) * n_in / n_out - 0.5, taps outside the image clamped to the border."""
    a = -0.75

    def kernel(x):
        x = abs(x)
        if x <= 1:
            return (a + 2) * x**3 - (a + 3) * x**2 + 1
        if x < 2:
            return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
        return 0.0

    w = np.zeros((n_out, n_in), np.float64)
    for i in range(n_out):
        src = (i + 0.5) * n_in / n_out - 0.5
        base = int(np.floor(src))
        for tap in range(base - 1, base + 3):
            w[i, min(max(tap, 0), n_in - 1)] += kernel(src - tap)
    return w


def languagebind_reference(image: np.ndarray, size: int = 224) -> torch.Tensor:
    """LanguageBind's ToTensor -> Resize(size, BICUBIC) -> CenterCrop(size) -> Normalize, as matrix products."""
    h, w = image.shape[:2]
    new_h, new_w = (int(size * h / w), size) if w <= h else (size, int(size * w / h))
    x = image.astype(np.float64) / 255.0
    if (new_h, new_w) != (h, w):
        rows, cols = cubic_weights(h, new_h), cubic_weights(w, new_w)
        x = np.stack([rows @ x[..., c] @ cols.T for c in range(3)], axis=-1)
    top, left = int(round((new_h - size) / 2)), int(round((new_w - size) / 2))
    x = (x[top : top + size, left : left + size] - MEAN) / STD
    return torch.from_numpy(x.transpose(2, 0, 1).astype(np.float32))


@pytest.mark.parametrize("height,width", [(300, 400), (401, 233), (224, 303), (97, 150), (256, 256)])
def test_languagebind_mode_matches_its_tensor_transform(height, width):
    """Video-LLaVA's languagebind/image/processing_image.py: transforms.ToTensor(), Resize(224, BICUBIC) on the
    tensor (torchvision 0.15.2, pinned by Video-LLaVA: tensors are resized without antialias), CenterCrop(224)
    (offsets int(round(...))), Normalize(OpenAI CLIP mean/std)."""
    image = random_image(height, width, seed=height)
    ours = process_image(image, mode="languagebind")
    torch.testing.assert_close(ours, languagebind_reference(image), atol=1e-4, rtol=0)  # float32 vs float64


def test_languagebind_crop_rounds_and_clip_crop_floors():
    image = random_image(224, 303, seed=7)  # no resize; (303 - 224) / 2 = 39.5: round -> 40, floor -> 39
    assert torch.equal(process_image(image, mode="languagebind"), normalize_hwc(image[:, 40:264]))
    assert torch.equal(process_image(image, mode="clip"), normalize_hwc(image[:, 39:263]))


def test_the_two_modes_differ_on_large_images():
    image = random_image(900, 1200, seed=8)  # PIL's antialiased filter averages the noise; the tensor resize doesn't
    gap = (process_image(image, mode="languagebind") - process_image(image, mode="clip")).abs().max().item()
    assert gap > 0.3


def test_mode_comes_from_the_model_config():
    from image_llavolta.configs import tiny_llava_config
    from image_llavolta.inputs import load_image
    from video_llavolta.configs import tiny_video_llava_config

    image = random_image(50, 70, seed=9)
    llava, video = tiny_llava_config(), tiny_video_llava_config()
    assert (preprocessing_mode(llava), preprocessing_mode(video)) == ("clip", "languagebind")
    assert torch.equal(load_image(image, video), process_image(image, 28, pad_to_square=True, mode="languagebind"))
    assert torch.equal(load_image(image, llava), process_image(image, 28, pad_to_square=True, mode="clip"))
    setattr(video, PREPROCESSING_KEY, "clip")
    assert preprocessing_mode(video) == "clip"
    setattr(video, PREPROCESSING_KEY, "pil")
    with pytest.raises(ValueError, match="llavolta_image_preprocessing 'pil'"):
        preprocessing_mode(video)
    with pytest.raises(ValueError, match="unknown image preprocessing mode 'pil'"):
        process_image(image, mode="pil")
