"""LLaVA-OneVision through the pipeline: chat-template training samples and staged training of a tiny checkpoint."""

import json

import pytest
import torch
from test_onevision_family import save_hub_layout
from test_train import synthetic  # noqa: F401  (the synthetic data set fixture)
from tiny_onevision import FRAME, VIDEO, qwen_style_tokenizer, tiny_onevision
from transformers import AutoTokenizer

from image_llavolta.compression import CompressionSpec, enable_compression
from image_llavolta.labels import IGNORE_INDEX
from llavolta.train import main as llavolta_train
from video_llavolta.frames import read_frames
from video_llavolta.onevision import LLAVA_ONEVISION, encode_video_sample, video_prompt
from video_llavolta.probe import main as probe_main
from video_llavolta.qa_inference import main as qa_main
from video_llavolta.train_chat import encode_chat

SCHEME = [{"layer": 1, "stride": 4, "fraction": 0.5}, {"none": True, "fraction": 0.5}]


def train_two_stages(data, base, out, family: str) -> dict:
    """Train `base` on 8 records of the synthetic set `data` with SCHEME through `llavolta train`; its report."""
    records = json.loads((data / "train.json").read_text())[:8]
    (data / "train8.json").write_text(json.dumps(records))
    overrides = [
        f"model.path={base}",
        f"output_dir={out}",
        f"data.train=[{data / 'train8.json'}]",
        f"data.video_root={data / 'videos'}",
        "data.max_length=512",
        "optim.per_device_batch_size=4",
        "optim.lr=1e-3",
        f"scheme={json.dumps(SCHEME)}",
        "logging_steps=100",
    ]
    config = out.parent / f"{family}_run.yaml"
    config.write_text(f"model: {{family: {family}}}\n")
    assert llavolta_train([str(config), *overrides]) == 0  # `llavolta train` picks the family's trainer
    return json.loads((out / "train_report.json").read_text())


def test_turns_are_the_templates_prompts_and_labels_the_replies():
    tokenizer = qwen_style_tokenizer()
    placeholders = {"<video>": (VIDEO, 2 * FRAME + 1)}
    turns = [
        {"from": "human", "value": "<video>\nwhat is in the video ?"},
        {"from": "gpt", "value": "a red circle"},
        {"from": "human", "value": "how many objects ?"},
        {"from": "gpt", "value": "w1"},
    ]
    ids, labels = encode_chat(tokenizer, turns, placeholders, "s0")
    tok = tokenizer.convert_tokens_to_ids
    # independently: the first prompt as inference renders it, the reply and <|im_end|>, the template's newline
    # (a whitespace to the word tokenizer), then the second turn as the template writes it after the history
    first = [tok("<|im_start|>"), tok("user")] + [VIDEO] * (2 * FRAME + 1) + tok("what is in the video ?".split())
    first += [tok("<|im_end|>"), tok("<|im_start|>"), tok("assistant")]
    reply = tok("a red circle".split()) + [tok("<|im_end|>")]
    second = [tok("<|im_start|>"), tok("user")] + tok("how many objects ?".split())
    second += [tok("<|im_end|>"), tok("<|im_start|>"), tok("assistant")]
    assert ids == first + reply + second + [tok("w1"), tok("<|im_end|>")]
    assert labels == [IGNORE_INDEX] * len(first) + reply + [IGNORE_INDEX] * len(second) + [tok("w1"), tok("<|im_end|>")]
    prompt_ids = tokenizer(video_prompt(tokenizer, "what is in the video ?").replace("<video>", ""))["input_ids"]
    assert [i for i in first if i != VIDEO] == prompt_ids
    with pytest.raises(ValueError, match="sample 'bad': a gpt turn contains a visual placeholder"):
        encode_chat(tokenizer, [turns[0], {"from": "gpt", "value": "<video>"}], placeholders, "bad")


def test_staged_training_of_a_tiny_checkpoint(synthetic, tmp_path):  # noqa: F811
    model = tiny_onevision()
    model.config.num_frames = 2  # the toolkit's frames-per-video field
    save_hub_layout(model, tmp_path / "base")
    out = tmp_path / "run"
    report = train_two_stages(synthetic, tmp_path / "base", out, "llava_onevision")
    first, last = report["stages"]
    assert report["total_optimizer_steps"] == 2 and first["samples"] + last["samples"] == 8
    frames_in = first["samples"] * 2
    # K=1, S=4: each 16-token frame pools to 4 tokens; the video's newline is not a visual token
    assert (first["visual_tokens_in"], first["visual_tokens_out"]) == (frames_in * FRAME, frames_in * 4)
    assert last["visual_tokens_out"] == last["visual_tokens_in"] == last["samples"] * 2 * FRAME
    trained = LLAVA_ONEVISION.load_pretrained(out)
    assert trained.compression_spec is None and trained.config.model_type == "llava_onevision"
    assert not torch.equal(
        trained.model.multi_modal_projector.linear_1.weight, model.model.multi_modal_projector.linear_1.weight
    )


