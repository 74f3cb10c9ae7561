"""The KV cache of a compressed prefill: layers 1..K hold the full sequence, layers K+1..N the pooled one.

`CompressedCache` is transformers' `DynamicCache` plus what decoding needs to know about that prefill: the
padding mask of its pooled layers, how many full-length tokens it had, and how many of its last slots are text.
Generation's cache operations keep that state right: `crop` (assisted decoding rolls back rejected tokens),
`reorder_cache` (beam search), `batch_repeat_interleave` and `batch_select_indices` (expanded or filtered
batches). Text tokens map one to one onto both halves of the cache, pooled visual tokens do not, so a crop may
reach back into the prefill's trailing text but never into its pooled visual tokens.

Decode positions. Text keeps its positions through pooling, so a token appended after the prefill sits where it
would after the uncompressed prompt. The cache counts full-length indices (`full_seen`), and a decode step's
default position is that index plus the prefill's `rope_deltas` (B,): zero for 1-D RoPE, as transformers counts
positions from the cache length; for multi-axis RoPE (M-RoPE) the first position after the prompt minus the
prompt's full length, transformers' `rope_deltas` of the uncompressed prompt counted over padding too. Measured
against the compressed length instead, the delta would grow by the tokens pooled away (L − Lc) and change with
the spec; against the full length it does not, so crops, reordering and the stock `rope_deltas` agree with it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from transformers.cache_utils import DynamicCache


@dataclass(frozen=True)
class PrefillState:
    """A compressed prefill, as its cache holds it now (crops included)."""

    layer: int  # K: layers 0..K-1 hold full-length states, layers K.. the pooled ones
    full_length: int  # full-length tokens (padding included) of the prefill
    attention_mask: torch.Tensor  # (B, Lc) padding mask of the prefill's pooled layers
    text_tail: torch.Tensor  # (B,) the last slots of each row that are text (a crop may go back that far)
    rope_deltas: torch.Tensor  # (B,) decode position minus full-length index (see the module note)
    rope_axes: int = 0  # 0: 1-D positions (B, L); A: multi-axis positions (A, B, L)

    def rows(self, index) -> PrefillState:
        """The state of the batch rows `index` (a tensor of row indices)."""
        return replace(
            self,
            attention_mask=self.attention_mask[index],
            text_tail=self.text_tail[index],
            rope_deltas=self.rope_deltas[index],
        )

    def positions(self, start: int, length: int) -> torch.Tensor:
        """Default positions of `length` tokens from full-length index `start`: (B, L), or (A, B, L) multi-axis."""
        index = torch.arange(start, start + length, device=self.rope_deltas.device)  # (L,)
        positions = index[None] + self.rope_deltas[:, None]  # (B, L)
        return positions.expand(self.rope_axes, -1, -1) if self.rope_axes else positions


class CompressedCache(DynamicCache):
    """A DynamicCache that knows the compressed prefill it holds (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.prefill: PrefillState | None = None

    def record_prefill(
        self,
        layer: int,
        full_length: int,
        attention_mask: torch.Tensor,
        text_tail: torch.Tensor,
        rope_deltas: torch.Tensor | None = None,
        rope_axes: int = 0,
    ) -> None:
        """Remember a compressed prefill of `full_length` tokens whose pooled layers start at `layer`."""
        if self.prefill is not None:
            raise ValueError("this cache already holds a compressed prefill; start a new cache for a new prompt")
        if rope_deltas is None:
            rope_deltas = torch.zeros(attention_mask.shape[0], dtype=torch.long, device=attention_mask.device)
        self.prefill = PrefillState(layer, full_length, attention_mask, text_tail, rope_deltas, rope_axes)

    @property
    def decoded(self) -> int:
        """Tokens appended after the prefill (the same count in every layer)."""
        return self.get_seq_length(self.prefill.layer) - self.prefill.attention_mask.shape[1]

    @property
    def full_seen(self) -> int:
        """Full-length positions so far: the prefill's plus the appended ones (RoPE continues from here)."""
        return self.prefill.full_length + self.decoded

    def crop(self, tokens_to_remove: int) -> None:
        """Drop the last `-tokens_to_remove` tokens (transformers' convention), into the prefill's text if need be."""
        if self.prefill is not None and tokens_to_remove < 0:
            into_prefill = -tokens_to_remove - self.decoded
            if into_prefill > 0:
                tail = int(self.prefill.text_tail.min()) if self.prefill.text_tail.numel() else 0
                if into_prefill > tail:
                    raise ValueError(
                        f"cannot crop {-tokens_to_remove} tokens from the compressed KV cache: that reaches "
                        f"{into_prefill} tokens into the prefill, past its last {tail} text tokens into pooled "
                        "visual tokens, which a crop cannot undo"
                    )
                p = self.prefill  # rope_deltas stay: the next token takes the first removed one's position
                self.prefill = replace(
                    p,
                    full_length=p.full_length - into_prefill,
                    attention_mask=p.attention_mask[:, :-into_prefill],
                    text_tail=p.text_tail - into_prefill,
                )
        super().crop(tokens_to_remove)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Reorder the batch for beam search, the prefill's state with it."""
        super().reorder_cache(beam_idx)
        if self.prefill is not None:
            self.prefill = self.prefill.rows(beam_idx.to(self.prefill.attention_mask.device))

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Repeat every row `repeats` times, the prefill's state with it."""
        super().batch_repeat_interleave(repeats)
        if self.prefill is not None:
            rows = torch.arange(self.prefill.attention_mask.shape[0], device=self.prefill.attention_mask.device)
            self.prefill = self.prefill.rows(rows.repeat_interleave(repeats))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the rows `indices`, the prefill's state with them."""
        super().batch_select_indices(indices)
        if self.prefill is not None:
            self.prefill = self.prefill.rows(indices.to(self.prefill.attention_mask.device))
