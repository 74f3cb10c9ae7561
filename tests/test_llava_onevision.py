"""The LLaVA-OneVision adapter against stock transformers and an independent reference (tiny_onevision)."""

import copy
import inspect

import pytest
import torch
import torch.nn.functional as F
from test_methods import groups_for
from tiny_onevision import BASE, FRAME, IMAGE, VIDEO, Sample, make_pixels, mixed_batch, reference_logits, tiny_onevision

from image_llavolta.compression import CompressionSpec, enable_compression, pooled_length
from video_llavolta.models.llava_onevision import LlavaOnevisionLlavoltaForConditionalGeneration


def valid_rows(logits_b, n, side):
    return logits_b[-n:] if side == "left" else logits_b[:n]


def test_reference_layout_matches_hand_counts():
    # Checks the reference's own layout: a 28×28 image is one tile, so no unpadding: 7 rows of 7 tokens + newline.
    model = tiny_onevision()
    square = Sample(model, ("image", (28, 28))).keys
    assert len(square) == BASE + 7 * 8 and square[:BASE] == [(1, 0)] * BASE
    assert [k for k in square[BASE:] if k == -1] == [-1] * 7 and square[BASE + 7] == -1
    video = Sample(model, ("video", 3)).keys
    assert len(video) == 3 * FRAME + 1 and video[-1] == -1


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("layer,stride", [(2, 4), (0, 3), (1, 64), (3, 5)])
@torch.no_grad()
def test_batched_forward_matches_unbatched_reference(layer, stride, side):
    model = tiny_onevision()
    samples, batch, per_sample = mixed_batch(model, side)
    refs = [reference_logits(model, s, layer, stride, **p) for s, p in zip(samples, per_sample)]
    enable_compression(model, CompressionSpec(layer, stride))
    out = model(**batch)
    assert out.logits.shape[1] == max(r.shape[0] for r in refs)
    for b, ref in enumerate(refs):
        torch.testing.assert_close(valid_rows(out.logits[b], ref.shape[0], side), ref, atol=2e-5, rtol=1e-4)


@torch.no_grad()
def test_newlines_keep_their_places_and_windows_stay_in_segments():
    model = enable_compression(tiny_onevision(), CompressionSpec(1, 4))
    # a 28×28 image: base 49 tokens → 13 windows; 7 rows of 7 → 2 windows each, the 7 newlines kept
    ids = torch.tensor([[5] * 2 + [IMAGE] * (BASE + 7 * 8) + [6] * 3])
    pixels = make_pixels(model, [Sample(model, ("image", (28, 28)))])
    out = model(input_ids=ids, **pixels)
    assert out.compression.tokens_in == BASE + 49
    assert out.compression.tokens_out == pooled_length(BASE, 4) + 7 * pooled_length(7, 4) == 13 + 14
    assert out.logits.shape[1] == 2 + 13 + 7 * (2 + 1) + 3
    # two videos of 3 frames: 16 tokens per frame → 4 windows per frame, each video's newline kept
    ids = torch.tensor([[5] + [VIDEO] * 2 * (3 * FRAME + 1) + [6]])
    video = model(input_ids=ids, pixel_values_videos=torch.randn(2, 3, 3, 28, 28))
    assert video.compression.tokens_in == 6 * FRAME and video.compression.tokens_out == 6 * 4
    assert video.logits.shape[1] == 1 + 2 * (3 * 4 + 1) + 1
    # the stock path's accounting counts the same visual tokens (the newlines are not)
    stock = model(
        input_ids=ids, pixel_values_videos=torch.randn(2, 3, 3, 28, 28), compression=None, output_compression=True
    )
    assert stock.compression.tokens_in == stock.compression.tokens_out == 6 * FRAME


@torch.no_grad()
def test_frames_counts_differ_between_calls():
    model = tiny_onevision()
    for frames in (2, 5):
        sample = Sample(model, 3, ("video", frames), 4, seed=frames)
        pixels = make_pixels(model, [sample], seed=frames)
        ref = reference_logits(model, sample, 2, 3, **pixels)
        enable_compression(model, CompressionSpec(2, 3))
        out = model(input_ids=torch.tensor([sample.ids]), **pixels)
        enable_compression(model, None)
        assert out.compression.tokens_out == frames * pooled_length(FRAME, 3)
        torch.testing.assert_close(out.logits[0], ref, atol=2e-5, rtol=1e-4)


