"""LLaVolta's stage schedule: a scheme is a list of stages, each a compression spec (or none) and a share of training.

Stage boundaries are counted in optimizer steps and derived from the global step alone, so gradient accumulation,
the number of ranks and resuming from any checkpoint never move them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .compression import CompressionSpec, spec_label

# The depth the paper's K are set for (Table 1, 32-layer Vicuna-7B). Another decoder takes each stage at the same
# relative depth, K' = max(1, round(K * N / 32)) (`Scheme.for_depth`): on the 28-layer Qwen2-7B decoder of
# Qwen2-VL-7B / Qwen2.5-VL-7B and LLaVA-OneVision-7B, K=2 -> 2 and K=16 -> 14; on a 4-layer tiny model 1 and 2.
# Relative depth, not the same K, because what a stage trades is the share of layers that see every visual token.
SCHEME_REFERENCE_LAYERS = 32


@dataclass(frozen=True)
class Stage:
    """One stage: pool with `spec` (None = no compression) for `fraction` of the optimizer steps."""

    spec: CompressionSpec | None
    fraction: float

    def __post_init__(self):
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"a stage's fraction must be in [0, 1], got {self.fraction}")

    @classmethod
    def from_dict(cls, data: dict | str) -> Stage:
        """`{"layer": 2, "stride": 8, "fraction": 0.5}` or `{"none": true, "fraction": 0.5}` (or the string "none")."""
        if data == "none":
            return cls(None, 1.0)
        data = dict(data)
        fraction = float(data.pop("fraction", 1.0))
        if data.pop("none", False) or not data:
            if data:
                raise ValueError(f"a 'none' stage takes only a fraction, got {sorted(data)}")
            return cls(None, fraction)
        return cls(CompressionSpec.from_dict(data), fraction)

    def to_dict(self) -> dict:
        """The YAML form."""
        if self.spec is None:
            return {"none": True, "fraction": self.fraction}
        return {**self.spec.to_dict(), "fraction": self.fraction}

    def label(self) -> str:
        """'K=2,S=8' (plus the method unless avgpool) or 'none'."""
        return spec_label(self.spec)


@dataclass(frozen=True)
class Scheme:
    """Stages in training order; fractions sum to one."""

    name: str
    stages: tuple[Stage, ...]

    def __post_init__(self):
        if not self.stages:
            raise ValueError(f"scheme {self.name!r} has no stages")
        total = sum(s.fraction for s in self.stages)
        if abs(total - 1.0) > 1e-4:  # YAML files write thirds as 0.333333
            raise ValueError(f"scheme {self.name!r}: stage fractions sum to {total:g}, not 1")

    @classmethod
    def from_list(cls, name: str, stages: list) -> Scheme:
        """A scheme from its YAML list of stage dicts."""
        try:
            return cls(name, tuple(Stage.from_dict(s) for s in stages))
        except (TypeError, ValueError) as err:
            raise ValueError(f"scheme {name!r}: {err}") from None

    def check_fits(self, num_layers: int) -> None:
        """Every stage's spec must fit a decoder of `num_layers` layers."""
        for stage in self.stages:
            if stage.spec is not None:
                stage.spec.check_fits(num_layers)

    def boundaries(self, total_steps: int) -> list[int]:
        """Optimizer step at which each stage ends (exclusive); the last is `total_steps`."""
        ends, acc = [], 0.0
        for stage in self.stages:
            acc += stage.fraction
            ends.append(round(acc * total_steps))
        ends[-1] = total_steps
        return ends

    def stage_index(self, step: int, total_steps: int) -> int:
        """Index of the stage that optimizer step `step` (0-based, the one about to run) belongs to."""
        if not 0 <= step < max(total_steps, 1):
            raise ValueError(f"step {step} is outside a run of {total_steps} optimizer steps")
        return next(i for i, end in enumerate(self.boundaries(total_steps)) if step < end)

    def spec_at(self, step: int, total_steps: int) -> CompressionSpec | None:
        """The compression spec for optimizer step `step`."""
        return self.stages[self.stage_index(step, total_steps)].spec

    def for_depth(self, num_layers: int, reference_layers: int = SCHEME_REFERENCE_LAYERS) -> Scheme:
        """The scheme with each layer K rescaled from a `reference_layers`-deep decoder to `num_layers`.

        K' = max(1, round(K * num_layers / reference_layers)), so each stage keeps its relative depth (see
        SCHEME_REFERENCE_LAYERS for the paper's depth and what it gives on 28-layer and tiny decoders).
        """

        def scale(spec):
            if spec is None:
                return None
            layer = max(1, round(spec.layer * num_layers / reference_layers)) if spec.layer else 0
            return replace(spec, layer=layer)

        name = f"{self.name}@{num_layers}/{reference_layers}"
        return Scheme(name, tuple(Stage(scale(s.spec), s.fraction) for s in self.stages))

    @property
    def final_spec(self) -> CompressionSpec | None:
        """The last stage with steps: what the saved checkpoint carries (normally none)."""
        return next(s.spec for s in reversed(self.stages) if s.fraction > 0)


def _scheme(name: str, *stages: tuple[tuple[int, int] | None, float]) -> Scheme:
    return Scheme(name, tuple(Stage(None if s is None else CompressionSpec(*s), f) for s, f in stages))


# Table 1 of the paper: (layer K, stride S) or None, and each stage's share of the epoch.
SCHEMES = {
    s.name: s
    for s in (
        _scheme("single", (None, 1.0)),
        _scheme("two", ((2, 8), 0.5), (None, 0.5)),
        _scheme("three_deeper", ((2, 8), 1 / 3), ((16, 8), 1 / 3), (None, 1 / 3)),
        _scheme("three_wider", ((2, 8), 1 / 3), ((2, 2), 1 / 3), (None, 1 / 3)),
        _scheme("four_wider_then_deeper", ((2, 8), 0.25), ((2, 2), 0.25), ((16, 2), 0.25), (None, 0.25)),
        _scheme("four_deeper_then_wider", ((2, 8), 0.25), ((16, 8), 0.25), ((16, 2), 0.25), (None, 0.25)),
    )
}
