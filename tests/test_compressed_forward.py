"""The compressed forward of LLaVA / Video-LLaVA against stock transformers and an independent reference."""

import copy

import pytest
import torch
import torch.nn.functional as F
from tiny_models import FRAMES, IMAGE, pad_batch, pixels, reference_logits, sequence, tiny_llava, tiny_video_llava
from transformers import LlamaForCausalLM, LlavaForConditionalGeneration, VideoLlavaForConditionalGeneration

from image_llavolta.compression import CompressionSpec, compression_ratio, enable_compression, pooled_length
from image_llavolta.compression.decoder import compressed_decoder_forward
from image_llavolta.compression.segments import find_segments

# Batches that stress the layout: visual tokens at different offsets, different segment counts, a
# text-only sample, back-to-back images, a short sample that is mostly padding.
LLAVA_BATCH = [
    (sequence(3, "image", 9, seed=1), 1),
    (sequence(11, "image", 2, "image", 4, seed=2), 2),
    (sequence(14, seed=3), 0),
    (sequence(2, "image", "image", 3, seed=4), 2),
]
VIDEO_BATCH = [
    (sequence(4, "video", 6, seed=5), 0, 1),
    (sequence(9, "image", 3, seed=6), 1, 0),
    (sequence(2, "video", 3, "image", 5, seed=7), 1, 1),
    (sequence(12, seed=8), 0, 0),
]


def llava_inputs(side):
    seqs = [s for s, _ in LLAVA_BATCH]
    ids, mask, positions = pad_batch(seqs, side)
    n_images = sum(n for _, n in LLAVA_BATCH)
    pv = pixels(n_images, seed=11)
    per_sample, k = [], 0
    for _, n in LLAVA_BATCH:
        per_sample.append({"pixel_values": pv[k : k + n]} if n else {})
        k += n
    return seqs, dict(input_ids=ids, attention_mask=mask, position_ids=positions, pixel_values=pv), per_sample


def video_inputs(side):
    seqs = [s for s, _, _ in VIDEO_BATCH]
    ids, mask, positions = pad_batch(seqs, side)
    pi = pixels(sum(n for _, n, _ in VIDEO_BATCH), seed=12)
    pv = pixels(sum(n for _, _, n in VIDEO_BATCH), FRAMES, seed=13)
    per_sample, ki, kv = [], 0, 0
    for _, ni, nv in VIDEO_BATCH:
        d = {}
        if ni:
            d["pixel_values"] = pi[ki : ki + ni]
        if nv:
            d["pixel_values_videos"] = pv[kv : kv + nv]
        per_sample.append(d)
        ki, kv = ki + ni, kv + nv
    return (
        seqs,
        dict(input_ids=ids, attention_mask=mask, position_ids=positions, pixel_values=pi, pixel_values_videos=pv),
        per_sample,
    )


def valid_rows(logits_b, n, side):
    return logits_b[-n:] if side == "left" else logits_b[:n]


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("layer,stride", [(2, 4), (0, 3), (1, 32), (3, 5)])
@pytest.mark.parametrize("kind", ["llava", "video"])
@torch.no_grad()
def test_batched_forward_matches_unbatched_reference(kind, layer, stride, side):
    model = tiny_llava() if kind == "llava" else tiny_video_llava()
    seqs, batch, per_sample = llava_inputs(side) if kind == "llava" else video_inputs(side)
    refs = [reference_logits(model, s, layer, stride, **p) for s, p in zip(seqs, per_sample)]
    enable_compression(model, CompressionSpec(layer, stride))
    out = model(**batch)
    assert out.logits.shape[1] == max(r.shape[0] for r in refs)
    for b, ref in enumerate(refs):
        torch.testing.assert_close(valid_rows(out.logits[b], ref.shape[0], side), ref, atol=2e-5, rtol=1e-4)


@torch.no_grad()
def test_video_frames_pooled_independently():
    model = enable_compression(tiny_video_llava(), CompressionSpec(1, 4))
    ids = torch.tensor([sequence(3, "video", 2)])
    out = model(input_ids=ids, pixel_values_videos=pixels(1, FRAMES))
    # 17 tokens per frame → 5 windows per frame; pooling across frames would give ceil(136/4) = 34
    assert out.compression.tokens_in == 136 and out.compression.tokens_out == FRAMES * pooled_length(17, 4) == 40
    assert out.logits.shape[1] == 3 + 40 + 2
    assert out.compression.ratio == pytest.approx(compression_ratio(4, 1, 136, 40))