@torch.no_grad()
def test_resized_mosaic_rows_follow_the_model():
    # anyres_max_1: a 2×2 mosaic (14×14) exceeds one tile's area by 4×, so the model resizes it to 7×7 first
    model = tiny_onevision(aspect_ratio="anyres_max_1")
    sample = Sample(model, 2, ("image", (40, 40)), 3, seed=9)
    assert len(sample.ids) == 2 + BASE + 7 * 8 + 3
    pixels = make_pixels(model, [sample])
    ref = reference_logits(model, sample, 1, 3, **pixels)
    out = enable_compression(model, CompressionSpec(1, 3))(input_ids=torch.tensor([sample.ids]), **pixels)
    torch.testing.assert_close(out.logits[0], ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("spec", [None, CompressionSpec(4, 8), CompressionSpec(1, 1)], ids=str)
@torch.no_grad()
def test_noop_specs_give_stock_outputs(spec):
    stock = tiny_onevision()
    _, batch, _ = mixed_batch(stock, "left")
    expected = stock(**batch, labels=batch["input_ids"])
    model = enable_compression(copy.deepcopy(stock), CompressionSpec(2, 4))
    enable_compression(model, spec)
    got = model(**batch, labels=batch["input_ids"])
    assert type(got) is type(expected) and list(got.keys()) == list(expected.keys())
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-6, rtol=0)


@torch.no_grad()
def test_sdpa_and_eager_agree():
    outs = {}
    for attn in ("sdpa", "eager"):
        model = enable_compression(tiny_onevision(attn=attn), CompressionSpec(2, 3))
        _, batch, _ = mixed_batch(model, "left")
        outs[attn] = model(**batch)
    valid = outs["sdpa"].attention_mask.bool()
    assert (~valid).any() and valid.sum() > 100
    torch.testing.assert_close(outs["sdpa"].logits[valid], outs["eager"].logits[valid], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["random", "kmeans", "fastv"])
@torch.no_grad()
def test_methods_match_loop_references(method):
    model = tiny_onevision(attn="eager")
    layer, stride = 2, 3
    samples, batch, per_sample = mixed_batch(model, "left")
    refs = []
    for s, p in zip(samples, per_sample):
        groups = groups_for(method, layer=layer, query=len(s.ids) - 1, seed=0)
        refs.append(reference_logits(model, s, layer, stride, groups=groups, attentions=method == "fastv", **p))
    enable_compression(model, CompressionSpec(layer, stride, method))
    out = model(**batch)
    for b, ref in enumerate(refs):
        torch.testing.assert_close(valid_rows(out.logits[b], ref.shape[0], "left"), ref, atol=2e-5, rtol=1e-4)


def test_loss_is_text_only():
    model = tiny_onevision()
    samples, batch, per_sample = mixed_batch(model, "right")
    ids = batch["input_ids"]
    labels = torch.where((ids == IMAGE) | (ids == VIDEO) | (batch["attention_mask"] == 0), -100, ids)
    enable_compression(model, CompressionSpec(1, 4))
    with torch.no_grad():
        loss = model(**batch, labels=labels).loss
    enable_compression(model, None)
    total, count = 0.0, 0
    for s, p in zip(samples, per_sample):
        ref = reference_logits(model, s, 1, 4, **p)
        # the last original token of each compressed position, from the same grouping as the reference
        last, i = [], 0
        while i < len(s.keys):
            if s.keys[i] is None or s.keys[i] == -1:
                last.append(i)
                i += 1
                continue
            end = i
            while end < len(s.keys) and s.keys[end] == s.keys[i]:
                end += 1
            last += [min(w + 4, end) - 1 for w in range(i, end, 4)]
            i = end
        for row, j in enumerate(last):
            if j + 1 < len(s.ids) and s.ids[j + 1] not in (IMAGE, VIDEO):
                total += F.cross_entropy(ref[row], torch.tensor(s.ids[j + 1]), reduction="sum")
                count += 1
    torch.testing.assert_close(loss, total / count, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layer,stride", [(2, 4), (1, 3)])
@torch.no_grad()
def test_cached_decoding_matches_recompute(layer, stride):
    model = enable_compression(tiny_onevision(), CompressionSpec(layer, stride))
    _, batch, _ = mixed_batch(model, "left")
    batch.pop("position_ids")
    steps = 4
    out = model.generate(
        **batch,
        max_new_tokens=steps,
        min_new_tokens=steps,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=0,
    )
    pixels = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
    rows, prompt = batch["input_ids"].shape
    for t, step_logits in enumerate(out.logits):
        mask = torch.cat([batch["attention_mask"], torch.ones(rows, t, dtype=torch.long)], dim=1)
        full = model(
            input_ids=out.sequences[:, : prompt + t],
            attention_mask=mask,
            position_ids=(mask.cumsum(1) - 1).clamp(min=0),
            use_cache=False,
            **pixels,
        )
        torch.testing.assert_close(step_logits, full.logits[:, -1], atol=1e-4, rtol=1e-4)


def test_spec_saved_and_restored(tmp_path):
    model = enable_compression(tiny_onevision(), CompressionSpec(2, 4, "kmeans"))
    model.save_pretrained(tmp_path)
    loaded = LlavaOnevisionLlavoltaForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert loaded.compression_spec == CompressionSpec(2, 4, "kmeans")
    _, batch, _ = mixed_batch(model, "left")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, atol=0, rtol=0)


