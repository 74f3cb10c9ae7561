"""The LLaVA-OneVision family: its record, the loader of llava-hf-layout directories, frames, prompts, FLOPs."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_onevision import FRAME, VIDEO, qwen_style_tokenizer, tiny_onevision
from transformers import AutoTokenizer

from image_llavolta.compression import CompressionSpec, enable_compression, pooled_length
from image_llavolta.efficiency.report import efficiency_report
from llavolta.efficiency import main as efficiency_main
from video_llavolta.families import FAMILIES, family_for
from video_llavolta.onevision import (
    LLAVA_ONEVISION,
    encode_video_sample,
    process_frames,
    siglip_tower_flops,
    video_prompt,
)

# llava-hf's checkpoints predate transformers' `model.` prefix: these are the stored key prefixes
HUB_LAYOUT = {
    "model.language_model.": "language_model.model.",
    "lm_head.": "language_model.lm_head.",
    "model.vision_tower.": "vision_tower.",
    "model.multi_modal_projector.": "multi_modal_projector.",
    "model.image_newline": "image_newline",
}


def save_hub_layout(model, path):
    """save_pretrained, then the weights renamed to the llava-onevision-qwen2-7b-ov-hf layout, with a tokenizer."""
    model.save_pretrained(path)
    weights = load_file(path / "model.safetensors")
    renamed = {}
    for key, value in weights.items():
        new = next((key.replace(a, b, 1) for a, b in HUB_LAYOUT.items() if key.startswith(a)), key)
        renamed[new] = value
    assert not any(k.startswith("model.") for k in renamed)
    save_file(renamed, path / "model.safetensors", metadata={"format": "pt"})
    qwen_style_tokenizer().save_pretrained(path)


def test_family_is_listed_and_found_by_model_type(tmp_path):
    model = tiny_onevision()
    assert FAMILIES["llava_onevision"] is LLAVA_ONEVISION and family_for(model.config) is LLAVA_ONEVISION
    model.config.save_pretrained(tmp_path)
    assert family_for(tmp_path) is LLAVA_ONEVISION


@torch.no_grad()
def test_loader_reads_the_hub_layout_strictly_with_its_spec(tmp_path):
    stock = tiny_onevision()
    ids = torch.tensor([[5, 6] + [VIDEO] * (2 * FRAME + 1) + [7, 8]])
    videos = torch.randn(1, 2, 3, 28, 28)
    expected = stock(input_ids=ids, pixel_values_videos=videos).logits
    model = enable_compression(stock, CompressionSpec(1, 4))
    save_hub_layout(model, tmp_path)
    loaded = LLAVA_ONEVISION.load_pretrained(tmp_path, compression=None)
    torch.testing.assert_close(loaded(input_ids=ids, pixel_values_videos=videos).logits, expected, atol=0, rtol=0)
    assert LLAVA_ONEVISION.load_pretrained(tmp_path).compression_spec == CompressionSpec(1, 4)
    weights = load_file(tmp_path / "model.safetensors")
    weights.pop("image_newline")
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="missing from the checkpoint: model.image_newline"):
        LLAVA_ONEVISION.load_pretrained(tmp_path)
    with pytest.raises(ValueError, match="is not 'llava_onevision'"):
        tiny_video = tmp_path / "other"
        from transformers import LlamaConfig

        LlamaConfig(num_hidden_layers=1).save_pretrained(tiny_video)
        LLAVA_ONEVISION.load_pretrained(tiny_video)


def test_frames_match_transformers_slow_image_processor():
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 45, 70, 3), dtype=np.uint8)
    ours = process_frames(frames, size=384)
    processor = LlavaOnevisionImageProcessorPil()  # the checkpoint's defaults: 384 px, bicubic, CLIP mean/std
    for t, frame in enumerate(frames):
        base = torch.as_tensor(processor(images=frame, return_tensors="pt")["pixel_values"][0, 0])  # the base image
        torch.testing.assert_close(ours[t], base, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="frames must be uint8 T x H x W x 3"):
        process_frames(frames[0])


@torch.no_grad()
def test_prompt_from_the_chat_template_and_a_compressed_forward(tmp_path):
    tokenizer = qwen_style_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)  # the template travels with the tokenizer
    prompt = video_prompt(tokenizer, "what is in the video ?")
    assert video_prompt(tokenizer, "<video>\nwhat is in the video ?") == prompt  # a benchmark prompt places it
    assert prompt == "<|im_start|>user <video>\nwhat is in the video ?<|im_end|>\n<|im_start|>assistant\n"
    model = enable_compression(tiny_onevision(), CompressionSpec(2, 4))
    frames = np.random.default_rng(1).integers(0, 256, (3, 30, 40, 3), dtype=np.uint8)
    inputs = encode_video_sample(tokenizer, model.config, prompt, frames)
    ids = inputs["input_ids"]
    assert ids.count(VIDEO) == 3 * FRAME + 1 and inputs["pixel_values_videos"].shape == (1, 3, 3, 28, 28)
    start = ids.index(VIDEO)
    assert ids[:start] == tokenizer.convert_tokens_to_ids(["<|im_start|>", "user"])  # no BOS: Qwen2 has none
    assert ids[start + 3 * FRAME + 1] == tokenizer.convert_tokens_to_ids("what")  # the run is whole
    out = model(input_ids=torch.tensor([ids]), pixel_values_videos=inputs["pixel_values_videos"])
    text = len(ids) - 3 * FRAME - 1
    assert out.logits.shape[1] == text + 3 * pooled_length(FRAME, 4) + 1  # the newline kept
    with pytest.raises(ValueError, match="2 <video> placeholders"):
        encode_video_sample(tokenizer, model.config, prompt + "<video>", frames)


@torch.no_grad()
def test_efficiency_report_flops_match_the_profiler():
    model = LLAVA_ONEVISION.tiny_model(4, 64, 28, 4, seed=0, num_frames=2).eval()
    inputs = LLAVA_ONEVISION.synthetic_inputs(model.config, batch=2, text_tokens=6)
    assert inputs["input_ids"].shape == (2, 6 + 2 * FRAME + 1)
    report = efficiency_report(LLAVA_ONEVISION, model, inputs, [None, CompressionSpec(1, 4)], repeats=0, profile=True)
    for row in report["rows"]:
        for part in ("vision", "projector", "language_model", "total"):
            assert 2 * row["macs_profiler"][part] == pytest.approx(row["flops_analytic"][part], rel=1e-3), part
    # 2 frames of 16 tokens per sample; K=1,S=4 → 4 per frame; N = 4
    assert [r["tokens_over_layers"] for r in report["rows"]] == [4 * 2 * 32, 2 * 32 + 3 * 2 * 8]
    # the real shape: 27 × 27 patches at 384 px → 196 tokens per frame
    real = LLAVA_ONEVISION.tiny_model(1, 16, LLAVA_ONEVISION.image_size, 14, num_frames=1).config
    assert LLAVA_ONEVISION.synthetic_inputs(real, 1, 4)["input_ids"].shape[1] == 4 + 196 + 1
    assert siglip_tower_flops(real.vision_config, 2) == 2 * siglip_tower_flops(real.vision_config, 1)


def test_efficiency_command_takes_the_family(tmp_path):
    out = tmp_path / "report.json"
    tiny = ["--tiny", "--family", "llava_onevision", "--layers", "4", "--hidden", "16", "--image-size", "28"]
    quick = ["--text-tokens", "6", "--repeats", "0", "--no-profile", "--threads", "1", "--out", str(out)]
    assert efficiency_main([*tiny, "--patch-size", "4", "--frames", "2", "--specs", "none", "1,4", *quick]) == 0
    report = json.loads(out.read_text())
    assert report["model"]["family"] == "LLaVA-OneVision"
    assert report["inputs"]["pixel_values_videos"] == [1, 2, 3, 28, 28]
    assert report["inputs"]["visual_tokens_per_sample"] == [2 * FRAME]  # the newline is not a visual token
    assert [r["tokens_over_layers"] for r in report["rows"]] == [4 * 32, 32 + 3 * 8]  # 2 frames of 16; K=1,S=4


def test_video_placeholders_match_transformers_processor_on_the_7b_shape():
    from types import SimpleNamespace

    from transformers.models.llava_onevision.processing_llava_onevision import LlavaOnevisionProcessor

    from video_llavolta.onevision import onevision_7b_config, video_placeholder

    config = onevision_7b_config()
    token_id, count = video_placeholder(config, 8)["<video>"]
    # the processor's own expansion (its 729 tokens per image: 27 × 27 patches of 14 px at 384 px)
    stand_in = SimpleNamespace(num_image_tokens=(384 // 14) ** 2, video_token="<video>")
    text = LlavaOnevisionProcessor.replace_video_token(stand_in, {"pixel_values_videos": [torch.zeros(8, 3, 1, 1)]}, 0)
    assert token_id == 151647 and count == text.count("<video>") == 8 * 196 + 1
