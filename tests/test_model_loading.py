"""Loading tiny checkpoints that the tests save in each real layout: the toolkit's own, the llava-hf layout older
transformers saved (`llava-1.5-7b-hf`, `Video-LLaVA-7B-hf`), and the original Video-LLaVA + LanguageBind layout
through the converter."""
import json
import re

import pytest
import torch
from safetensors.torch import save_file
from test_towers import tiny
from tiny_models import FRAMES, pixels, sequence, tiny_llava
from tiny_tokenizer import word_tokenizer
from transformers import AutoTokenizer

from image_llavolta.checkpoint import CheckpointMismatchError
from image_llavolta.checkpoint import load_pretrained as load_image_model
from image_llavolta.compression import CompressionSpec
from video_llavolta.checkpoint import load_pretrained
from video_llavolta.convert import convert


def batch(seed=0):
    ids = sequence(6, "video", 4, seed=seed)
    return dict(input_ids=torch.tensor([ids]), pixel_values_videos=pixels(1, frames=FRAMES, seed=seed))


def save_checkpoint(directory, config, state_dict, rename):
    """config.json plus one safetensors file, each key renamed by the (pattern, replacement) list `rename`."""
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for key, value in state_dict.items():
        for pattern, target in rename:
            if re.match(pattern, key):
                key = re.sub(pattern, target, key, count=1)
                break
        out[key] = value.contiguous()
    save_file(out, directory / "model.safetensors", metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(config.to_dict()))
    return directory


# the key layout transformers 4.x wrote (what the llava-hf checkpoints on the Hub hold)
LEGACY_VIDEO = [(r"^model\.language_model\.", "language_model.model."), (r"^lm_head\.", "language_model.lm_head."),
                (r"^model\.image_tower\.", "image_tower.vision_model."),
                (r"^model\.video_tower\.", "video_tower.vision_model."),
                (r"^model\.multi_modal_projector\.", "multi_modal_projector.")]
LEGACY_IMAGE = [(r"^model\.language_model\.", "language_model.model."), (r"^lm_head\.", "language_model.lm_head."),
                (r"^model\.vision_tower\.", "vision_tower.vision_model."),
                (r"^model\.multi_modal_projector\.", "multi_modal_projector.")]


@torch.no_grad()
def test_toolkit_layout_round_trip_keeps_temporal_attention_and_spec(tmp_path):
    model = tiny(temporal=True)
    model.config.llavolta_compression = CompressionSpec(1, 4).to_dict()
    model.save_pretrained(tmp_path)
    loaded = load_pretrained(tmp_path, attn_implementation="eager").eval()
    assert loaded.compression_spec == CompressionSpec(1, 4)
    assert hasattr(loaded.model.video_tower.encoder.layers[0], "temporal_attn")
    torch.testing.assert_close(loaded(**batch()).logits, model(**batch()).logits, atol=0, rtol=0)


@torch.no_grad()
def test_video_llava_hf_layout_loads(tmp_path):
    model = tiny(temporal=False)
    path = save_checkpoint(tmp_path / "hf", model.config, model.state_dict(), LEGACY_VIDEO)
    loaded = load_pretrained(path, attn_implementation="eager").eval()
    assert loaded.compression_spec is None
    torch.testing.assert_close(loaded(**batch()).logits, model(**batch()).logits, atol=0, rtol=0)


@torch.no_grad()
def test_llava_hf_layout_loads(tmp_path):
    model = tiny_llava(attn="eager")
    path = save_checkpoint(tmp_path / "llava", model.config, model.state_dict(), LEGACY_IMAGE)
    loaded = load_image_model(path, attn_implementation="eager").eval()
    ids = torch.tensor([sequence(3, "image", 4)])
    image = pixels(1)
    torch.testing.assert_close(loaded(input_ids=ids, pixel_values=image).logits,
                               model(input_ids=ids, pixel_values=image).logits, atol=0, rtol=0)


@torch.no_grad()
def test_temporal_mismatch_is_an_error_unless_ignored(tmp_path):
    plain = tiny(temporal=False)
    plain_dir = save_checkpoint(tmp_path / "plain", plain.config, plain.state_dict(), LEGACY_VIDEO)
    absent = r"missing from the checkpoint: .*temporal_attn(.|\n)*has no temporal-attention weights"
    with pytest.raises(CheckpointMismatchError, match=absent):
        load_pretrained(plain_dir, temporal=True)
    # ignored: the absent branch starts as identity, so the features equal the plain tower's
    identity = load_pretrained(plain_dir, temporal=True, ignore_temporal_mismatch=True,
                               attn_implementation="eager").eval()
    torch.testing.assert_close(identity(**batch()).logits, plain(**batch()).logits, atol=1e-6, rtol=1e-6)

    temporal = tiny(temporal=True)
    temporal.save_pretrained(tmp_path / "temporal")
    with pytest.raises(CheckpointMismatchError, match=r"checkpoint has temporal-attention weights"):
        load_pretrained(tmp_path / "temporal", temporal=False)
    dropped = load_pretrained(tmp_path / "temporal", temporal=False, ignore_temporal_mismatch=True,
                              attn_implementation="eager").eval()
    without = tiny(temporal=False)
    without.load_state_dict({k: v for k, v in temporal.state_dict().items() if "temporal_" not in k})
    torch.testing.assert_close(dropped(**batch()).logits, without(**batch()).logits, atol=0, rtol=0)


