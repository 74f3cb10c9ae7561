"""Qwen2-VL / Qwen2.5-VL through the pipeline: chat-template training, the probe and the lmms-eval model."""

import json

import numpy as np
import pytest
import torch
from qwen_models import tiny_qwen
from test_onevision_train import train_two_stages
from test_qwen_family import qwen_tokenizer
from test_train import synthetic  # noqa: F401  (the synthetic data set fixture)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from image_llavolta.compression import CompressionSpec, enable_compression
from image_llavolta.labels import IGNORE_INDEX
from video_llavolta.qwen import QWEN2_5_VL, load_pretrained, qa_sample
from video_llavolta.train_chat import QwenInstructionDataset, encode_chat


def save_checkpoint(model, path):
    """A tiny checkpoint in the Qwen2.5-VL-7B-Instruct layout: weights, tokenizer with its chat template, and
    a preprocessor of 2-px patches whose 256-pixel cap makes every training frame 16 x 16 px (8 x 8 patches)."""
    model.save_pretrained(path)
    qwen_tokenizer(model.config).save_pretrained(path)
    Qwen2VLImageProcessorPil(patch_size=2, merge_size=2, max_pixels=16 * 16, min_pixels=8 * 8).save_pretrained(path)


def test_turns_are_the_templates_prompts_and_labels_the_replies(tmp_path):
    model = tiny_qwen("qwen2_5_vl")
    model.config.num_frames = 4
    save_checkpoint(model, tmp_path / "ckpt")
    config = QWEN2_5_VL.load_pretrained(tmp_path / "ckpt").config
    tokenizer = qwen_tokenizer(config)
    # 4 frames of 16 x 16 px: 2 temporal patches of 8 x 8 patches, 16 tokens each after the 2x2 merger
    placeholders = QwenInstructionDataset.placeholder_tokens(config)
    assert placeholders == {"<|video_pad|>": (config.video_token_id, 2 * 16)}
    turns = [
        {"from": "human", "value": "<video>\nwhat is in the video ?"},
        {"from": "gpt", "value": "red ball"},
        {"from": "human", "value": "what is it ?"},
        {"from": "gpt", "value": "a ball"},
    ]
    ids, labels = encode_chat(tokenizer, turns, placeholders, "s0")
    tok = tokenizer.convert_tokens_to_ids
    words = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    start, end = tok("<|im_start|>"), tok("<|im_end|>")
    # independently: the template's default system turn, the user turn with the video block first, the reply
    # and <|im_end|>, then the second turn after the template's newline (a whitespace to the word tokenizer)
    first = [start, *words("system You are a helpful assistant ."), end, start, tok("user"), tok("<|vision_start|>")]
    first += [config.video_token_id] * 32 + [tok("<|vision_end|>"), *words("what is in the video ?"), end]
    first += [start, tok("assistant")]
    reply = [*words("red ball"), end]
    second = [start, tok("user"), *words("what is it ?"), end, start, tok("assistant")]
    last = [*words("a ball"), end]
    assert ids == first + reply + second + last
    assert labels == [IGNORE_INDEX] * len(first) + reply + [IGNORE_INDEX] * len(second) + last
    # the first prompt is the QA encoding of the same question on frames of the training size
    frames = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    assert qa_sample(tokenizer, config, turns[0]["value"], frames)["input_ids"].tolist() == first


