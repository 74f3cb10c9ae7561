"""From a video file and a question to model inputs and generated ids: the whole path on a tiny model."""

import numpy as np
import pytest
import torch
from PIL import Image
from test_towers import tiny
from tiny_models import FRAMES
from tiny_tokenizer import word_tokenizer
from videos import moving_squares, write_video

from image_llavolta.conversation import VICUNA_V1
from image_llavolta.processing import process_image
from video_llavolta.frames import read_frames
from video_llavolta.inputs import collate, encode_sample
from video_llavolta.processing import process_frames


@torch.no_grad()
def test_video_question_to_generation(tmp_path):
    model, tokenizer = tiny(temporal=True), word_tokenizer(96)
    clips = []
    for i, frames in enumerate((20, 33)):
        clips.append(tmp_path / f"clip{i}.mp4")
        write_video(clips[-1], moving_squares(frames, height=40, width=56))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8))
    samples = [
        encode_sample(tokenizer, model.config, VICUNA_V1.render(["<video>\nwhat colour is the square ?"]), [clips[0]]),
        encode_sample(
            tokenizer, model.config, VICUNA_V1.render(["<image> and <video>\nhow many ?"]), [clips[1]], [image]
        ),
    ]
    # pixels: the sampler's frames through the frame transform, the image padded to square ("pad") and processed
    # with LanguageBind's transform, as Video-LLaVA does
    size = model.config.vision_config.image_size
    expected = process_frames(read_frames(clips[1], FRAMES).frames, size=size)
    torch.testing.assert_close(samples[1]["pixel_values_videos"][0], expected, atol=0, rtol=0)
    torch.testing.assert_close(
        samples[1]["pixel_values"][0], process_image(image, size=size, pad_to_square=True, mode="languagebind")
    )

    batch = collate(samples, tokenizer.pad_token_id, padding_side="left")
    assert batch["pixel_values_videos"].shape == (2, FRAMES, 3, size, size)
    assert batch["attention_mask"].sum(1).tolist() == [len(s["input_ids"]) for s in samples]
    out = model.generate(**batch, max_new_tokens=3, do_sample=False)
    for row, sample in enumerate(samples):  # batched, padded generation equals generating each sample alone
        alone = model.generate(**collate([sample], tokenizer.pad_token_id), max_new_tokens=3, do_sample=False)
        assert out[row, -3:].tolist() == alone[0, -3:].tolist()


def test_short_clips_follow_the_models_policy(tmp_path):
    from video_llavolta.frames import ShortVideoWarning
    from video_llavolta.inputs import load_video

    clip = tmp_path / "short.mp4"
    frames = moving_squares(5, height=40, width=56)
    write_video(clip, frames)
    decoded = read_frames(clip, 5).frames  # every frame once
    config = tiny(temporal=False).config
    size = config.vision_config.image_size
    for policy, indices in ((None, [0, 0, 1, 1, 2, 2, 3, 4]), ("repeat_last", [0, 1, 2, 3, 4, 4, 4, 4])):
        if policy:
            config.llavolta_short_clip = policy
        with pytest.warns(ShortVideoWarning):
            pixels = load_video(clip, config)
        assert torch.equal(pixels, process_frames(decoded[indices], size=size)), policy


def test_placeholder_media_mismatch_is_an_error(tmp_path):
    model, tokenizer = tiny(temporal=False), word_tokenizer(96)
    with pytest.raises(ValueError, match=r"1 <video> placeholder\(s\) but 0 were given"):
        encode_sample(tokenizer, model.config, "<video>\nwhat ?")
    with pytest.raises(ValueError, match="cannot read image .*missing.png"):
        encode_sample(tokenizer, model.config, "<image>", images=[tmp_path / "missing.png"])
