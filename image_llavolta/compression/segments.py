"""Where the visual segments are (one image, one video frame, one tile): from token ids and segment lengths, or
from a per-token segment index that a family with variable layouts builds itself."""

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


def layout_from_segment_index(segment_index: torch.Tensor) -> VisualLayout:
    """The layout of a (B, L) per-token segment index: -1 for tokens never pooled, else the token's segment.

    For families whose segments vary per sample (dynamic resolution, tiles, temporal patches) or whose visual
    runs hold tokens that must keep their places (newline embeddings, separators): those tokens get -1. Each
    segment must be one contiguous stretch of its row.
    """
    if segment_index.ndim != 2:
        raise ValueError(f"segment_index must be (batch, length), got shape {tuple(segment_index.shape)}")
    batch, length = segment_index.shape
    is_visual = segment_index >= 0
    starts = is_visual.clone()  # (B, L) first token of a segment
    starts[:, 1:] &= segment_index[:, 1:] != segment_index[:, :-1]
    # Segment ids in a row are distinct, so a segment split in two shows as more starts than distinct ids.
    for b in range(batch):
        ids = segment_index[b][is_visual[b]]
        if int(starts[b].sum()) != int(ids.unique().numel()):
            raise ValueError(f"sample {b}: a visual segment is split into several stretches; each must be contiguous")
    pos = torch.arange(length, device=segment_index.device).expand(batch, length)
    start_pos = torch.where(starts, pos, 0).cummax(dim=1).values
    offset = torch.where(is_visual, pos - start_pos, 0)  # (B, L) index inside the segment
    return VisualLayout(is_visual=is_visual, offset=offset)