def test_staged_training_of_a_tiny_checkpoint(synthetic, tmp_path):  # noqa: F811
    model = tiny_qwen("qwen2_5_vl")
    model.config.num_frames = 4  # the toolkit's frames-per-video field: 2 temporal patches
    save_checkpoint(model, tmp_path / "base")
    out = tmp_path / "run"
    report = train_two_stages(synthetic, tmp_path / "base", out, "qwen2_5_vl")
    first, last = report["stages"]
    assert report["total_optimizer_steps"] == 2 and first["samples"] + last["samples"] == 8
    patches_in = first["samples"] * 2  # 16 tokens per temporal patch; K=1, S=4 pools each to 4
    assert (first["visual_tokens_in"], first["visual_tokens_out"]) == (patches_in * 16, patches_in * 4)
    assert last["visual_tokens_out"] == last["visual_tokens_in"] == last["samples"] * 2 * 16
    trained = QWEN2_5_VL.load_pretrained(out)
    assert (out / "preprocessor_config.json").read_text() == (
        tmp_path / "base" / "preprocessor_config.json"
    ).read_text()
    assert trained.compression_spec is None and trained.config.model_type == "qwen2_5_vl"
    merger = "model.visual.merger.mlp.0.weight"  # the projector trained; the tower's blocks stayed frozen
    before, after = model.state_dict(), trained.state_dict()
    assert not torch.equal(after[merger], before[merger])
    assert torch.equal(
        after["model.visual.blocks.0.mlp.up_proj.weight"], before["model.visual.blocks.0.mlp.up_proj.weight"]
    )


def test_a_sample_carries_its_grid_and_token_types(synthetic, tmp_path):  # noqa: F811
    model = tiny_qwen("qwen2_vl")
    model.config.num_frames = 3  # the last temporal patch repeats the third frame
    save_checkpoint(model, tmp_path / "ckpt")
    config = load_pretrained(tmp_path / "ckpt").config
    dataset = QwenInstructionDataset(
        synthetic / "train.json", qwen_tokenizer(config), config, video_root=synthetic / "videos"
    )
    index = dataset.modalities().index("video")
    sample = dataset[index]
    assert sample["video_grid_thw"].tolist() == [[2, 8, 8]]
    assert sample["pixel_values_videos"].shape == (2 * 8 * 8, 3 * 2 * 2 * 2)
    video = sample["input_ids"] == config.video_token_id
    assert int(video.sum()) == 2 * 16 and torch.equal(sample["mm_token_type_ids"], video.long() * 2)
    with pytest.raises(ValueError, match="flip_prob is not supported for Qwen-VL"):
        QwenInstructionDataset(synthetic / "train.json", qwen_tokenizer(config), config, flip_prob=0.5)


