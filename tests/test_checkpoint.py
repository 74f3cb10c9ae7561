"""The compression spec travels with save_pretrained checkpoints and is restored by the loader."""

import json

import pytest
import torch
from test_compressed_forward import video_inputs
from tiny_models import tiny_video_llava
from transformers import VideoLlavaForConditionalGeneration

from image_llavolta.checkpoint import default_attn_implementation
from image_llavolta.compression import CompressionSpec, enable_compression
from video_llavolta.checkpoint import load_pretrained


@torch.no_grad()
def test_spec_saved_and_restored(tmp_path):
    model = enable_compression(tiny_video_llava(), CompressionSpec(2, 4))
    model.save_pretrained(tmp_path)
    stored = json.loads((tmp_path / "config.json").read_text())["llavolta_compression"]
    assert stored == {"layer": 2, "stride": 4, "method": "avgpool", "seed": 0}
    _, batch, _ = video_inputs("left")
    loaded = load_pretrained(tmp_path, attn_implementation="sdpa").eval()
    assert loaded.compression_spec == CompressionSpec(2, 4)
    torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, atol=0, rtol=0)

    # an explicit setting wins over the stored one; stock transformers still loads the directory
    uncompressed = load_pretrained(tmp_path, compression=None, attn_implementation="sdpa").eval()
    stock = VideoLlavaForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    assert type(stock) is VideoLlavaForConditionalGeneration
    torch.testing.assert_close(uncompressed(**batch).logits, stock(**batch).logits, atol=0, rtol=0)


def test_bad_stored_spec_names_the_file(tmp_path):
    tiny_video_llava().save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["llavolta_compression"] = {"layer": 2, "strde": 4}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config.json: bad llavolta_compression: unknown CompressionSpec field"):
        load_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint directory"):
        load_pretrained(tmp_path / "missing")


def test_flash_attention_is_optional():
    # Without CUDA (or without flash-attn) the default is SDPA; flash_attention_2 is never required.
    if not torch.cuda.is_available():
        assert default_attn_implementation() == "sdpa"
    else:
        assert default_attn_implementation() in ("sdpa", "flash_attention_2")
