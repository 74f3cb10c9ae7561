"""LanguageBind's temporal attention in the video tower, against a reference written with einops."""

import pytest
import torch
from einops import rearrange
from tiny_models import FRAMES, IMAGE, VIDEO, pixels, reference_logits, sequence
from transformers.models.clip.modeling_clip import CLIPEncoderLayer

from image_llavolta.compression import CompressionSpec
from video_llavolta.configs import tiny_video_llava_config
from video_llavolta.models.video_llava import build_model


def tiny(temporal: bool, seed=0, vocab=96, **kw):
    cfg = tiny_video_llava_config(vocab_size=vocab, temporal_attention=temporal, **kw)
    cfg.image_token_index, cfg.video_token_index = IMAGE, VIDEO  # the ids tiny_models' sequences use
    return build_model(cfg, seed=seed, attn_implementation="eager").eval()


def reference_tower(tower, pixel_values, frames):
    """hidden_states of a LanguageBind video tower, written after LanguageBind's own formulation."""
    x = tower.pre_layrnorm(tower.embeddings(pixel_values))
    states = [x]
    for layer in tower.encoder.layers:
        n = x.shape[1]
        x = rearrange(x, "(b t) n d -> (b n) t d", t=frames) + layer.temporal_embedding[:, :frames, :]
        residual = x
        h = layer.temporal_layer_norm1(x)
        attn = layer.temporal_attn
        heads = attn.num_heads
        q, k, v = (rearrange(p(h), "r t (h e) -> r h t e", h=heads) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        weights = torch.softmax(q @ k.transpose(-1, -2) * attn.scale, dim=-1)
        h = attn.out_proj(rearrange(weights @ v, "r h t e -> r t (h e)"))
        x = rearrange(residual + h, "(b n) t d -> (b t) n d", n=n)
        x = CLIPEncoderLayer.forward(layer, x, None)
        states.append(x)
    return states


@torch.no_grad()
def test_temporal_tower_matches_languagebind_formulation():
    model = tiny(temporal=True)
    videos = pixels(2, frames=FRAMES, seed=3)
    flat = videos.flatten(0, 1)
    got = model.model.video_tower(flat, output_hidden_states=True).hidden_states
    want = reference_tower(model.model.video_tower, flat, FRAMES)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_temporal_attention_mixes_frames_of_one_video_only():
    videos = pixels(2, frames=FRAMES, seed=4)
    changed = videos.clone()
    changed[0, 5] += 1.0  # alter one frame of the first video
    for temporal in (True, False):
        tower = tiny(temporal).model.video_tower
        a = tower(videos.flatten(0, 1), output_hidden_states=True).hidden_states[-2].view(2, FRAMES, -1)
        b = tower(changed.flatten(0, 1), output_hidden_states=True).hidden_states[-2].view(2, FRAMES, -1)
        assert torch.equal(a[1], b[1])  # the other video never sees it
        assert not torch.allclose(a[0, 5], b[0, 5])
        assert torch.allclose(a[0, 0], b[0, 0]) != temporal  # other frames change only through temporal attention


@torch.no_grad()
def test_identity_branch_equals_plain_clip_tower():
    temporal, plain = tiny(temporal=True), tiny(temporal=False)
    plain.load_state_dict({k: v for k, v in temporal.state_dict().items() if "temporal_" not in k})
    for layer in temporal.model.video_tower.encoder.layers:
        layer.make_identity()
    videos = pixels(1, frames=FRAMES, seed=5).flatten(0, 1)
    got = temporal.model.video_tower(videos, output_hidden_states=True).hidden_states
    want = plain.model.video_tower(videos, output_hidden_states=True).hidden_states
    for g, w in zip(got, want):
        assert torch.equal(g, w)


def test_wrong_frame_count_is_a_clear_error():
    model = tiny(temporal=True)
    with pytest.raises(ValueError, match="exactly 8 frames"):
        model.model.video_tower(pixels(1, frames=4).flatten(0, 1))
    # without temporal attention any frame count runs (frames are encoded independently)
    tiny(temporal=False).model.video_tower(pixels(1, frames=4).flatten(0, 1))


@torch.no_grad()
def test_compression_on_the_temporal_model_matches_the_reference():
    model = tiny(temporal=True)
    ids = sequence(7, "video", 5, seed=1)
    videos = pixels(1, frames=FRAMES, seed=1)
    model.config.llavolta_compression = CompressionSpec(2, 4).to_dict()
    got = model(input_ids=torch.tensor([ids]), pixel_values_videos=videos).logits[0]
    want = reference_logits(model, ids, 2, 4, pixel_values_videos=videos)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