@pytest.mark.parametrize("spec", [None, CompressionSpec(4, 8), CompressionSpec(1, 1)])
@pytest.mark.parametrize("kind", ["llava", "video"])
@torch.no_grad()
def test_noop_specs_give_stock_logits(kind, spec):
    stock = tiny_llava() if kind == "llava" else tiny_video_llava()
    _, batch, _ = llava_inputs("left") if kind == "llava" else video_inputs("left")
    expected = stock(**batch).logits
    model = enable_compression(copy.deepcopy(stock), CompressionSpec(2, 4))
    enable_compression(model, spec)
    torch.testing.assert_close(model(**batch).logits, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("side", ["left", "right"])
@torch.no_grad()
def test_compressed_pass_with_stride_one_equals_stock_decoder(side):
    # Forcing the compressed pass with nothing to pool exercises its masks, positions and re-padding plumbing.
    model = tiny_video_llava()
    _, batch, _ = video_inputs(side)
    stock = model.model(**batch).last_hidden_state
    embeds = model.model.get_input_embeddings()(batch["input_ids"])
    layout = find_segments(batch["input_ids"], {91: 17, IMAGE: 16})
    out, plan = compressed_decoder_forward(
        model.model.language_model,
        embeds,
        layout,
        CompressionSpec(2, 1),
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
    )
    valid = batch["attention_mask"].bool()
    # inputs differ (no visual features scattered in) so compare against a stock decoder on the same embeds
    stock = model.model.language_model(
        inputs_embeds=embeds, attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
    ).last_hidden_state
    assert plan.length == batch["input_ids"].shape[1]
    torch.testing.assert_close(out.last_hidden_state[valid], stock[valid], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_sdpa_and_eager_agree():
    _, batch, _ = video_inputs("left")
    outs = {}
    for attn in ("sdpa", "eager"):
        model = enable_compression(tiny_video_llava(attn=attn), CompressionSpec(2, 3))
        outs[attn] = model(**batch)
    valid = outs["sdpa"].attention_mask.bool()  # fully masked padding rows are undefined in both
    assert (~valid).any() and valid.sum() > 100
    torch.testing.assert_close(outs["sdpa"].logits[valid], outs["eager"].logits[valid], atol=1e-5, rtol=1e-5)


def test_loss_is_text_only_and_aligned():
    model = enable_compression(tiny_llava(), CompressionSpec(1, 4))
    seqs, batch, per_sample = llava_inputs("right")
    labels = torch.where(batch["input_ids"] == IMAGE, -100, batch["input_ids"])
    labels[batch["attention_mask"] == 0] = -100
    loss = model(**batch, labels=labels).loss
    # Independent: per-sample reference logits; targets = the next text token of the original sequence.
    total, count = 0.0, 0
    enable_compression(model, None)
    for s, p in zip(seqs, per_sample):
        ref = reference_logits(model, s, 1, 4, **p)
        kept = []  # original index of the last token of each compressed position
        i = 0
        while i < len(s):
            if s[i] != IMAGE:
                kept.append(i)
                i += 1
                continue
            for w in range(i, i + 16, 4):
                kept.append(w + 3)
            i += 16
        for row, last in enumerate(kept):
            if last + 1 < len(s) and s[last + 1] != IMAGE:
                total += F.cross_entropy(ref[row], torch.tensor(s[last + 1]), reduction="sum")
                count += 1
    torch.testing.assert_close(loss, total / count, atol=1e-5, rtol=1e-5)


def _grads(model, batch, labels):
    model.zero_grad()
    model(**batch, labels=labels).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_same_gradients():
    _, batch, _ = video_inputs("left")
    labels = batch["input_ids"].masked_fill(batch["input_ids"] >= 90, -100)
    model = enable_compression(tiny_video_llava(), CompressionSpec(2, 4)).train()
    plain = _grads(model, batch, labels)
    model.gradient_checkpointing_enable()
    checkpointed = _grads(model, batch, labels)
    assert plain.keys() == checkpointed.keys() and len(plain) > 10
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)


def test_bf16_forward_and_backward():
    _, batch, _ = llava_inputs("left")
    labels = batch["input_ids"].masked_fill(batch["input_ids"] == IMAGE, -100)
    model = enable_compression(tiny_llava(), CompressionSpec(2, 4))
    with torch.no_grad():
        ref = model(**batch, labels=labels).loss
    model = model.to(torch.bfloat16).train()
    model.activation_checkpointing_enable()
    batch["pixel_values"] = batch["pixel_values"].bfloat16()
    loss = model(**batch, labels=labels).loss
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert abs(loss.item() - ref.item()) < 0.05 * ref.item()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="no compression adapter is registered for LlamaForCausalLM"):
        enable_compression(LlamaForCausalLM(tiny_llava().config.text_config), CompressionSpec(1, 2))
    with pytest.raises(ValueError, match="outside the model"):
        enable_compression(tiny_llava(), CompressionSpec(5, 2))
    model = enable_compression(tiny_video_llava(), CompressionSpec(1, 2))
    # 2 videos × 4 frames × 17 tokens announced; the token count matches but the runs hold 6 and 2 frames
    ids = torch.tensor([[5] + [91] * 6 * 17 + [6] + [91] * 2 * 17 + [7]])
    with pytest.raises(ValueError, match="do not split into videos of 4 frames × 17 tokens"):
        model(input_ids=ids, pixel_values_videos=pixels(2, 4))
    with pytest.raises(ValueError, match="pass input_ids only"):
        model(inputs_embeds=torch.zeros(1, 4, 64))


