"""The Qwen2-VL / Qwen2.5-VL families: checkpoints in the Qwen2.5-VL-7B-Instruct layout, frames, prompts, FLOPs."""

import json

import numpy as np
import pytest
import torch
from qwen_models import tiny_qwen
from tokenizers import Tokenizer, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from image_llavolta.compression import CompressionSpec, enable_compression
from image_llavolta.efficiency.flops import analytic_flops
from video_llavolta.families import FAMILIES, family_for
from video_llavolta.qwen import (
    QWEN2_5_VL,
    PatchSettings,
    frames_to_patches,
    load_pretrained,
    load_tokenizer,
    video_inputs,
    vision_flops,
)

# Qwen2.5-VL-Instruct's chat template (its tokenizer_config.json), as the real checkpoint ships it
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content "
    "%}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)
WORDS = "system user assistant you are a helpful . what is in the video ? red ball".split()


def qwen_tokenizer(config) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose special tokens sit at the tiny config's ids, with the real chat template."""
    vocab = {w: i for i, w in enumerate(["<pad>", "<|endoftext|>", "<|im_end|>", "<unk>", "<|im_start|>", *WORDS])}
    vocab.update({f"w{i}": len(vocab) + i for i in range(config.image_token_id - len(vocab))})
    specials = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"]
    vocab.update({t: config.image_token_id + i for i, t in enumerate(specials)})
    core = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<|im_start|>", *specials],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def frames(n, height=60, width=90, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("patch,merge,max_pixels", [(14, 2, 28 * 28 * 1280), (4, 2, 32 * 32)])
def test_one_frame_equals_transformers_image_processor(patch, merge, max_pixels):
    settings = PatchSettings(patch_size=patch, merge_size=merge, max_pixels=max_pixels, min_pixels=8 * 8)
    processor = Qwen2VLImageProcessorPil(patch_size=patch, merge_size=merge, max_pixels=max_pixels, min_pixels=64)
    image = frames(1, 61, 97)
    expected = processor(images=[image[0]], return_tensors="pt")
    pixels, grid = frames_to_patches(image, settings)
    assert [grid] == expected["image_grid_thw"].tolist()
    torch.testing.assert_close(pixels, expected["pixel_values"], atol=1e-5, rtol=0)


def test_video_frames_fill_temporal_patches_in_order():
    settings = PatchSettings(patch_size=4, merge_size=2, max_pixels=48 * 48, min_pixels=64)
    processor = Qwen2VLImageProcessorPil(patch_size=4, merge_size=2, max_pixels=48 * 48, min_pixels=64)
    video = frames(3)
    pixels, grid = frames_to_patches(video, settings)
    per_frame = [processor(images=[f], return_tensors="pt")["pixel_values"] for f in video]
    n = grid[1] * grid[2]
    assert grid[0] == 2 and pixels.shape[0] == 2 * n
    layout = pixels.reshape(2, n, 3, 2, 4, 4)  # (temporal patch, patch, C, frame in patch, p, p)
    # the image processor repeats one frame over the temporal patch; frame 3 fills the last patch twice
    for t, tau, f in [(0, 0, 0), (0, 1, 1), (1, 0, 2), (1, 1, 2)]:
        torch.testing.assert_close(
            layout[t, :, :, tau], per_frame[f].reshape(n, 3, 2, 4, 4)[:, :, 0], atol=1e-5, rtol=0
        )


