"""Counting visual tokens: pooled lengths, #Tokens over the decoder's layers and Eq. 3, once for the toolkit."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def pooled_length(length: int, stride: int) -> int:
    """Tokens left from a segment of `length` tokens: a last partial window is kept (averaged), never dropped."""
    return math.ceil(length / stride)


def tokens_over_layers(num_layers: int, layer: int, tokens_in: int, tokens_out: int) -> int:
    """The tables' '#Tokens': visual tokens summed over the decoder's layers, K·L + (N−K)·L_out (K at most N)."""
    k = min(layer, num_layers)
    return k * tokens_in + (num_layers - k) * tokens_out


def ratio_over_layers(num_layers: int, tokens_in: int, summed_tokens: int) -> float:
    """N·L / #Tokens: Eq. 3 for one setting, and the average CR of a run whose steps used several settings."""
    return num_layers * tokens_in / summed_tokens if summed_tokens else 1.0


def compression_ratio(num_layers: int, layer: int, tokens_in: int, tokens_out: int) -> float:
    """Eq. 3 of the paper: CR = N·L / ((N−K)·L_out + K·L), as a fraction (5.565 means 556.5%)."""
    if num_layers < 1 or tokens_in < 0 or tokens_out < 0 or tokens_out > tokens_in:
        raise ValueError(
            f"compression_ratio needs num_layers >= 1 and 0 <= tokens_out <= tokens_in, got "
            f"num_layers={num_layers}, tokens_in={tokens_in}, tokens_out={tokens_out}"
        )
    if layer < 0:
        raise ValueError(f"compression_ratio needs layer >= 0, got {layer}")
    return ratio_over_layers(num_layers, tokens_in, tokens_over_layers(num_layers, layer, tokens_in, tokens_out))


@dataclass
class CompressionStats:
    """Visual-token accounting of one forward: per-sample tokens in/out of the compressor and Eq. 3."""

    num_layers: int
    layer: int
    stride: int
    visual_tokens_in: torch.Tensor  # (batch,) visual tokens entering the compressor
    visual_tokens_out: torch.Tensor  # (batch,) visual tokens leaving it

    @property
    def tokens_in(self) -> int:
        """Visual tokens of the whole batch before pooling."""
        return int(self.visual_tokens_in.sum())

    @property
    def tokens_out(self) -> int:
        """Visual tokens of the whole batch after pooling."""
        return int(self.visual_tokens_out.sum())

    @property
    def ratio(self) -> float:
        """Eq. 3 over the batch's visual tokens."""
        return compression_ratio(self.num_layers, self.layer, self.tokens_in, self.tokens_out)

    @property
    def tokens_over_layers(self) -> int:
        """The tables' '#Tokens': visual tokens summed over all decoder layers (batch total)."""
        return tokens_over_layers(self.num_layers, self.layer, self.tokens_in, self.tokens_out)

    def as_dict(self) -> dict:
        """JSON-ready summary for logs and reports."""
        return {
            "layer": self.layer,
            "stride": self.stride,
            "num_layers": self.num_layers,
            "visual_tokens_in": self.tokens_in,
            "visual_tokens_out": self.tokens_out,
            "tokens_over_layers": self.tokens_over_layers,
            "compression_ratio": self.ratio,
        }
