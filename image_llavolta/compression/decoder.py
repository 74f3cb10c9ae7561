"""The compressed decoder pass: layers 1..K on the full sequence, pooling, layers K+1..N on the short one.

It drives a transformers decoder (`LlamaModel` and alike) through its own modules — embedding, rotary
embedding, decoder layers, final norm and `create_causal_mask` — and changes only the sequence between
layer K and K+1. Attention implementations, gradient checkpointing and the KV cache stay transformers'.
"""

from __future__ import annotations

import torch
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast

from .cache import CompressedCache
from .methods import fastv_query_index, slot_assignment
from .pooling import CompressionPlan, average_pool, plan_compression
from .scores import query_attention
from .segments import VisualLayout
from .spec import CompressionSpec


def check_decoder(text_model) -> None:
    """Raise ValueError if `text_model` is not a decoder the compressed pass can drive."""
    missing = [a for a in ("embed_tokens", "layers", "rotary_emb", "norm") if not hasattr(text_model, a)]
    if missing:
        raise ValueError(
            f"{type(text_model).__name__} has no {missing}: visual compression drives Llama-style decoders "
            "(embed_tokens, layers, rotary_emb, norm)"
        )
    layer_types = getattr(text_model.config, "layer_types", None) or []
    if any(t != "full_attention" for t in layer_types):
        raise ValueError(f"{type(text_model).__name__} has non-full-attention layers {set(layer_types)}; unsupported")


def _run_layer_group(
    text_model,
    layers,
    hidden,
    attention_mask,
    rope_positions,
    mask_positions,
    cache,
    use_cache,
    layer_idx,
    kwargs,
    score_query=None,
):
    """Run consecutive decoder layers that share one sequence: build their mask and RoPE, then call them.

    With `score_query` (B,) it also returns the head-averaged attention that the last layer pays from that
    position to every token (FastV's ranking), else None.
    """
    mask = create_causal_mask(
        config=text_model.config,
        inputs_embeds=hidden,
        attention_mask=attention_mask,
        past_key_values=cache,
        position_ids=mask_positions,
        layer_idx=layer_idx,
    )
    rope = text_model.rotary_emb(hidden, position_ids=rope_positions)
    scores = None
    for i, decoder_layer in enumerate(layers):
        if score_query is not None and i == len(layers) - 1:
            with torch.no_grad():
                scores = query_attention(decoder_layer, hidden, rope, score_query, attention_mask).mean(1)
        hidden = decoder_layer(
            hidden,
            attention_mask=mask,
            position_embeddings=rope,
            position_ids=mask_positions,
            past_key_values=cache,
            use_cache=use_cache,
            **kwargs,
        )
    return hidden, scores


