"""One query's attention over the sequence, recomputed from a decoder layer's input: no eager attention needed.

FastV-style token dropping and the redundancy probe need the attention paid by a single position (the last
prompt token, the answer position). Asking the model for `output_attentions` would force eager attention on
every layer and materialise L×L maps; recomputing one row per sample from the layer's own projections costs
one query and L keys, and leaves SDPA / FlashAttention in charge of the real pass.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch


def query_attention(
    decoder_layer,
    hidden_states: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    query_index: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, heads, L) attention probabilities of position `query_index[b]` over keys 0..query_index[b].

    `hidden_states` (B, L, D) is the input of `decoder_layer` (a Llama-style layer: `input_layernorm`,
    `self_attn.q_proj/k_proj`); `position_embeddings` the (cos, sin) the model gives that layer;
    `attention_mask` (B, L) marks real tokens (1) and padding (0). Keys after the query and padding get 0.
    """
    attn = decoder_layer.self_attn
    batch, length, _ = hidden_states.shape
    head_dim = attn.head_dim
    rows = torch.arange(batch, device=hidden_states.device)
    normed = decoder_layer.input_layernorm(hidden_states)
    query = attn.q_proj(normed[rows, query_index])[:, None]  # (B, 1, heads·hd)
    key = attn.k_proj(normed)  # (B, L, kv_heads·hd)
    query = query.view(batch, 1, -1, head_dim).transpose(1, 2)
    key = key.view(batch, length, -1, head_dim).transpose(1, 2)
    cos, sin = position_embeddings
    cos, sin = cos.expand(batch, -1, -1), sin.expand(batch, -1, -1)
    apply_rotary_pos_emb = rotary_function(attn)
    query, _ = apply_rotary_pos_emb(query, query, cos[rows, query_index][:, None], sin[rows, query_index][:, None])
    _, key = apply_rotary_pos_emb(key, key, cos, sin)
    key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)  # grouped-query heads share keys
    logits = (query.float() @ key.float().transpose(-1, -2))[:, :, 0] * attn.scaling  # (B, heads, L)
    allowed = torch.arange(length, device=hidden_states.device)[None] <= query_index[:, None]
    if attention_mask is not None:
        allowed = allowed & attention_mask.bool()
    logits = logits.masked_fill(~allowed[:, None], float("-inf"))
    return logits.softmax(-1)


def rotary_function(attention) -> Callable:
    """The RoPE function of an attention module's own model file (transformers defines one in each)."""
    fn = getattr(sys.modules.get(type(attention).__module__), "apply_rotary_pos_emb", None)
    if fn is None:
        raise ValueError(
            f"{type(attention).__name__}'s module defines no apply_rotary_pos_emb: one query's attention "
            "cannot be recomputed for this decoder"
        )
    return fn
