"""Training data: conversation labels, the mixed image/video dataset, failures, batching and the modality sampler."""

import json
import os
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from test_towers import tiny
from tiny_models import FRAMES
from tiny_tokenizer import word_tokenizer
from torch.utils.data import DataLoader
from videos import moving_squares, write_video

from image_llavolta.conversation import VICUNA_V1, tokenize_prompt
from image_llavolta.labels import IGNORE_INDEX, encode_conversation
from image_llavolta.processing import process_image
from video_llavolta.configs import placeholder_tokens
from video_llavolta.data import (
    InstructionDataset,
    ModalityLengthGroupedSampler,
    SampleFailure,
    TrainCollator,
    frame_dir_name,
)
from video_llavolta.frames import read_frames, write_frame_dir
from video_llavolta.processing import process_frames

MAX_LENGTH = 350  # a video is 8 frames x 17 tokens = 136 tokens; two videos and a prompt still fit


def turns(*values):
    """LLaVA-format turns, alternating human and gpt."""
    return [{"from": ("human", "gpt")[i % 2], "value": v} for i, v in enumerate(values)]


VIDEO_RECORDS = [
    {
        "id": "vid-multi",
        "video": "clips/a.mp4",
        "conversations": turns(
            "<video>\nwhat colour is the square ?", "red", "is the square moving ?", "the square is moving right ."
        ),
    },
    {
        "id": 7,
        "video": ["clips/b.mp4", "c.mp4"],
        "conversations": turns("<video> and <video>\nhow many objects are there ?", "two"),
    },
    {"id": "vid-missing", "video": "clips/missing.mp4", "conversations": turns("<video>\nwhat ?", "one")},
    {"id": "vid-corrupt", "video": "clips/corrupt.mp4", "conversations": turns("<video>\nwhat ?", "one")},
    {"id": "vid-long", "video": "c.mp4", "conversations": turns("<video>\n" + "what " * 250, "one")},
    {"id": "vid-frames-only", "video": "clips/gone.mp4", "conversations": turns("<video>\nwhat ?", "blue")},
]
IMAGE_TEXT_RECORDS = [
    {"id": "img-one", "image": "red.png", "conversations": turns("<image>\nwhat colour is the image ?", "red .")},
    {
        "id": "img-two",
        "image": ["red.png", "sq.jpg"],
        "conversations": turns("<image> <image>\nhow many shape ?", "one circle and one square"),
    },
    {"id": "img-bad", "image": "bad.png", "conversations": turns("<image>\nwhat ?", "one")},
    {"id": "text-only", "conversations": turns("what is red ?", "a colour .", "and blue ?", "the colour blue .")},
]
INDEX = {str(r["id"]): i for i, r in enumerate(VIDEO_RECORDS + IMAGE_TEXT_RECORDS)}
GOOD = ["vid-multi", "7", "img-one", "img-two", "text-only"]