def _grads(model, batch, labels):
    model.zero_grad()
    model(**batch, labels=labels).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_and_bf16():
    model = enable_compression(tiny_onevision(), CompressionSpec(2, 4)).train()
    _, batch, _ = mixed_batch(model, "left")
    labels = batch["input_ids"].masked_fill(batch["input_ids"] >= IMAGE, -100)
    plain = _grads(model, batch, labels)
    model.gradient_checkpointing_enable()
    checkpointed = _grads(model, batch, labels)
    assert plain.keys() == checkpointed.keys() and "model.image_newline" in plain
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)
    with torch.no_grad():
        ref = model.eval()(**batch, labels=labels).loss
    model = model.to(torch.bfloat16).train()
    for key in ("pixel_values", "pixel_values_videos"):
        batch[key] = batch[key].bfloat16()
    loss = model(**batch, labels=labels).loss
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert abs(loss.item() - ref.item()) < 0.05 * ref.item()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@torch.no_grad()
def test_bad_inputs_are_clear_errors():
    model = enable_compression(tiny_onevision(), CompressionSpec(1, 2))
    samples, batch, _ = mixed_batch(model, "left")
    ids = batch["input_ids"].clone()
    row = ids[3]  # the multi-image sample: drop one of its image placeholders (a text token takes its place)
    row[(row == IMAGE).nonzero()[5]] = 7
    with pytest.raises(ValueError, match="sample 3: 99 image placeholder tokens do not hold whole images"):
        model(**{**batch, "input_ids": ids})
    ids = batch["input_ids"].clone()
    ids[1, (ids[1] == VIDEO).nonzero()[0]] = 7
    with pytest.raises(ValueError, match="sample 1: 97 video placeholder tokens do not hold whole videos"):
        model(**{**batch, "input_ids": ids})
    with pytest.raises(ValueError, match="40 tokens do not split into whole frames of 16 tokens"):
        model.embed_multimodal(batch["input_ids"], {"mm_encoder_outputs": {"video": _Out(torch.randn(1, 40, 64))}})
    with pytest.raises(ValueError, match="outside the model"):
        enable_compression(tiny_onevision(), CompressionSpec(5, 2))


class _Out:
    def __init__(self, pooler_output):
        self.pooler_output = pooler_output


def test_forward_signature_is_the_stock_one_plus_the_compression_arguments():
    from transformers import LlavaOnevisionForConditionalGeneration

    ours = inspect.signature(LlavaOnevisionLlavoltaForConditionalGeneration.forward).parameters
    stock = inspect.signature(LlavaOnevisionForConditionalGeneration.forward).parameters
    assert [ours[name] for name in stock] == list(stock.values())
    assert [name for name in ours if name not in stock] == ["compression", "output_compression"]


@pytest.mark.parametrize("cache", [None, "static"])
@torch.no_grad()
def test_uncompressed_generate_equals_stock(cache):
    stock = tiny_onevision()
    _, batch, _ = mixed_batch(stock, "left")
    batch.pop("position_ids")
    kw = dict(max_new_tokens=3, do_sample=False, pad_token_id=0, cache_implementation=cache)
    expected = stock.generate(**batch, **kw)
    ours = enable_compression(copy.deepcopy(stock), CompressionSpec(4, 2))
    assert torch.equal(ours.generate(**batch, **kw), expected)
    assert isinstance(ours(**batch, return_dict=False), tuple)
