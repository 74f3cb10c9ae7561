"""What to compress and how much: the compression spec, Eq. 3 and the per-forward token accounting."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch

# How the visual tokens of a segment become ceil(L/S) tokens (all give the same count for the same S):
#   avgpool: means of S consecutive tokens (the paper's compressor); random: a seeded random subset;
#   kmeans: means of ceil(L/S) k-means clusters; fastv: the tokens the last prompt token attends to most at layer K.
METHODS = ("avgpool", "random", "kmeans", "fastv")

# Key under which the spec is stored in a model's config, so it travels with `save_pretrained` checkpoints.
CONFIG_KEY = "llavolta_compression"


@dataclass(frozen=True)
class CompressionSpec:
    """Pool visual tokens after decoder layer `layer` (K) with kernel = stride = `stride` (S).

    K counts decoder layers that run on the full sequence: K=0 pools the embeddings, K=N (the number of
    decoder layers) compresses nothing. `method` picks how each segment's tokens are reduced (see METHODS);
    `seed` drives `random`.
    """

    layer: int
    stride: int
    method: str = "avgpool"
    seed: int = 0

    def __post_init__(self):
        for name in ("layer", "stride", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"CompressionSpec.{name} must be an int, got {value!r}")
        if self.stride < 1:
            raise ValueError(f"CompressionSpec.stride must be >= 1 (1 means no pooling), got {self.stride}")
        if self.layer < 0:
            raise ValueError(f"CompressionSpec.layer must be >= 0 (decoder layers run before pooling), got {self.layer}")
        if self.method not in METHODS:
            raise ValueError(f"CompressionSpec.method must be one of {METHODS}, got {self.method!r}")
        if self.method == "fastv" and self.layer < 1 and self.stride > 1:
            raise ValueError("CompressionSpec(method='fastv') ranks tokens by layer K's attention, so layer must be >= 1")

    @classmethod
    def parse(cls, text: str) -> "CompressionSpec":
        """'K,S' or 'K,S,method' (e.g. '2,8' or '2,8,fastv'), as command lines take it."""
        parts = [p.strip() for p in text.split(",")]
        try:
            if len(parts) not in (2, 3):
                raise ValueError
            return cls(int(parts[0]), int(parts[1]), *parts[2:])
        except ValueError as err:
            detail = f": {err}" if str(err) else ""
            raise ValueError(f"a compression spec is 'K,S' or 'K,S,method' (e.g. 2,8 or 2,8,fastv), got {text!r}"
                             f"{detail}") from None

    def label(self) -> str:
        """'K=2,S=8' for average pooling, 'K=2,S=8,fastv' for another method."""
        base = f"K={self.layer},S={self.stride}"
        return base if self.method == "avgpool" else f"{base},{self.method}"

    def is_noop(self, num_layers: int) -> bool:
        """True when this spec leaves every layer's input unchanged for a model with `num_layers` layers."""
        return self.stride == 1 or self.layer >= num_layers

    def check_fits(self, num_layers: int) -> None:
        """Raise ValueError if the spec names a layer the model does not have."""
        if self.layer > num_layers:
            raise ValueError(
                f"CompressionSpec.layer={self.layer} is outside the model: it has {num_layers} decoder layers, "
                f"so layer must be in 0..{num_layers} ({num_layers} = compress nothing)"
            )

    def to_dict(self) -> dict:
        """Plain dict for configs and JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CompressionSpec":
        """Build from a dict, rejecting unknown keys (a typo must not silently mean 'default')."""
        unknown = set(data) - set(SPEC_FIELDS)
        if unknown:
            raise ValueError(f"unknown CompressionSpec field(s) {sorted(unknown)}; known: {sorted(SPEC_FIELDS)}")
        return cls(**data)


# Named once: torch.compile traces the forward that reads a spec from its config, but not `dataclasses.fields`.
SPEC_FIELDS = tuple(f.name for f in fields(CompressionSpec))


def pooled_length(length: int, stride: int) -> int:
    """Tokens left from a segment of `length` tokens: a last partial window is kept (averaged), never dropped."""
    return math.ceil(length / stride)


def compression_ratio(num_layers: int, layer: int, tokens_in: int, tokens_out: int) -> float:
    """Eq. 3 of the paper: CR = N·L / ((N−K)·L_out + K·L), as a fraction (5.565 means 556.5%)."""
    if num_layers < 1 or tokens_in < 0 or tokens_out < 0 or tokens_out > tokens_in:
        raise ValueError(
            f"compression_ratio needs num_layers >= 1 and 0 <= tokens_out <= tokens_in, got "
            f"num_layers={num_layers}, tokens_in={tokens_in}, tokens_out={tokens_out}"
        )
    if layer < 0:
        raise ValueError(f"compression_ratio needs layer >= 0, got {layer}")
    if tokens_in == 0:
        return 1.0
    layer = min(layer, num_layers)
    return num_layers * tokens_in / ((num_layers - layer) * tokens_out + layer * tokens_in)


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
        k = min(self.layer, self.num_layers)
        return k * self.tokens_in + (self.num_layers - k) * self.tokens_out

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
