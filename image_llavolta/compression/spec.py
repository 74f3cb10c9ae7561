"""What to compress and how much: the compression spec, and the one grammar command lines write it in.

none                 no compression (the stock forward)
from_config          the spec stored in the model's config (`llavolta_compression`)
K,S[,method]         pool after decoder layer K with stride S, e.g. 2,8 or 2,8,fastv
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, fields

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
            raise ValueError(
                f"CompressionSpec.layer must be >= 0 (decoder layers run before pooling), got {self.layer}"
            )
        if self.method not in METHODS:
            raise ValueError(f"CompressionSpec.method must be one of {METHODS}, got {self.method!r}")
        if self.method == "fastv" and self.layer < 1 and self.stride > 1:
            raise ValueError(
                "CompressionSpec(method='fastv') ranks tokens by layer K's attention, so layer must be >= 1"
            )

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
    def from_dict(cls, data: dict) -> CompressionSpec:
        """Build from a dict, rejecting unknown keys (a typo must not silently mean 'default')."""
        unknown = set(data) - set(SPEC_FIELDS)
        if unknown:
            raise ValueError(f"unknown CompressionSpec field(s) {sorted(unknown)}; known: {sorted(SPEC_FIELDS)}")
        return cls(**data)


# Named once: torch.compile traces the forward that reads a spec from its config, but not `dataclasses.fields`.
SPEC_FIELDS = tuple(f.name for f in fields(CompressionSpec))


class FromConfig(enum.Enum):
    """The type of `FROM_CONFIG`: "use the spec stored in the model's config", as a value no spec can be."""

    FROM_CONFIG = "from_config"

    def __repr__(self) -> str:
        return "FROM_CONFIG"


FROM_CONFIG = FromConfig.FROM_CONFIG
SpecArgument = CompressionSpec | None | FromConfig  # what `compression=` takes everywhere
GRAMMAR = "'none', 'from_config' or 'K,S[,method]' (e.g. 2,8 or 2,8,fastv)"


def parse_spec(text: str) -> SpecArgument:
    """A command line's compression: 'none' -> None, 'from_config' -> FROM_CONFIG, 'K,S[,method]' -> a spec."""
    value = text.strip()
    if value.lower() == "none":
        return None
    if value.lower() == FROM_CONFIG.value:
        return FROM_CONFIG
    parts = [p.strip() for p in value.split(",")]
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        return CompressionSpec(int(parts[0]), int(parts[1]), *parts[2:])
    except ValueError as err:
        detail = f": {err}" if str(err) else ""
        raise ValueError(f"compression is {GRAMMAR}, got {text!r}{detail}") from None


def spec_label(spec: SpecArgument) -> str:
    """How reports name a setting: 'none', 'from_config', 'K=2,S=8' or 'K=2,S=8,fastv'."""
    if spec is None:
        return "none"
    if spec is FROM_CONFIG:
        return FROM_CONFIG.value
    return spec.label()


def check_spec_argument(value) -> SpecArgument:
    """`value` if it is a CompressionSpec, None or FROM_CONFIG; a ValueError naming the grammar otherwise."""
    if value is None or value is FROM_CONFIG or isinstance(value, CompressionSpec):
        return value
    raise ValueError(
        f"compression must be a CompressionSpec, None or FROM_CONFIG (text is parsed with parse_spec: "
        f"{GRAMMAR}), got {value!r}"
    )
