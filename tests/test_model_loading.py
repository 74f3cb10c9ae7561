"""Loading tiny checkpoints that the tests save in each real layout: the toolkit's own and the llava-hf layout older
transformers saved (`llava-1.5-7b-hf`, `Video-LLaVA-7B-hf`). The released Video-LLaVA + LanguageBind layout goes
through the converter (test_convert.py)."""

import json
import re

import pytest
import torch
from safetensors.torch import save_file
from test_towers import tiny
from tiny_models import FRAMES, pixels, sequence, tiny_llava

from image_llavolta.checkpoint import CheckpointMismatchError
from image_llavolta.checkpoint import load_pretrained as load_image_model
from image_llavolta.compression import CompressionSpec
from video_llavolta.checkpoint import load_pretrained


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
LEGACY_VIDEO = [
    (r"^model\.language_model\.", "language_model.model."),
    (r"^lm_head\.", "language_model.lm_head."),
    (r"^model\.image_tower\.", "image_tower.vision_model."),
    (r"^model\.video_tower\.", "video_tower.vision_model."),
    (r"^model\.multi_modal_projector\.", "multi_modal_projector."),
]
LEGACY_IMAGE = [
    (r"^model\.language_model\.", "language_model.model."),
    (r"^lm_head\.", "language_model.lm_head."),
    (r"^model\.vision_tower\.", "vision_tower.vision_model."),
    (r"^model\.multi_modal_projector\.", "multi_modal_projector."),
]


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
    torch.testing.assert_close(
        loaded(input_ids=ids, pixel_values=image).logits,
        model(input_ids=ids, pixel_values=image).logits,
        atol=0,
        rtol=0,
    )


@torch.no_grad()
def test_temporal_mismatch_is_an_error_unless_ignored(tmp_path):
    plain = tiny(temporal=False)
    plain_dir = save_checkpoint(tmp_path / "plain", plain.config, plain.state_dict(), LEGACY_VIDEO)
    absent = r"missing from the checkpoint: .*temporal_attn(.|\n)*has no temporal-attention weights"
    with pytest.raises(CheckpointMismatchError, match=absent):
        load_pretrained(plain_dir, temporal=True)
    # ignored: the absent branch starts as identity, so the features equal the plain tower's
    identity = load_pretrained(
        plain_dir, temporal=True, ignore_temporal_mismatch=True, attn_implementation="eager"
    ).eval()
    torch.testing.assert_close(identity(**batch()).logits, plain(**batch()).logits, atol=1e-6, rtol=1e-6)

    temporal = tiny(temporal=True)
    temporal.save_pretrained(tmp_path / "temporal")
    with pytest.raises(CheckpointMismatchError, match=r"checkpoint has temporal-attention weights"):
        load_pretrained(tmp_path / "temporal", temporal=False)
    dropped = load_pretrained(
        tmp_path / "temporal", temporal=False, ignore_temporal_mismatch=True, attn_implementation="eager"
    ).eval()
    without = tiny(temporal=False)
    without.load_state_dict({k: v for k, v in temporal.state_dict().items() if "temporal_" not in k})
    torch.testing.assert_close(dropped(**batch()).logits, without(**batch()).logits, atol=0, rtol=0)


def test_missing_weight_is_an_error_that_names_it(tmp_path):
    model = tiny(temporal=False)
    state = {k: v for k, v in model.state_dict().items() if "multi_modal_projector.linear_2.bias" not in k}
    path = save_checkpoint(tmp_path / "broken", model.config, state, LEGACY_VIDEO)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"broken: .*\n.*missing from the checkpoint: "
        r"model\.multi_modal_projector\.linear_2\.bias",
    ):
        load_pretrained(path, ignore_temporal_mismatch=True)
