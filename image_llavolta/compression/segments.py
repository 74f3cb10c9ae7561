"""Where the visual segments are: one image, or one video frame, found from token ids and segment lengths."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch


@dataclass
class VisualLayout:
    """Per-token segment membership of a batch of token ids."""

    is_visual: torch.Tensor  # (B, L) bool: the token is a visual placeholder
    offset: torch.Tensor  # (B, L) long: position of the token inside its segment (0 for text)

    @property
    def num_visual(self) -> int:
        """Visual tokens in the batch."""
        return int(self.is_visual.sum())


def find_segments(input_ids: torch.Tensor, segment_lengths: Mapping[int, int]) -> VisualLayout:
    """Split each run of a visual token id into consecutive segments of `segment_lengths[token_id]` tokens.

    A run is a maximal stretch of one placeholder id; several images (or frames) placed back to back form
    one run, which is why the segment length comes from the input shapes and not from the run itself.
    """
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
    batch, length = input_ids.shape
    seg_len = torch.zeros_like(input_ids)
    for token_id, n in segment_lengths.items():
        if n < 1:
            raise ValueError(f"segment length for token id {token_id} must be >= 1, got {n}")
        seg_len = torch.where(input_ids == token_id, n, seg_len)
    is_visual = seg_len > 0

    pos = torch.arange(length, device=input_ids.device).expand(batch, length)
    same_as_prev = torch.zeros_like(is_visual)
    same_as_prev[:, 1:] = input_ids[:, 1:] == input_ids[:, :-1]
    run_start = is_visual & ~same_as_prev
    start_pos = torch.where(run_start, pos, 0).cummax(dim=1).values
    in_run = pos - start_pos  # index inside the run (meaningful on visual tokens)
    offset = torch.where(is_visual, in_run % seg_len.clamp(min=1), 0)

    run_end = is_visual.clone()
    run_end[:, :-1] &= ~same_as_prev[:, 1:]
    bad = run_end & ((in_run + 1) % seg_len.clamp(min=1) != 0)
    if bad.any():
        b, i = (int(v) for v in bad.nonzero()[0])
        run, n, tok = int(in_run[b, i]) + 1, int(seg_len[b, i]), int(input_ids[b, i])
        raise ValueError(
            f"sample {b}: a run of {run} visual tokens (id {tok}) ending at position {i} does not split into "
            f"segments of {n} tokens (one image or one video frame each); the number of placeholder tokens "
            f"does not match the visual inputs"
        )
    return VisualLayout(is_visual=is_visual, offset=offset)
