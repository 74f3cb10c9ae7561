"""Model families: finding a checkpoint's family, tiny models of the asked shape, synthetic inputs, loading."""

import pytest
import torch
from tiny_models import PATCHES, tiny_llava, tiny_video_llava
from transformers import LlamaConfig

from image_llavolta.compression import CompressionSpec, enable_compression
from image_llavolta.family import LLAVA
from video_llavolta.families import FAMILIES, VIDEO_LLAVA, family_for

pytestmark = pytest.mark.usefixtures("one_thread")


def test_family_for_reads_the_model_type_of_a_config_or_a_checkpoint(tmp_path):
    assert set(FAMILIES) == {"llava", "video_llava", "llava_onevision", "qwen2_vl", "qwen2_5_vl"}
    assert FAMILIES["llava"] is LLAVA
    assert family_for(tiny_llava().config) is LLAVA and family_for(tiny_video_llava().config) is VIDEO_LLAVA
    tiny_video_llava().save_pretrained(tmp_path / "video")
    assert family_for(tmp_path / "video") is VIDEO_LLAVA and family_for(str(tmp_path / "video")) is VIDEO_LLAVA
    LlamaConfig(num_hidden_layers=1).save_pretrained(tmp_path / "llama")
    with pytest.raises(
        ValueError,
        match=r"llama: model_type 'llama' is not a family known here \(known: llava, llava_onevision, qwen2_5_vl, "
        r"qwen2_vl, "
        r"video_llava\)",
    ):
        family_for(tmp_path / "llama")
    with pytest.raises(FileNotFoundError, match="no checkpoint directory at .*missing"):
        family_for(tmp_path / "missing")


def test_tiny_models_have_the_asked_shape_and_compression_off():
    model = LLAVA.tiny_model(3, 32, 56, 14, seed=1)  # 56 px / 14 px = 4 × 4 patches
    text = model.config.text_config
    assert (text.num_hidden_layers, text.hidden_size, model.config.image_seq_length) == (3, 32, 16)
    assert type(model).__name__ == "LlavoltaForConditionalGeneration" and model.compression_spec is None
    again = LLAVA.tiny_model(3, 32, 56, 14, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    video = VIDEO_LLAVA.tiny_model(2, 16, 28, 7, seed=0, num_frames=3, temporal_attention=True)
    assert video.config.num_frames == 3 and video.config.video_seq_length == 3 * (PATCHES + 1)
    assert any("temporal_attn" in k for k in video.state_dict()) and video.compression_spec is None
    assert LLAVA.tiny_options == () and set(VIDEO_LLAVA.tiny_options) == {"num_frames", "temporal_attention"}
    assert (LLAVA.image_size // 14) ** 2 == 576 and (VIDEO_LLAVA.image_size // 14) ** 2 == 256  # the real models'


def test_load_pretrained_takes_the_stored_spec_unless_told(tmp_path):
    for family, model in ((LLAVA, tiny_llava()), (VIDEO_LLAVA, tiny_video_llava())):
        path = tmp_path / family.model_type
        enable_compression(model, CompressionSpec(1, 4)).save_pretrained(path)
        assert family.load_pretrained(path).compression_spec == CompressionSpec(1, 4)
        assert family.load_pretrained(path, compression=None).compression_spec is None


@pytest.mark.parametrize(
    "family, tokens, pixel_key, pixel_shape",
    [
        (LLAVA, PATCHES, "pixel_values", (2, 3, 28, 28)),  # one image: 16 patches, CLS dropped
        (VIDEO_LLAVA, 3 * (PATCHES + 1), "pixel_values_videos", (2, 3, 3, 28, 28)),  # one video of 3 frames, CLS kept
    ],
)
def test_synthetic_inputs_have_the_familys_placeholder_layout(family, tokens, pixel_key, pixel_shape):
    options = {"num_frames": 3} if family is VIDEO_LLAVA else {}
    model = family.tiny_model(2, 16, 28, 7, seed=0, **options)
    config = model.config
    inputs = family.synthetic_inputs(config, batch=2, text_tokens=7, seed=3)
    ids = inputs["input_ids"]
    placeholder = config.video_token_id if family is VIDEO_LLAVA else config.image_token_id
    assert ids.shape == (2, 7 + tokens) and inputs["attention_mask"].tolist() == torch.ones(2, 7 + tokens).tolist()
    assert set(inputs) == {"input_ids", "attention_mask", pixel_key} and inputs[pixel_key].shape == pixel_shape
    # text 3 ids (7 // 2), the visual block, text 4 ids; text ids are neither placeholders nor pad/BOS/EOS
    assert (ids[:, 3 : 3 + tokens] == placeholder).all()
    text = torch.cat([ids[:, :3], ids[:, 3 + tokens :]], 1)
    assert text.min() >= 3 and not torch.isin(text, torch.tensor([config.image_token_id, placeholder])).any()
    assert torch.equal(family.synthetic_inputs(config, batch=2, text_tokens=7, seed=3)["input_ids"], ids)
    with torch.no_grad():  # the stock class takes them as they are
        out = model.stock_class.forward(model, **inputs)
    assert out.logits.shape == (2, 7 + tokens, config.text_config.vocab_size)