def test_bad_frames_are_clear_errors():
    with pytest.raises(ValueError, match="frames must be uint8 T x H x W x 3"):
        frames_to_patches(np.zeros((2, 8, 8, 3), np.float32))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny Qwen2.5-VL checkpoint in the Qwen2.5-VL-7B-Instruct layout, its spec stored."""
    path = tmp_path_factory.mktemp("Qwen2.5-VL-7B-Instruct")
    model = enable_compression(tiny_qwen("qwen2_5_vl"), CompressionSpec(1, 2))
    model.save_pretrained(path)
    qwen_tokenizer(model.config).save_pretrained(path)
    Qwen2VLImageProcessorPil(patch_size=2, merge_size=2, max_pixels=16 * 16, min_pixels=8 * 8).save_pretrained(path)
    return path, model


@torch.no_grad()
def test_checkpoint_loads_with_its_spec_tokenizer_and_processor(checkpoint):
    path, model = checkpoint
    assert family_for(path) is QWEN2_5_VL and FAMILIES["qwen2_vl"].name == "Qwen2-VL"
    loaded = load_pretrained(path).eval()
    assert type(loaded) is type(model) and loaded.compression_spec == CompressionSpec(1, 2)
    tokenizer = load_tokenizer(path)
    settings = PatchSettings.from_dir(path)
    assert (settings.patch_size, settings.max_pixels) == (2, 256)
    inputs = video_inputs(tokenizer, loaded.config, "what is in the video ?", frames(4, 20, 24), settings)
    text = tokenizer.decode(inputs["input_ids"][0])
    words = text.split()
    assert words[:2] == ["<|im_start|>", "system"] and words[-2:] == ["<|im_start|>", "assistant"]
    assert words.index("<|vision_start|>") < words.index("<|vision_end|>") < words.index("what")
    t, h, w = inputs["video_grid_thw"][0].tolist()
    assert int((inputs["input_ids"] == loaded.config.video_token_id).sum()) == t * h * w // 4
    out = loaded(**inputs)
    torch.testing.assert_close(out.logits, model(**inputs).logits, atol=1e-6, rtol=0)
    assert out.compression.tokens_out == t * -(-(h * w // 4) // 2)  # 2x per temporal patch
    generated = loaded.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert generated.shape[1] == inputs["input_ids"].shape[1] + 3
    stock = load_pretrained(path, compression=None)
    assert stock.compression_spec is None


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
@torch.no_grad()
def test_tower_flops_count_every_linear_layer(family):
    # Independent: hooks on every Linear / Conv3d of the tower count 2·in·out per row; attention pairs on top.
    model = tiny_qwen(family)
    model.config.llavolta_frame_size = 32  # 16x16 patches of 2 px per frame
    fam = FAMILIES[family]
    inputs = fam.synthetic_inputs(model.config, batch=1, text_tokens=8, frames=4)
    counted = []

    def hook(module, args, out):
        rows = args[0].numel() // args[0].shape[-1] if isinstance(module, torch.nn.Linear) else args[0].shape[0]
        counted.append(2 * rows * module.weight.numel())

    handles = [
        m.register_forward_hook(hook)
        for m in model.model.visual.modules()
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv3d))
    ]
    model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
    for h in handles:
        h.remove()
    vision = model.config.vision_config
    t, gh, gw = inputs["video_grid_thw"][0].tolist()
    d = vision.hidden_size if family == "qwen2_5_vl" else vision.embed_dim
    # tiny windows (window_size 8 px = 4 patches) split each 16x16-patch frame into 16 windows of 16 patches
    windowed = t * (gh * gw // 16) * 16**2 if family == "qwen2_5_vl" else t * (gh * gw) ** 2
    full = t * (gh * gw) ** 2
    blocks = [
        full if family == "qwen2_vl" or i in vision.fullatt_block_indexes else windowed for i in range(vision.depth)
    ]
    attention = sum(2 * 2 * pairs * d for pairs in blocks)
    assert vision_flops(model.config, inputs) == sum(counted) + attention
    stats = enable_compression(model, CompressionSpec(1, 2))(**inputs).compression
    parts = analytic_flops(fam, model, inputs, stats)
    assert parts["projector"] == 0 and parts["vision"] == vision_flops(model.config, inputs)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
@torch.no_grad()
def test_tiny_model_and_synthetic_inputs(family):
    fam = FAMILIES[family]
    model = fam.tiny_model(2, 16, 28, 7, seed=0)  # 28 px frames of 7 px patches: 4 x 4 patches, 4 tokens each
    assert model.config.text_config.num_hidden_layers == 2 and model.compression_spec is None
    inputs = fam.synthetic_inputs(model.config, batch=2, text_tokens=7, seed=3, frames=3)
    ids, config = inputs["input_ids"], model.config
    assert inputs["video_grid_thw"].tolist() == [[2, 4, 4]] * 2  # 3 frames fill 2 temporal patches
    assert ids.shape == (2, 7 + 8 + 2) and (ids[:, 4:12] == config.video_token_id).all()
    assert (ids[:, 3] == config.vision_start_token_id).all() and (ids[:, 12] == config.vision_end_token_id).all()
    assert inputs["pixel_values_videos"].shape == (2 * 2 * 16, 3 * 2 * 7 * 7)
    out = model.stock_class.forward(model, **inputs)  # the stock class takes them as they are
    assert out.logits.shape == (2, 17, config.text_config.vocab_size)


@torch.no_grad()
def test_qa_inference_batched_equals_one_at_a_time(checkpoint, tmp_path):
    from data_prep.synthetic import make_synthetic
    from video_llavolta.qa_inference import run_inference

    path, _ = checkpoint
    make_synthetic(tmp_path / "data", num_train=0, num_test=2, progress=False)
    model, tokenizer = load_pretrained(path).eval(), load_tokenizer(path)
    qa, videos = tmp_path / "data" / "test_qa.jsonl", tmp_path / "data" / "videos"
    preds = {}
    for batch_size in (1, 3):  # 3: left-padded batches of different prompt lengths
        out = tmp_path / f"preds{batch_size}.jsonl"
        run_inference(model, tokenizer, qa, out, videos, batch_size=batch_size, max_new_tokens=3)
        preds[batch_size] = {r["question_id"]: r["pred"] for r in map(json.loads, out.read_text().splitlines())}
    assert len(preds[1]) >= 4 and preds[1] == preds[3]
    settings = json.loads((tmp_path / "preds1.settings.json").read_text())
    assert settings["settings"]["compression"] == CompressionSpec(1, 2).to_dict()  # the checkpoint's spec answered
