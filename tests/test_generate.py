"""generate() with a KV cache on a compressed model: pooled once at prefill, same logits as recomputing."""

import pytest
import torch
from test_compressed_forward import llava_inputs, video_inputs
from tiny_models import tiny_llava, tiny_video_llava

from image_llavolta.compression import CompressionSpec, enable_compression

STEPS = 5


@pytest.mark.parametrize("kind,layer,stride", [("video", 2, 4), ("llava", 1, 3), ("video", 0, 8)])
@torch.no_grad()
def test_cached_decoding_matches_recompute(kind, layer, stride):
    model = tiny_llava() if kind == "llava" else tiny_video_llava()
    enable_compression(model, CompressionSpec(layer, stride))
    _, batch, _ = llava_inputs("left") if kind == "llava" else video_inputs("left")
    batch.pop("position_ids")  # generate derives them from the mask
    out = model.generate(
        **batch,
        max_new_tokens=STEPS,
        min_new_tokens=STEPS,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=0,
    )
    assert len(out.logits) == STEPS
    pixels = {k: v for k, v in batch.items() if k.startswith("pixel")}
    rows, prompt = batch["input_ids"].shape
    for t, step_logits in enumerate(out.logits):
        mask = torch.cat([batch["attention_mask"], torch.ones(rows, t, dtype=torch.long)], dim=1)
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        full = model(
            input_ids=out.sequences[:, : prompt + t],
            attention_mask=mask,
            position_ids=positions,
            use_cache=False,
            **pixels,
        )
        torch.testing.assert_close(step_logits, full.logits[:, -1], atol=1e-4, rtol=1e-4)
        assert full.compression.tokens_out < full.compression.tokens_in


@torch.no_grad()
def test_cache_holds_full_layers_then_compressed_layers():
    model = enable_compression(tiny_video_llava(), CompressionSpec(2, 4))
    _, batch, _ = video_inputs("left")
    out = model(**batch, use_cache=True)
    lengths = [layer.keys.shape[-2] for layer in out.past_key_values.layers]
    short = out.logits.shape[1]
    assert lengths == [batch["input_ids"].shape[1]] * 2 + [short] * 2 and short < lengths[0]
    step = model(
        input_ids=torch.full((4, 1), 7),
        attention_mask=torch.cat([batch["attention_mask"], torch.ones(4, 1, dtype=torch.long)], 1),
        past_key_values=out.past_key_values,
        use_cache=True,
    )
    assert step.compression.tokens_in == 0  # nothing is pooled again when decoding
    assert [layer.keys.shape[-2] for layer in step.past_key_values.layers] == [n + 1 for n in lengths]


@torch.no_grad()
def test_noop_generate_equals_stock_generate():
    stock = tiny_llava()
    _, batch, _ = llava_inputs("left")
    batch.pop("position_ids")
    kw = dict(max_new_tokens=STEPS, do_sample=False, pad_token_id=0)
    expected = stock.generate(**batch, **kw)
    model = enable_compression(stock, CompressionSpec(4, 2))
    assert torch.equal(model.generate(**batch, **kw), expected)


@torch.no_grad()
def test_assisted_decoding_crops_the_cache_correctly():
    # Prompt-lookup decoding crops the KV cache right after the prefill; it must still equal greedy decoding.
    model = enable_compression(tiny_video_llava(), CompressionSpec(2, 4))
    _, batch, _ = video_inputs("left")
    ids = batch["input_ids"][:1]
    ids = torch.cat([ids, ids[:, -4:], ids[:, -4:]], dim=1)  # repeated n-grams: lookup proposes, then rejects
    single = {"input_ids": ids, "pixel_values_videos": batch["pixel_values_videos"][:1]}
    kw = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0)
    greedy = model.generate(**single, **kw)
    assert torch.equal(model.generate(**single, prompt_lookup_num_tokens=3, **kw), greedy)


@pytest.mark.parametrize("layer", [1, 2])
@torch.no_grad()
def test_generate_continues_from_a_returned_cache(layer):
    # As with the stock class, the second call passes the ids and mask only: the cache holds the pixels' tokens.
    model = enable_compression(tiny_video_llava(), CompressionSpec(layer, 4))
    _, batch, _ = video_inputs("left")
    batch.pop("position_ids")
    kw = dict(do_sample=False, pad_token_id=0, eos_token_id=None)  # a row ending early is padded in one run only
    straight = model.generate(**batch, max_new_tokens=4, **kw)
    first = model.generate(**batch, max_new_tokens=2, return_dict_in_generate=True, **kw)
    mask = torch.cat([batch["attention_mask"], torch.ones(4, 2, dtype=torch.long)], 1)
    continued = model.generate(
        input_ids=first.sequences, attention_mask=mask, past_key_values=first.past_key_values, max_new_tokens=2, **kw
    )
    assert torch.equal(continued, straight)


@torch.no_grad()
def test_pixels_given_to_a_compressed_cache_and_layer0_continuation_are_clear_errors():
    model = enable_compression(tiny_llava(), CompressionSpec(0, 4))
    _, batch, _ = llava_inputs("left")
    out = model(**batch, use_cache=True)
    with pytest.raises(ValueError, match="given with a compressed KV cache, which already holds the prompt's visual"):
        model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"], past_key_values=out.past_key_values)
    batch.pop("position_ids")
    first = model.generate(**batch, max_new_tokens=2, do_sample=False, pad_token_id=0, return_dict_in_generate=True)
    mask = torch.cat([batch["attention_mask"], torch.ones(4, 2, dtype=torch.long)], 1)
    with pytest.raises(ValueError, match="continuing generate\\(\\) from a returned cache needs layer >= 1"):
        model.generate(
            input_ids=first.sequences,
            attention_mask=mask,
            past_key_values=first.past_key_values,
            max_new_tokens=2,
            do_sample=False,
            pad_token_id=0,
        )


@torch.no_grad()
def test_return_dict_false_gives_a_tuple():
    model = enable_compression(tiny_llava(), CompressionSpec(1, 4))
    _, batch, _ = llava_inputs("left")
    out = model(**batch, return_dict=False)
    assert isinstance(out, tuple) and torch.equal(out[0], model(**batch).logits)
