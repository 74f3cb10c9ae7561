"""CompressedCache: the compressed prefill's state lives in the cache, and generation's cache operations keep it.

Each operation is checked against an independent expectation: a fresh prefill of the rows it should leave
(batch selection, repetition, beam reordering), or the logits the prefill itself gave (a crop into its text).
"""

import pytest
import torch
from test_compressed_forward import llava_inputs
from tiny_models import pad_batch, tiny_llava
from transformers.cache_utils import DynamicCache

from image_llavolta.compression import CompressedCache, CompressionSpec, enable_compression

SPEC = CompressionSpec(2, 4)
TOKEN = 7  # a text token fed as the next step


def model():
    return enable_compression(tiny_llava(), SPEC)


def prefill(m, rows):
    """A compressed prefill of the LLaVA test batch's `rows` (left-padded), and its padding mask."""
    seqs, _, per_sample = llava_inputs("left")
    ids, mask, positions = pad_batch([seqs[r] for r in rows], "left")
    images = [per_sample[r]["pixel_values"] for r in rows if "pixel_values" in per_sample[r]]
    visual = {"pixel_values": torch.cat(images)} if images else {}
    out = m(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **visual)
    return out, mask


def step(m, cache, mask):
    """One decode step of TOKEN for every row: its last logits, with generate's positions (from the mask)."""
    mask = torch.cat([mask, torch.ones(mask.shape[0], 1, dtype=torch.long)], 1)
    position = mask.sum(1, keepdim=True) - 1
    out = m(
        input_ids=torch.full((mask.shape[0], 1), TOKEN),
        attention_mask=mask,
        position_ids=position,
        past_key_values=cache,
        use_cache=True,
    )
    return out.logits[:, -1], mask


@torch.no_grad()
def test_a_compressed_prefill_returns_a_cache_that_owns_its_state():
    m = model()
    out, mask = prefill(m, [0, 1, 2, 3])
    cache = out.past_key_values
    assert isinstance(cache, CompressedCache) and cache.prefill.layer == SPEC.layer
    assert cache.prefill.full_length == mask.shape[1] and torch.equal(cache.prefill.attention_mask, out.attention_mask)
    assert cache.decoded == 0 and cache.full_seen == mask.shape[1]
    given = DynamicCache()  # generate() hands over an empty DynamicCache: the filled CompressedCache replaces it
    again = m(input_ids=torch.tensor([[5, 6, 7]]), past_key_values=given, use_cache=True).past_key_values
    assert type(given) is DynamicCache and given.get_seq_length() == 0 and isinstance(again, CompressedCache)


@pytest.mark.parametrize(
    "operation,rows",
    [
        ("batch_select_indices", [2, 0]),
        ("reorder_cache", [3, 3, 1, 0]),
        ("batch_repeat_interleave", [0, 0, 1, 1, 2, 2, 3, 3]),
    ],
)
@torch.no_grad()
def test_batch_operations_equal_a_fresh_prefill_of_the_rows_they_leave(operation, rows):
    m = model()
    out, mask = prefill(m, [0, 1, 2, 3])
    cache = out.past_key_values
    argument = 2 if operation == "batch_repeat_interleave" else torch.tensor(rows)
    getattr(cache, operation)(argument)
    logits, _ = step(m, cache, mask[rows])
    fresh, fresh_mask = prefill(m, rows)
    expected, _ = step(m, fresh.past_key_values, fresh_mask)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_crops_of_decoded_tokens_and_of_the_prefills_trailing_text():
    m = model()
    out, mask = prefill(m, [0, 1, 2, 3])
    cache = out.past_key_values
    first, grown = step(m, cache, mask)
    second, _ = step(m, cache, grown)
    cache.crop(-1)  # back to one decoded token: the next step sees what the second one saw
    torch.testing.assert_close(step(m, cache, grown)[0], second, atol=1e-4, rtol=1e-4)
    cache.crop(-2)  # back to the bare prefill
    assert cache.decoded == 0
    torch.testing.assert_close(step(m, cache, mask)[0], first, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(first, second, atol=1e-3)  # the steps differ, so the comparisons mean something

    # Every row ends with at least 2 text tokens: cropping them and feeding them again gives the prefill's logits.
    fresh, mask = prefill(m, [0, 1, 2, 3])
    cache = fresh.past_key_values
    last_two = llava_inputs("left")[1]["input_ids"][:, -2:]
    cache.crop(-2)
    assert cache.prefill.full_length == mask.shape[1] - 2
    again = m(
        input_ids=last_two,
        attention_mask=mask,
        position_ids=mask.sum(1, keepdim=True) - 2 + torch.arange(2),
        past_key_values=cache,
        use_cache=True,
    )
    torch.testing.assert_close(again.logits[:, -1], fresh.logits[:, -1], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="past its last .* text tokens into pooled visual tokens"):
        cache.crop(-(cache.decoded + int(cache.prefill.text_tail.min()) + 1))


@pytest.mark.parametrize(
    "kwargs",
    [dict(num_beams=3), dict(num_beams=3, num_return_sequences=2), dict(do_sample=True, num_return_sequences=2)],
)
@torch.no_grad()
def test_beam_search_and_returned_sequences_with_the_cache_equal_recomputing(kwargs):
    m = model()
    _, batch, _ = llava_inputs("left")
    batch.pop("position_ids")
    kw = dict(max_new_tokens=5, min_new_tokens=5, pad_token_id=0, **kwargs)
    torch.manual_seed(0)
    cached = m.generate(**batch, **kw)
    torch.manual_seed(0)
    recomputed = m.generate(**batch, use_cache=False, **kw)
    assert cached.shape[0] == batch["input_ids"].shape[0] * kwargs.get("num_return_sequences", 1)
    assert torch.equal(cached, recomputed)