@torch.no_grad()
def test_probe_accounts_each_videos_own_tokens(synthetic, tmp_path):  # noqa: F811
    from video_llavolta.frames import read_frames
    from video_llavolta.probe import main as probe_main
    from video_llavolta.qwen import load_tokenizer

    model = tiny_qwen("qwen2_5_vl")
    model.config.num_frames = 2
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    qwen_tokenizer(model.config).save_pretrained(ckpt)
    # bounds wide enough that each synthetic video (64 to 128 px square) keeps its own size: its own token count
    Qwen2VLImageProcessorPil(patch_size=2, merge_size=2, max_pixels=128 * 128, min_pixels=8 * 8).save_pretrained(ckpt)
    records = [json.loads(line) for line in (synthetic / "test_qa.jsonl").read_text().splitlines()]
    sides = {}
    for r in records:  # one question each of the two videos of different sizes
        sides.setdefault(read_frames(synthetic / "videos" / r["video"], num_frames=1).frames.shape[1], r)
    chosen = list(sides.values())[:2]
    assert len(chosen) == 2
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps(r) + "\n" for r in chosen))
    out = tmp_path / "probe"
    argv = ["--model", ckpt, "--qa", qa, "--video-root", synthetic / "videos", "--layers", "1", "--strides", "4"]
    argv += ["--out", out, "--attention-samples", "1", "--max-new-tokens", "2"]
    assert probe_main([str(a) for a in argv]) == 0
    sweep = json.loads((out / "sweep.json").read_text())
    assert [p["status"] for p in sweep["points"]] == ["ok", "ok"]
    # independently: each question's own QA encoding, and the compressed forward's own accounting over both
    loaded, tokenizer = QWEN2_5_VL.load_pretrained(ckpt), load_tokenizer(ckpt)
    samples = [
        qa_sample(tokenizer, loaded.config, r["question"], read_frames(synthetic / "videos" / r["video"], 2).frames)
        for r in chosen
    ]
    grids = [s["video_grid_thw"][0].tolist() for s in samples]
    assert sweep["visual_segments"] == [[h * w // 4] * t for t, h, w in grids] and grids[0] != grids[1]
    stats = [
        enable_compression(loaded, CompressionSpec(1, 4))(
            **{**s, "input_ids": s["input_ids"][None], "mm_token_type_ids": s["mm_token_type_ids"][None]},
            output_compression=True,
        ).compression
        for s in samples
    ]
    over_layers = sum(st.tokens_over_layers for st in stats)
    assert sweep["points"][1]["share_kept"] == pytest.approx(over_layers / (4 * sum(st.tokens_in for st in stats)))
    attention = json.loads((out / "attention.json").read_text())
    assert attention["status"] == "complete" and attention["question_ids"] == [chosen[0]["question_id"]]
    assert attention["tokens"]["visual"] == grids[0][0] * grids[0][1] * grids[0][2] // 4


class Request:
    def __init__(self, *args):
        self.args = args


@torch.no_grad()
def test_lmms_model_encodes_a_video_as_qa_inference_does(synthetic, tmp_path):  # noqa: F811
    from video_llavolta.frames import read_frames
    from video_llavolta.lmms_model import VideoLlavolta

    model = tiny_qwen("qwen2_5_vl")
    model.config.num_frames = 2
    save_checkpoint(model, tmp_path / "ckpt")
    lmms = VideoLlavolta(pretrained=str(tmp_path / "ckpt"), device="cpu")
    video = str(synthetic / "videos" / "test_00000.mp4")
    sample = lmms.encode("what is in the video ?", [video])
    tokenizer = qwen_tokenizer(model.config)
    config = load_pretrained(tmp_path / "ckpt").config  # its patch settings are the checkpoint's preprocessor's
    expected = qa_sample(tokenizer, config, "what is in the video ?", read_frames(video, num_frames=2).frames)
    for key in ("input_ids", "mm_token_type_ids", "pixel_values_videos", "video_grid_thw"):
        assert torch.equal(sample[key], expected[key]), key
    with pytest.raises(ValueError, match="answers one video per request here, got 2 video"):
        lmms.encode("what ?", [video, video])
    lmms.task_dict = {"t": {"test": [{"video": video}]}}
    visual = lambda doc: [doc["video"]]  # noqa: E731
    [(total, _)] = lmms.loglikelihood([Request("what is in the video ?", "red ball", visual, 0, "t", "test")])
    # independently: the stock forward on the prompt and the continuation, its log-probabilities of the latter
    cont = tokenizer("red ball", add_special_tokens=False)["input_ids"]
    ids = torch.cat([expected["input_ids"], torch.tensor(cont)])[None]
    types = torch.cat([expected["mm_token_type_ids"], torch.zeros(2, dtype=torch.long)])[None]
    logits = model.stock_class.forward(
        model,
        input_ids=ids,
        mm_token_type_ids=types,
        pixel_values_videos=expected["pixel_values_videos"],
        video_grid_thw=expected["video_grid_thw"],
    ).logits[0, -3:-1]
    assert total == pytest.approx(float(logits.log_softmax(-1)[[0, 1], cont].sum()), abs=1e-4)
    [answer] = lmms.generate_until([Request("what is in the video ?", {"max_new_tokens": 3}, visual, 0, "t", "test")])
    batch = {
        **expected,
        "input_ids": expected["input_ids"][None],
        "mm_token_type_ids": expected["mm_token_type_ids"][None],
    }
    new = model.generate(**batch, max_new_tokens=3, do_sample=False)[0, ids.shape[1] - 2 :]
    assert answer == tokenizer.decode(new, skip_special_tokens=True).strip()