def compressed_decoder_forward(
    text_model,
    inputs_embeds: torch.Tensor,
    layout: VisualLayout,
    spec: CompressionSpec,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    past_key_values=None,
    use_cache: bool = False,
    query_index: torch.Tensor | None = None,
    **kwargs,
) -> tuple[BaseModelOutputWithPast, CompressionPlan | None]:
    """Run `text_model` with visual tokens pooled after layer `spec.layer`; return its output and the plan.

    The plan is None on decode steps, which append text tokens to a cache filled by a compressed prefill.
    `position_ids` are (B, L) or, for multi-axis RoPE (M-RoPE), (A, B, L) as the decoder's `rotary_emb` takes
    them; pooled tokens take per axis the floor of their window's mean position (`plan_compression`).
    `query_index` (B,) is the last prompt token whose attention ranks tokens for `fastv` (default: the last
    real token of each row, which is the last prompt token when generating).
    """
    if attention_mask is not None and attention_mask.ndim != 2:
        raise ValueError(
            "visual compression needs a 2D (batch, length) attention_mask, not a prepared 4D mask "
            "(generate() prepares one for a static cache: use the default dynamic cache)"
        )
    batch, length, _ = inputs_embeds.shape
    k = spec.layer
    cache = _compressed_cache(text_model, past_key_values, use_cache)
    decoding = cache is not None and cache.prefill is not None
    if decoding and layout.num_visual:
        raise ValueError("visual tokens cannot be appended to a compressed KV cache; start a new prefill")
    if decoding and cache.prefill.layer != k:
        raise ValueError(f"the KV cache was filled with compression after layer {cache.prefill.layer}, not {k}")

    compressed_seen = cache.get_seq_length(k) if decoding else 0
    if position_ids is None:
        if decoding:
            position_ids = cache.prefill.positions(cache.full_seen, length).to(inputs_embeds.device)
        else:
            position_ids = torch.arange(length, device=inputs_embeds.device)[None]
    multi_axis = position_ids.ndim == 3  # (A, B, L): one row of positions per RoPE axis (M-RoPE)
    if decoding and multi_axis != bool(cache.prefill.rope_axes):
        raise ValueError(
            f"position_ids of shape {tuple(position_ids.shape)} after a prefill with "
            f"{cache.prefill.rope_axes or 1}-axis positions: decode steps take the prefill's kind of positions"
        )
    position_ids = position_ids.expand(-1, batch, -1) if multi_axis else position_ids.expand(batch, -1)
    # Multi-axis positions do not describe packing, which is all the mask reads positions for.
    mask_positions = None if multi_axis else position_ids

    hidden, scores = inputs_embeds, None
    if spec.method == "fastv" and not decoding and query_index is None:
        query_index = fastv_query_index(batch, length, attention_mask).to(hidden.device)
    if k > 0:  # layers 1..K: exactly the stock pass
        hidden, scores = _run_layer_group(
            text_model,
            text_model.layers[:k],
            hidden,
            attention_mask,
            position_ids,
            mask_positions,
            cache,
            use_cache,
            0,
            kwargs,
            score_query=query_index if spec.method == "fastv" and not decoding else None,
        )

    plan = None
    if decoding:
        prefill = cache.prefill
        appended = cache.decoded + length  # full-length tokens after the prefill, this step's included
        if attention_mask is not None:
            new = attention_mask[:, prefill.full_length :]
            if new.shape[1] != appended:
                hint = (
                    ""
                    if k
                    else (
                        " (continuing generate() from a returned cache needs layer >= 1: with layer=0 "
                        "every cache layer is compressed and transformers cannot tell how many prompt "
                        "tokens it holds)"
                    )
                )
                raise ValueError(
                    f"attention_mask covers {new.shape[1]} tokens after the prefill of {prefill.full_length}, "
                    f"but the KV cache and the input hold {appended}{hint}"
                )
        else:
            new = torch.ones(batch, appended, dtype=torch.long, device=hidden.device)
        short_mask = torch.cat([prefill.attention_mask.to(new.device, new.dtype), new], dim=1)
        short_positions = position_ids
    else:
        local_slot = slot_assignment(spec, layout, hidden, scores)
        plan = plan_compression(layout, attention_mask, position_ids, spec.stride, local_slot)
        hidden = average_pool(hidden, plan)
        short_mask, short_positions = plan.attention_mask, plan.position_ids
        if cache is not None:
            deltas, axes = None, 0
            if multi_axis:  # the first position after the prompt, less its full length (see `cache`)
                valid = torch.ones(batch, length, dtype=torch.bool, device=hidden.device)
                valid = valid if attention_mask is None else attention_mask.bool()
                last = torch.where(valid, position_ids.amax(0), 0).amax(1)  # (B,)
                deltas, axes = last + 1 - length, position_ids.shape[0]
            cache.record_prefill(k, length, short_mask, plan.text_tail, deltas, axes)

    # Layers K+1..N. The mask is built over contiguous indices (gaps in position ids would read as packed
    # sequences); RoPE gets the real (pooled) positions.
    contiguous = torch.arange(compressed_seen, compressed_seen + hidden.shape[1], device=hidden.device)
    hidden, _ = _run_layer_group(
        text_model,
        text_model.layers[k:],
        hidden,
        short_mask,
        short_positions,
        contiguous.expand(batch, -1),
        cache,
        use_cache,
        k,
        kwargs,
    )
    hidden = text_model.norm(hidden)
    return BaseModelOutputWithPast(last_hidden_state=hidden, past_key_values=cache), plan


def _compressed_cache(text_model, past_key_values, use_cache: bool) -> CompressedCache | None:
    """The cache this pass fills or continues: a given CompressedCache, else a new one for an empty cache."""
    if isinstance(past_key_values, CompressedCache):
        return past_key_values
    if past_key_values is not None and past_key_values.get_seq_length() > 0:
        raise ValueError("the KV cache already holds tokens that were not prefilled with visual compression")
    # generate() hands the prefill an empty DynamicCache; the filled CompressedCache returned replaces it.
    return CompressedCache(config=text_model.config) if use_cache or past_key_values is not None else None
