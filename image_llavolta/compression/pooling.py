"""How tokens are pooled: the slot map from a full sequence to its compressed one, and averaging each slot."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .segments import VisualLayout

IGNORE_INDEX = -100


@dataclass
class CompressionPlan:
    """Where each token of a padded batch lands after pooling.

    Every text token keeps a slot of its own; the visual tokens of one segment fill ceil(n/S) slots, S consecutive
    tokens each for average pooling (the last window may be shorter), or as a method assigns them. Padding is dropped
    and the compressed samples are re-padded on the batch's padding side, so the batch stays rectangular.
    """

    slot: torch.Tensor  # (B, L) long: output slot of each input token; padding goes to the dump slot `length`
    length: int  # compressed sequence length (Lc)
    counts: torch.Tensor  # (B, Lc) long: input tokens averaged into each slot (0 = padding)
    position_ids: torch.Tensor  # (B, Lc) or (A, B, Lc) long: RoPE positions, per axis the floor of the window's mean
    visual_in: torch.Tensor  # (B,) visual tokens before pooling
    visual_out: torch.Tensor  # (B,) visual tokens after pooling
    text_tail: torch.Tensor  # (B,) text tokens after the last pooled slot (a KV cache may be cropped that far)

    @property
    def attention_mask(self) -> torch.Tensor:
        """(B, Lc) padding mask of the compressed batch (1 = real token)."""
        return (self.counts > 0).long()


def padding_side(attention_mask: torch.Tensor) -> str | None:
    """'left', 'right', or None (no padding) for a 2D mask; raise on masks with holes."""
    valid = attention_mask.bool()
    if bool(valid.all()):
        return None
    if bool((valid[:, 1:] >= valid[:, :-1]).all()):
        return "left"
    if bool((valid[:, 1:] <= valid[:, :-1]).all()):
        return "right"
    raise ValueError(
        "attention_mask has padding in the middle of a sequence; visual compression needs every sample "
        "to be left- or right-padded (packed sequences are not supported)"
    )


def plan_compression(
    layout: VisualLayout,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor,
    stride: int,
    local_slot: torch.Tensor | None = None,
) -> CompressionPlan:
    """Build the slot map for reducing every segment of `layout` to ceil(n/S) slots.

    By default slot j of a segment averages its tokens j·S .. j·S+S−1 (average pooling). `local_slot` (B, L)
    gives each visual token another slot index in 0..ceil(n/S)−1 within its segment, or −1 to drop it; every
    slot must receive at least one token (see `methods`). `position_ids` are (B, L) or, for multi-axis RoPE
    (M-RoPE's temporal, height and width axes), (A, B, L): a slot takes on each axis the floor of the mean of
    its tokens' positions, so a text token keeps its own.
    """
    is_visual, offset = layout.is_visual, layout.offset
    batch, length = is_visual.shape
    device = is_visual.device
    valid = torch.ones_like(is_visual) if attention_mask is None else attention_mask.bool()
    masked_visual = is_visual & ~valid
    if masked_visual.any():
        b, i = (int(v) for v in masked_visual.nonzero()[0])
        raise ValueError(f"sample {b}: attention_mask masks the visual placeholder token at position {i}")
    # Samples of equal length with different visual counts end with different lengths: re-pad them, on the
    # left unless the batch was right-padded (left keeps the last position real, as generation needs).
    side = padding_side(attention_mask) if attention_mask is not None else None

    opens_slot = valid & (~is_visual | (offset % stride == 0))
    slot = opens_slot.long().cumsum(1) - 1
    kept = opens_slot.sum(1)
    new_length = int(kept.max()) if batch else 0
    if side != "right":
        slot = slot + (new_length - kept)[:, None]
    if local_slot is not None:  # the segment's first slot, plus the method's slot within the segment
        first = slot - torch.div(layout.offset, stride, rounding_mode="floor")
        slot = torch.where(is_visual, torch.where(local_slot >= 0, first + local_slot, new_length), slot)
    slot = torch.where(valid, slot, new_length)  # padding and dropped tokens → dump slot, sliced off below

    def scatter(values: torch.Tensor, reduce: str) -> torch.Tensor:
        out = torch.zeros(batch, new_length + 1, dtype=values.dtype, device=device)
        return out.scatter_reduce(1, slot, values, reduce=reduce, include_self=False)[:, :new_length]

    counts = scatter(torch.ones_like(slot), "sum")
    if local_slot is not None and bool(((counts > 0).sum(1) != kept).any()):
        raise ValueError("a compression method left a visual slot empty; every slot needs at least one token")
    axes = position_ids if position_ids.ndim == 3 else position_ids[None]  # (A, B, L)
    position_sum = torch.stack([scatter(p.long(), "sum") for p in axes.expand(-1, batch, length)])  # (A, B, Lc)
    position_ids_out = torch.div(position_sum, counts.clamp(min=1), rounding_mode="floor")
    if position_ids.ndim != 3:
        position_ids_out = position_ids_out[0]  # (B, Lc)
    text_slot = (counts > 0) & (scatter(is_visual.long(), "amax") == 0)
    text_tail = text_slot.flip(1).long().cumprod(1).sum(1)  # run of text slots at the end of each row
    return CompressionPlan(
        slot=slot,
        length=new_length,
        counts=counts,
        position_ids=position_ids_out,
        visual_in=(is_visual & valid).sum(1),
        visual_out=(is_visual & opens_slot).sum(1),
        text_tail=text_tail,
    )


def average_pool(hidden_states: torch.Tensor, plan: CompressionPlan) -> torch.Tensor:
    """Average the hidden states of each slot (in fp32, so bf16 windows are summed without loss)."""
    batch, _, dim = hidden_states.shape
    summed = torch.zeros(batch, plan.length + 1, dim, dtype=torch.float32, device=hidden_states.device)
    summed.scatter_add_(1, plan.slot[..., None].expand(-1, -1, dim), hidden_states.float())
    pooled = summed[:, : plan.length] / plan.counts.clamp(min=1)[..., None]
    return pooled.to(hidden_states.dtype)


def compressed_targets(labels: torch.Tensor, is_visual: torch.Tensor, plan: CompressionPlan) -> torch.Tensor:
    """Next-token targets for the compressed sequence: each slot predicts the text token in the slot after it.

    Text tokens keep slots of their own, so a slot's target is the label of the next slot's token when that
    token is text; a next slot that is visual (or padding, or absent) gives no target: the loss is on text only.
    """
    batch, length = labels.shape
    is_text = ~is_visual & (plan.slot < plan.length)
    slot_labels = torch.full((batch, plan.length + 1), IGNORE_INDEX, dtype=labels.dtype, device=labels.device)
    slot_labels.scatter_(1, torch.where(is_text, plan.slot, plan.length), torch.where(is_text, labels, IGNORE_INDEX))
    targets = torch.full_like(slot_labels[:, : plan.length], IGNORE_INDEX)
    targets[:, :-1] = slot_labels[:, 1 : plan.length]
    return targets