def test_qa_inference_answers_through_the_chat_template(synthetic, tmp_path):  # noqa: F811
    model = tiny_onevision()
    model.config.num_frames = 2
    save_hub_layout(enable_compression(model, CompressionSpec(1, 4)), tmp_path / "ckpt")
    qa = synthetic / "test_qa.jsonl"
    out = tmp_path / "preds.jsonl"
    args = ["--model", tmp_path / "ckpt", "--qa", qa, "--video-root", synthetic / "videos", "--out", out]
    assert qa_main([str(a) for a in [*args, "--max-new-tokens", "3", "--batch-size", "2"]]) == 0
    preds = [json.loads(line) for line in out.read_text().splitlines()]
    records = [json.loads(line) for line in qa.read_text().splitlines()]
    assert [p["question_id"] for p in preds] == [r["question_id"] for r in records]
    # independently: one question, its prompt from the template, greedy decoding with the stored spec
    loaded = LLAVA_ONEVISION.load_pretrained(tmp_path / "ckpt")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "ckpt")
    frames = read_frames(synthetic / "videos" / records[0]["video"], num_frames=2).frames
    prompt = video_prompt(tokenizer, records[0]["question"])
    sample = encode_video_sample(tokenizer, loaded.config, prompt, frames)
    ids = torch.tensor([sample["input_ids"]])
    with torch.no_grad():
        new = loaded.generate(
            input_ids=ids, pixel_values_videos=sample["pixel_values_videos"], max_new_tokens=3, do_sample=False
        )[0, ids.shape[1] :]
    assert preds[0]["pred"] == tokenizer.decode(new, skip_special_tokens=True).strip()


def test_probe_sweeps_and_profiles_a_checkpoint(synthetic, tmp_path):  # noqa: F811
    model = tiny_onevision()
    model.config.num_frames = 2
    save_hub_layout(model, tmp_path / "ckpt")
    out = tmp_path / "probe"
    argv = ["--model", tmp_path / "ckpt", "--qa", synthetic / "test_qa.jsonl", "--video-root", synthetic / "videos"]
    argv += ["--layers", "1", "--strides", "4", "--out", out, "--limit", "2", "--attention-samples", "1"]
    assert probe_main([str(a) for a in [*argv, "--max-new-tokens", "2"]]) == 0
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["visual_segments"] == [FRAME] * 2 and [p["name"] for p in sweep["points"]] == ["stock", "K1_S4"]
    # K=1, S=4 on 2 frames of 16 over N=4 layers: (32 + 3·8) / (4·32) of the visual tokens kept
    assert sweep["points"][1]["share_kept"] == pytest.approx((32 + 3 * 8) / (4 * 32))
    attention = json.loads((out / "attention.json").read_text())
    assert attention["status"] == "complete" and attention["question_ids"] == [sweep_first_question(synthetic)]
    assert attention["tokens"]["visual"] == 2 * FRAME + 1  # the newline is a placeholder too
    assert attention["tokens"]["system"] == 0  # the chat template writes no system message


def sweep_first_question(root):
    return json.loads((root / "test_qa.jsonl").read_text().splitlines()[0])["question_id"]


def test_lmms_model_answers_a_video_through_the_chat_template(synthetic, tmp_path):  # noqa: F811
    from video_llavolta.lmms_model import VideoLlavolta

    model = tiny_onevision()
    model.config.num_frames = 2
    save_hub_layout(model, tmp_path / "ckpt")
    lmms = VideoLlavolta(pretrained=str(tmp_path / "ckpt"), device="cpu")
    video = str(synthetic / "videos" / "test_00000.mp4")
    sample = lmms.encode("what is in the video ?", [video])
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "ckpt")
    frames = read_frames(video, num_frames=2).frames
    expected = encode_video_sample(tokenizer, model.config, video_prompt(tokenizer, "what is in the video ?"), frames)
    assert sample["input_ids"] == expected["input_ids"]
    assert torch.equal(sample["pixel_values_videos"], expected["pixel_values_videos"])
    with pytest.raises(ValueError, match="answers one video per request here, got 2 video"):
        lmms.encode("what ?", [video, video])