@pytest.fixture(scope="module")
def model():
    return tiny(temporal=False)


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer(96)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Videos, images and two instruction files on disk, including a missing, a corrupt and a too-long sample."""
    root = tmp_path_factory.mktemp("data")
    videos, images = root / "videos", root / "images"
    (videos / "clips").mkdir(parents=True)
    images.mkdir()
    write_video(videos / "clips" / "a.mp4", moving_squares(16, height=40, width=56))
    write_video(videos / "clips" / "b.mp4", moving_squares(24, height=40, width=56))
    write_video(videos / "c.mp4", moving_squares(10, height=40, width=56)[::-1].copy())
    (videos / "clips" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)).save(images / "red.png")
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(images / "sq.jpg")
    (images / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "video.json").write_text(json.dumps(VIDEO_RECORDS))
    (root / "image_text.json").write_text(json.dumps(IMAGE_TEXT_RECORDS))
    return root


def dataset(data, tokenizer, model, **kw):
    kw = {"image_root": data / "images", "video_root": data / "videos", "max_length": MAX_LENGTH, **kw}
    return InstructionDataset([data / "video.json", data / "image_text.json"], tokenizer, model.config, **kw)


def decoded(path):
    """(T, 3, S, S) pixels of a video, decoded and processed independently of the dataset."""
    return process_frames(read_frames(path, FRAMES).frames, size=28)


def expected_ids(tokenizer, model, record):
    """The whole conversation rendered by the template and tokenized in one go."""
    text = VICUNA_V1.render([t["value"] for t in record["conversations"]], add_generation_prompt=False)
    return tokenize_prompt(tokenizer, text, placeholder_tokens(model.config))


def trained_runs(labels):
    """(start, end) of each maximal run of trained positions."""
    runs, start = [], None
    for i, label in enumerate(list(labels) + [IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = i
        elif label == IGNORE_INDEX and start is not None:
            runs.append((start, i))
            start = None
    return runs


# --- conversation -> (input_ids, labels) -------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [VIDEO_RECORDS[0], VIDEO_RECORDS[1], IMAGE_TEXT_RECORDS[1], IMAGE_TEXT_RECORDS[3]],
    ids=lambda r: str(r["id"]),
)
def test_conversation_ids_and_labels(tokenizer, model, record):
    ids, labels = encode_conversation(tokenizer, record["conversations"], placeholder_tokens(model.config))
    assert ids == expected_ids(tokenizer, model, record)  # piecewise tokenization changes no id
    assert len(labels) == len(ids)
    replies = [t["value"] for t in record["conversations"][1::2]]
    runs = trained_runs(labels)
    assert len(runs) == len(replies)  # one trained span per reply, each right after "ASSISTANT :"
    for (start, end), reply in zip(runs, replies):
        assert tokenizer.convert_ids_to_tokens(ids[start - 2 : start]) == ["ASSISTANT", ":"]
        assert tokenizer.convert_ids_to_tokens(ids[start:end]) == reply.split() + ["</s>"]
        assert labels[start:end] == ids[start:end]


def test_training_prompt_equals_inference_prompt(tokenizer, model):
    placeholders = placeholder_tokens(model.config)
    record = VIDEO_RECORDS[0]
    values = [t["value"] for t in record["conversations"]]
    ids, labels = encode_conversation(tokenizer, record["conversations"], placeholders)
    (first, _), (second, _) = trained_runs(labels)
    # what generate() sees before the first and before the second reply
    assert ids[:first] == tokenize_prompt(tokenizer, VICUNA_V1.render(values[:1]), placeholders)
    assert ids[:second] == tokenize_prompt(tokenizer, VICUNA_V1.render(values[:3]), placeholders)
    single, _ = encode_conversation(tokenizer, turns(values[0], values[1]), placeholders)
    assert single[:first] == tokenize_prompt(tokenizer, VICUNA_V1.render(values[:1]), placeholders)


@pytest.mark.parametrize(
    "conversations, match",
    [
        (turns("hello", "hi")[::-1], "roles"),  # gpt first
        (turns("hello", "hi", "more ?"), "end with gpt"),
        (turns("hello", "hi") + turns("again", "hi")[1:], "roles"),  # gpt twice in a row
        ([{"from": "user", "value": "hello"}, {"from": "gpt", "value": "hi"}], "turn 0 must be"),
        ([], "non-empty list"),
        (turns("<video>\nhello", "look : <image>"), "gpt turn contains a visual placeholder"),
    ],
)
def test_bad_conversation_names_the_sample(tokenizer, model, conversations, match):
    with pytest.raises(ValueError, match=rf"sample 'rec-9': .*{match}"):
        encode_conversation(tokenizer, conversations, placeholder_tokens(model.config), sample_id="rec-9")


# --- loading and validating the JSON ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, match",
    [
        ("[{", r"cannot read instruction data"),
        ('{"id": "x"}', r"expected a JSON list of records, got dict"),
        (json.dumps([IMAGE_TEXT_RECORDS[3], ["x"]]), r"record 1 \(id None\): expected an object"),
        (json.dumps([{"conversations": turns("a", "b")}]), r"record 0 \(id None\): 'id' must be"),
        (
            json.dumps([IMAGE_TEXT_RECORDS[3], {"id": "b", "conversations": turns("a", "b")[::-1]}]),
            r"record 1 \(id 'b'\): roles \['gpt', 'human'\]",
        ),
        (
            json.dumps([{"id": "v", "video": "a.mp4", "conversations": turns("what ?", "one")}]),
            r"record 0 \(id 'v'\): 0 x <video> in the human turns but 1 video file\(s\)",
        ),
        (
            json.dumps([{"id": "i", "conversations": turns("<image>\nwhat ?", "one")}]),
            r"record 0 \(id 'i'\): 1 x <image> in the human turns but 0 image file\(s\)",
        ),
        (
            json.dumps([{"id": "g", "image": "a.png", "conversations": turns("<image>\nwhat ?", "<image>")}]),
            r"record 0 \(id 'g'\): 0 x <image> in the human turns but 1|gpt turn contains <image>",
        ),
        (
            json.dumps([{"id": 3, "video": 5, "conversations": turns("<video>", "one")}]),
            r"record 0 \(id 3\): 'video' must be a non-empty path or list of paths",
        ),
    ],
)
def test_bad_instruction_file_names_file_and_record(tmp_path, tokenizer, model, content, match):
    path = tmp_path / "train.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=rf"{path}: .*{match}"):
        InstructionDataset([path], tokenizer, model.config)


# --- samples ------------------------------------------------------------------------------------------------


def test_samples_have_labels_and_pixels(data, tokenizer, model):
    ds = dataset(data, tokenizer, model)
    assert len(ds) == len(VIDEO_RECORDS) + len(IMAGE_TEXT_RECORDS)
    records = VIDEO_RECORDS + IMAGE_TEXT_RECORDS
    for sample_id in GOOD:
        sample = ds[INDEX[sample_id]]
        assert sample["id"] == sample_id
        assert sample["input_ids"].dtype == sample["labels"].dtype == torch.long
        assert sample["input_ids"].tolist() == expected_ids(tokenizer, model, records[INDEX[sample_id]])
    video, two_videos = ds[INDEX["vid-multi"]], ds[INDEX["7"]]
    assert video["modality"] == two_videos["modality"] == "video" and "pixel_values" not in video
    assert two_videos["pixel_values_videos"].shape == (2, FRAMES, 3, 28, 28)
    assert torch.equal(video["pixel_values_videos"][0], decoded(data / "videos" / "clips" / "a.mp4"))
    assert torch.equal(two_videos["pixel_values_videos"][1], decoded(data / "videos" / "c.mp4"))
    image, two_images = ds[INDEX["img-one"]], ds[INDEX["img-two"]]
    assert image["modality"] == "image" and "pixel_values_videos" not in image
    assert two_images["pixel_values"].shape == (2, 3, 28, 28)
    with Image.open(data / "images" / "sq.jpg") as im:  # "pad" to square, then LanguageBind's transform
        assert torch.equal(
            two_images["pixel_values"][1], process_image(im.convert("RGB"), 28, pad_to_square=True, mode="languagebind")
        )
    text = ds[INDEX["text-only"]]
    assert text["modality"] == "text" and not {"pixel_values", "pixel_values_videos"} & set(text)


def test_failures_are_reported_not_replaced(data, tokenizer, model):
    ds = dataset(data, tokenizer, model)
    missing, corrupt = ds[INDEX["vid-missing"]], ds[INDEX["vid-corrupt"]]
    assert missing == SampleFailure("vid-missing", str(data / "videos" / "clips" / "missing.mp4"), missing.reason)
    assert missing.reason.startswith("VideoNotFoundError")
    assert corrupt.id == "vid-corrupt" and corrupt.path == str(data / "videos" / "clips" / "corrupt.mp4")
    assert corrupt.reason.startswith("VideoDecodeError")
    bad_image = ds[INDEX["img-bad"]]
    assert bad_image.id == "img-bad" and bad_image.path == str(data / "images" / "bad.png")
    assert "cannot read image" in bad_image.reason
    too_long = ds[INDEX["vid-long"]]
    assert isinstance(too_long, SampleFailure) and too_long.path == str(data / "video.json")
    assert too_long.reason == f"{ds.lengths()[INDEX['vid-long']]} tokens > max_length {MAX_LENGTH}"
    assert ds.lengths()[INDEX["vid-long"]] > MAX_LENGTH
    # a larger budget admits the very same sample
    assert dataset(data, tokenizer, model, max_length=1000)[INDEX["vid-long"]]["id"] == "vid-long"


def test_lengths_and_modalities_need_no_media(data, tokenizer, model, tmp_path):
    records = VIDEO_RECORDS + IMAGE_TEXT_RECORDS
    # roots with no media at all: every media sample fails to load, yet lengths and modalities are known
    ds = dataset(data, tokenizer, model, image_root=tmp_path, video_root=tmp_path)
    assert ds.lengths() == [len(expected_ids(tokenizer, model, r)) for r in records]
    assert ds.modalities() == ["video"] * len(VIDEO_RECORDS) + ["image"] * 3 + ["text"]
    assert isinstance(ds[INDEX["vid-multi"]], SampleFailure)
    real = dataset(data, tokenizer, model)
    for sample_id in GOOD:
        assert len(real[INDEX[sample_id]]["input_ids"]) == real.lengths()[INDEX[sample_id]]


def test_frame_directories_replace_decoding(data, tokenizer, model, tmp_path):
    assert frame_dir_name("clips/b.mp4") == "clips__b"
    assert frame_dir_name(os.path.join("cats", "big", "a.webm")) == "cats__big__a"
    frames_root = tmp_path / "frames"
    a, c = data / "videos" / "clips" / "a.mp4", data / "videos" / "c.mp4"
    write_frame_dir(frames_root / "clips__gone", read_frames(a, FRAMES), fmt="npy")  # the video file is gone
    write_frame_dir(frames_root / "clips__b", read_frames(c, FRAMES), fmt="npy")  # stands in for b.mp4
    (frames_root / "clips__a").mkdir()  # unfinished extraction (no frames.json): decode the video instead
    ds = dataset(data, tokenizer, model, frames_root=frames_root)
    assert torch.equal(ds[INDEX["vid-frames-only"]]["pixel_values_videos"][0], decoded(a))
    assert torch.equal(ds[INDEX["7"]]["pixel_values_videos"][0], decoded(c))
    assert torch.equal(ds[INDEX["vid-multi"]]["pixel_values_videos"][0], decoded(a))
    without = dataset(data, tokenizer, model)
    assert without[INDEX["vid-frames-only"]].reason.startswith("VideoNotFoundError")
    assert torch.equal(without[INDEX["7"]]["pixel_values_videos"][0], decoded(data / "videos" / "clips" / "b.mp4"))


def test_flip_is_reproducible(data, tokenizer, model):
    plain = dataset(data, tokenizer, model)
    always = dataset(data, tokenizer, model, flip_prob=1.0)
    for sample_id, key in (("vid-multi", "pixel_values_videos"), ("img-two", "pixel_values")):
        want = plain[INDEX[sample_id]][key]
        assert torch.equal(always[INDEX[sample_id]][key], want.flip(-1))
        assert not torch.equal(want, want.flip(-1))

    def flips(ds, index, epochs=12):
        out = []
        for epoch in range(epochs):
            ds.set_epoch(epoch)
            out.append(torch.equal(ds[index]["pixel_values"], unflipped.flip(-1)))
        return out

    index = INDEX["img-one"]
    unflipped = plain[index]["pixel_values"]
    first = flips(dataset(data, tokenizer, model, flip_prob=0.5, seed=3), index)
    assert first == flips(dataset(data, tokenizer, model, flip_prob=0.5, seed=3), index)
    assert True in first and False in first  # a fresh draw per epoch
    assert first != flips(dataset(data, tokenizer, model, flip_prob=0.5, seed=4), index)


# --- batches ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["right", "left"])
def test_collator_pads_and_sets_failures_aside(data, tokenizer, model, side):
    ds = dataset(data, tokenizer, model)
    samples = [ds[INDEX[i]] for i in ("7", "vid-missing", "vid-multi", "img-one", "text-only", "img-bad")]
    batch = TrainCollator(tokenizer.pad_token_id, padding_side=side)(samples)
    good = [s for s in samples if not isinstance(s, SampleFailure)]
    assert [f.id for f in batch["failures"]] == ["vid-missing", "img-bad"]
    width = max(len(s["input_ids"]) for s in good)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (4, width)
    for row, s in enumerate(good):
        n = len(s["input_ids"])
        real = slice(0, n) if side == "right" else slice(width - n, width)
        pad = slice(n, width) if side == "right" else slice(0, width - n)
        assert torch.equal(batch["input_ids"][row, real], s["input_ids"])
        assert torch.equal(batch["labels"][row, real], s["labels"])
        assert batch["attention_mask"][row, real].all() and not batch["attention_mask"][row, pad].any()
        assert (batch["input_ids"][row, pad] == tokenizer.pad_token_id).all()
        assert (batch["labels"][row, pad] == IGNORE_INDEX).all()
    # pixels in sample order: the two videos of sample "7", then the one of "vid-multi"
    videos = batch["pixel_values_videos"]
    assert videos.shape[0] == 3
    assert torch.equal(videos[:2], good[0]["pixel_values_videos"])
    assert torch.equal(videos[2:], good[1]["pixel_values_videos"])
    assert torch.equal(batch["pixel_values"], good[2]["pixel_values"])


def test_all_failed_batch(data, tokenizer, model):
    ds = dataset(data, tokenizer, model)
    failures = [ds[INDEX["vid-missing"]], ds[INDEX["vid-corrupt"]]]
    batch = TrainCollator(tokenizer.pad_token_id)(failures)
    assert batch["failures"] == failures and sorted(batch) == ["failures", "labels"]
    assert batch["labels"].numel() == 0  # nothing to learn; the Trainer can still count label tokens


def test_batch_loss_is_cross_entropy_over_replies(data, tokenizer, model):
    ds = dataset(data, tokenizer, model)
    batch = TrainCollator(tokenizer.pad_token_id)([ds[INDEX[i]] for i in GOOD])
    inputs = {k: v for k, v in batch.items() if k not in ("failures", "labels")}
    with torch.no_grad():
        loss = model(**inputs, labels=batch["labels"]).loss
        logits = model(**inputs).logits
    assert torch.isfinite(loss)
    # the token at position t is predicted from position t - 1; only reply tokens and their </s> count
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    records = VIDEO_RECORDS + IMAGE_TEXT_RECORDS
    replies = [t["value"] for i in GOOD for t in records[INDEX[i]]["conversations"][1::2]]
    assert keep.sum() == sum(len(r.split()) + 1 for r in replies)
    want = F.cross_entropy(logits[:, :-1][keep].float(), targets[keep])
    torch.testing.assert_close(loss, want)


def test_dataloader_epoch(data, tokenizer, model):
    ds = dataset(data, tokenizer, model)
    sampler = ModalityLengthGroupedSampler(ds.lengths(), ds.modalities(), global_batch_size=2, seed=0)
    batches = sampler.rank_batches()  # one process: its share is the whole global batch
    loader = DataLoader(ds, batch_sampler=batches, collate_fn=TrainCollator(tokenizer.pad_token_id), num_workers=1)
    pixels = {"video": {"pixel_values_videos"}, "image": {"pixel_values"}, "text": set()}
    seen, failed = [], []
    for batch, indices in zip(loader, batches, strict=True):
        failed += [f.id for f in batch["failures"]]  # failures crossed the worker process intact
        if "input_ids" in batch:
            seen.append(len(batch["input_ids"]))
            modality = ds.modalities()[indices[0]]
            assert pixels[modality] == {"pixel_values_videos", "pixel_values"} & set(batch)
    assert sum(seen) == len(GOOD)
    assert sorted(failed) == sorted(set(INDEX) - set(GOOD))


# --- the sampler --------------------------------------------------------------------------------------------


def corpus(counts=(("video", 23), ("image", 41), ("text", 7)), seed=0):
    """Interleaved modalities with lengths spread over 10..1000."""
    rng = np.random.default_rng(seed)
    modalities = [m for m, n in counts for _ in range(n)]
    rng.shuffle(modalities)
    return rng.integers(10, 1000, len(modalities)).tolist(), modalities


def test_sampler_batches():
    lengths, modalities = corpus()
    sampler = ModalityLengthGroupedSampler(lengths, modalities, global_batch_size=4, seed=1, megabatch=3)
    order, batches = list(sampler), sampler.global_batches()
    assert sorted(order) == list(range(len(lengths))) and len(sampler) == len(lengths)
    assert [i for b in batches for i in b] == order
    for b in batches:
        assert len({modalities[i] for i in b}) == 1  # one modality per global batch
        assert [lengths[i] for i in b] == sorted((lengths[i] for i in b), reverse=True)
    sizes = {m: Counter(len(b) for b in batches if modalities[b[0]] == m) for m in ("video", "image", "text")}
    # only each modality's last batch is short: 23 = 5*4 + 3, 41 = 10*4 + 1, 7 = 4 + 3
    assert sizes == {"video": Counter({4: 5, 3: 1}), "image": Counter({4: 10, 1: 1}), "text": Counter({4: 1, 3: 1})}
    # ranks split every global batch between them, so all ranks see one modality per step
    shares = [sampler.rank_batches(rank, 3) for rank in range(3)]
    for step, batch in enumerate(batches):  # (a batch smaller than the 3 ranks is cycled: see the next test)
        assert {i for share in shares for i in share[step]} == set(batch)
        if len(batch) >= 3:
            assert sorted(i for share in shares for i in share[step]) == sorted(batch)
    # batch order is shuffled: the modalities interleave instead of coming in three blocks
    changes = sum(modalities[a[0]] != modalities[b[0]] for a, b in zip(batches, batches[1:]))
    assert changes > 2


def test_sampler_megabatches_group_lengths():
    lengths, modalities = corpus()
    # one megabatch covers a whole modality: its batches hold disjoint, consecutive length ranges
    sampler = ModalityLengthGroupedSampler(lengths, modalities, global_batch_size=4, seed=2, megabatch=100)
    for m in ("video", "image", "text"):
        spans = sorted(
            ([lengths[i] for i in b] for b in sampler.global_batches() if modalities[b[0]] == m), key=max, reverse=True
        )
        assert all(min(a) >= max(b) for a, b in zip(spans, spans[1:]))
    # megabatch=1: no sorting across batches, but the modality is still shuffled (batches differ per epoch)
    small = ModalityLengthGroupedSampler(lengths, modalities, global_batch_size=4, seed=2, megabatch=1)
    first = {frozenset(b) for b in small.global_batches()}
    small.set_epoch(1)
    assert first != {frozenset(b) for b in small.global_batches()}


def test_sampler_is_deterministic_per_epoch():
    lengths, modalities = corpus()
    make = lambda **kw: ModalityLengthGroupedSampler(lengths, modalities, 4, **{"seed": 5, **kw})  # noqa: E731
    assert list(make()) == list(make(epoch=0))
    assert list(make()) != list(make(epoch=1))
    assert list(make()) != list(make(seed=6))
    sampler = make()
    sampler.set_epoch(1)
    assert list(sampler) == list(make(epoch=1))


def test_sampler_cuts_padding():
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(5, 0.8, 2000), 20, 4000).astype(int).tolist()
    modalities = rng.choice(["video", "image"], 2000).tolist()
    size = 8

    def waste(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    grouped = ModalityLengthGroupedSampler(lengths, modalities, size, seed=0).global_batches()
    order = rng.permutation(len(lengths)).tolist()
    shuffled = [order[i : i + size] for i in range(0, len(order), size)]
    assert waste(grouped) < 0.2 * waste(shuffled)


def test_short_tail_gives_every_rank_a_sample():
    # 4 videos and 1 image, global batch 4, 3 ranks: the lone image batch must reach all three ranks
    sampler = ModalityLengthGroupedSampler([5, 6, 7, 8, 9], ["video"] * 4 + ["image"], 4, seed=0)
    per_rank = [sampler.rank_batches(r, 3) for r in range(3)]
    for step, batches in enumerate(zip(*per_rank)):
        assert all(batches), f"a rank has an empty batch at step {step}"
        seen = {i for b in batches for i in b}
        assert seen == set(sampler.global_batches()[step])  # no sample from another step or modality