def test_missing_weight_is_an_error_that_names_it(tmp_path):
    model = tiny(temporal=False)
    state = {k: v for k, v in model.state_dict().items() if "multi_modal_projector.linear_2.bias" not in k}
    path = save_checkpoint(tmp_path / "broken", model.config, state, LEGACY_VIDEO)
    with pytest.raises(CheckpointMismatchError, match=r"broken: .*\n.*missing from the checkpoint: "
                                                      r"model\.multi_modal_projector\.linear_2\.bias"):
        load_pretrained(path, ignore_temporal_mismatch=True)


# --- the original Video-LLaVA + LanguageBind layout ---------------------------------------------------------

ORIGINAL_VOCAB = 96  # the converter appends <image> 96, <video> 97 and pads to 128


def write_original_layout(root, reference):
    """Three directories in the original layout, holding the weights of `reference` (a 128-token tiny model)."""
    cfg = reference.config
    state = reference.state_dict()
    text = cfg.text_config.to_dict()
    llm_cfg = {**{k: text[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                       "num_key_value_heads", "rms_norm_eps", "max_position_embeddings",
                                       "bos_token_id", "eos_token_id", "pad_token_id")},
               "vocab_size": ORIGINAL_VOCAB, "model_type": "llava", "architectures": ["LlavaLlamaForCausalLM"],
               "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
               "mm_hidden_size": cfg.vision_config.hidden_size, "mm_use_im_start_end": False,
               "mm_image_tower": "LanguageBind/LanguageBind_Image", "mm_video_tower": "LanguageBind/LanguageBind_Video_merge"}
    llm = {}
    for key, value in state.items():
        if key.startswith("model.language_model."):
            llm["model." + key[len("model.language_model."):]] = value[:ORIGINAL_VOCAB] if "embed_tokens" in key else value
        elif key == "lm_head.weight":
            llm[key] = value[:ORIGINAL_VOCAB]
        elif key.startswith("model.multi_modal_projector.linear_"):
            index = {"1": "0", "2": "2"}[key.split("linear_")[1][0]]
            llm[f"model.mm_projector.{index}.{key.rsplit('.', 1)[1]}"] = value
    llm["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)  # old Llama checkpoints carry this buffer
    (root / "llm").mkdir(parents=True)
    torch.save({k: v.clone() for k, v in llm.items()}, root / "llm" / "pytorch_model.bin")
    (root / "llm" / "config.json").write_text(json.dumps(llm_cfg))
    word_tokenizer(ORIGINAL_VOCAB).save_pretrained(root / "llm")

    vision = cfg.vision_config.to_dict()
    for name, temporal in (("image", False), ("video", True)):
        tower = {"vision_model." + k[len(f"model.{name}_tower."):]: v.clone() for k, v in state.items()
                 if k.startswith(f"model.{name}_tower.")}
        tower.update({"text_model.embeddings.token_embedding.weight": torch.zeros(3, 4), "logit_scale": torch.ones(()),
                      "visual_projection.weight": torch.zeros(4, 4), "text_projection.weight": torch.zeros(4, 4)})
        d = root / name
        d.mkdir()
        save_file(tower, d / "model.safetensors")
        vcfg = {**vision, "add_time_attn": temporal, "num_frames": FRAMES, "lora_r": 0}
        (d / "config.json").write_text(json.dumps({"model_type": f"LanguageBind{name.title()}",
                                                   "vision_config": vcfg, "text_config": {}}))
    return root / "llm", root / "image", root / "video"


@torch.no_grad()
def test_converter_maps_the_original_layout(tmp_path):
    llm, image, video = write_original_layout(tmp_path, tiny(temporal=True, vocab=128))
    reference = tiny(temporal=True, vocab=128)  # same seed: identical weights
    report = convert(str(llm), str(image), str(video), str(tmp_path / "out"))
    assert report.ok and report.converted == len(reference.state_dict())
    dropped = {r: len(k) for r, k in report.dropped.items()}
    assert sum(dropped.values()) == 1 + 2 * 4  # inv_freq; per tower: text side, logit_scale, 2 projections

    loaded = load_pretrained(tmp_path / "out", attn_implementation="eager").eval()
    assert loaded.config.video_temporal_attention and loaded.config.num_frames == FRAMES
    assert (loaded.config.image_token_id, loaded.config.video_token_id) == (96, 97)
    assert loaded.config.text_config.vocab_size == 128
    ids = sequence(6, "video", 4, seed=2)
    ids = [97 if t == reference.config.video_token_id else t for t in ids]
    videos = pixels(1, frames=FRAMES, seed=2)
    got = loaded(input_ids=torch.tensor([ids]), pixel_values_videos=videos).logits[..., :ORIGINAL_VOCAB]
    reference.config.video_token_index = 97
    want = reference(input_ids=torch.tensor([ids]), pixel_values_videos=videos).logits[..., :ORIGINAL_VOCAB]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    assert tokenizer.convert_tokens_to_ids(["<image>", "<video>"]) == [96, 97]


def test_converter_reports_every_unused_and_missing_key(tmp_path):
    llm, image, video = write_original_layout(tmp_path, tiny(temporal=True, vocab=128))
    weights = torch.load(llm / "pytorch_model.bin")
    weights["model.some_adapter.weight"] = torch.zeros(2)
    del weights["model.mm_projector.2.bias"]
    torch.save(weights, llm / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"unused: \['llm:model.some_adapter.weight'\](.|\n)*"
                                         r"missing: \['model.multi_modal_projector.linear_2.bias'\]"):
        convert(str(llm), str(image), str(video), str(tmp_path / "out"))
    report = json.loads((tmp_path / "out" / "conversion_report.json").read_text())
    assert report["unused"] == ["llm:model.some_adapter.weight"]
    assert report["missing"] == ["model.multi_modal_projector.linear_2.bias"]
    assert not (tmp_path / "out" / "config.json").exists()  # nothing half-converted that looks loadable