@torch.no_grad()
def test_outputs_compression_cannot_give_are_clear_errors():
    model = enable_compression(tiny_llava(), CompressionSpec(1, 2))
    _, batch, _ = llava_inputs("right")
    with pytest.raises(ValueError, match="shift_labels .* cannot be used with visual compression"):
        model(**batch, labels=batch["input_ids"], shift_labels=batch["input_ids"])
    model.config.output_hidden_states = True  # asked for in the config, not the call
    with pytest.raises(ValueError, match="output_hidden_states=True is not supported"):
        model(**batch)
    assert model(**batch, output_hidden_states=False).logits.shape[1] < batch["input_ids"].shape[1]


@torch.no_grad()
def test_stats_reported_on_stock_path_on_request():
    stock = tiny_llava()
    _, batch, _ = llava_inputs("left")
    expected = stock(**batch).logits
    model = enable_compression(stock, None)
    out = model(**batch, output_compression=True)
    stats = out.compression
    assert stats.visual_tokens_in.tolist() == [16, 32, 0, 32] == stats.visual_tokens_out.tolist()  # LLAVA_BATCH
    assert stats.ratio == 1.0
    assert torch.equal(out.logits, expected) and torch.equal(out.attention_mask, batch["attention_mask"])


def test_enable_keeps_stock_classes_and_weights():
    stock = tiny_video_llava()
    keys = set(stock.state_dict())
    model = enable_compression(stock, CompressionSpec(1, 2))
    assert isinstance(model, VideoLlavaForConditionalGeneration) and set(model.state_dict()) == keys
    assert not isinstance(tiny_llava(), VideoLlavaForConditionalGeneration)
    assert isinstance(enable_compression(tiny_llava(), None), LlavaForConditionalGeneration)


@torch.no_grad()
def test_per_call_spec_overrides_the_config():
    model = enable_compression(tiny_video_llava(), CompressionSpec(2, 4))
    ids = sequence(5, "video", 3)
    videos = pixels(1, frames=FRAMES)
    per_call = model(input_ids=torch.tensor([ids]), pixel_values_videos=videos, compression=CompressionSpec(1, 8))
    torch.testing.assert_close(
        per_call.logits[0], reference_logits(model, ids, 1, 8, pixel_values_videos=videos), atol=1e-4, rtol=1e-4
    )
    stock = model(input_ids=torch.tensor([ids]), pixel_values_videos=videos, compression=None)
    assert stock.logits.shape[1] == len(ids) and model.compression_spec == CompressionSpec(2, 4)
    with pytest.raises(ValueError, match="outside"):
        model(input_ids=torch.tensor([ids]), pixel_values_videos=videos, compression=CompressionSpec(9, 2))
