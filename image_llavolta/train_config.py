"""One YAML file per training run, loaded into typed dataclasses with validation and command-line overrides.

    model:     {path: /models/Video-LLaVA-7B-hf}       or {family: video_llava, tiny: {layers: 16, ...}}
    data:      {train: [train.json], video_root: videos/, frames_root: frames/, image_root: images/}
    phase:     finetune                                  # pretrain: projector only; finetune: projector + LLM
    optim:     {lr: 2e-5, per_device_batch_size: 4, grad_accum: 1, ...}
    scheme:    four_wider_then_deeper                    # a name, a YAML file of stages, or the list itself
    deepspeed: configs/deepspeed/zero2.json              # or a dict, or null (plain PyTorch)

Any field can be overridden with `key.sub=value` arguments (values parsed as YAML).

`model.family` is the model type the run trains (`llava`, `video_llava`: the `model_type` of its transformers
config), which is how `llavolta train` picks the family's trainer. With `model.path` it defaults to the
checkpoint's `model_type` (and must agree with it); a tiny model names it.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field

import yaml

from .schedule import SCHEMES, Scheme

PHASES = ("pretrain", "finetune")
PRECISIONS = ("fp32", "bf16")


@dataclass
class ModelSection:
    """Either a local checkpoint `path` or a `tiny` config (kwargs of the family's tiny config builder)."""

    path: str | None = None
    family: str | None = None  # the model type; None: the checkpoint's (module docstring)
    tiny: dict | None = None
    tokenizer: str | None = None  # defaults to `path`; a tiny model without one gets the data set's word tokenizer
    attn_implementation: str | None = None
    temporal_attention: bool | None = None  # video: override the checkpoint's config
    train_vision_towers: bool = False  # Video-LLaVA / LLaVA freeze them; a tiny demo model may train them

    def validate(self):
        if (self.path is None) == (self.tiny is None):
            raise ValueError("model: give exactly one of 'path' (a local checkpoint) or 'tiny' (a config)")
        if self.family is not None and not (isinstance(self.family, str) and self.family):
            raise ValueError(f"model.family: expected a model type such as 'llava', got {self.family!r}")


@dataclass
class DataSection:
    """Instruction JSON files and the roots their media paths are relative to."""

    train: list[str] = field(default_factory=list)
    image_root: str | None = None
    video_root: str | None = None
    frames_root: str | None = None
    max_length: int = 4096
    num_workers: int = 0
    max_failure_share: float = 0.01  # stop the run when more than this share of samples fails to load
    flip_prob: float = 0.0
    # LLaVA's length-grouped batches (least padding). Off: random batches (still one modality each), for data whose
    # length gives the task away, e.g. the synthetic set, where every batch would hold a single question type.
    group_by_length: bool = True

    def validate(self):
        if not self.train:
            raise ValueError("data.train: give at least one instruction JSON file")
        if not 0 <= self.max_failure_share <= 1:
            raise ValueError(f"data.max_failure_share must be in [0, 1], got {self.max_failure_share}")


@dataclass
class OptimSection:
    """Optimizer and schedule; defaults are LLaVA-1.5 / Video-LLaVA finetuning (pretrain uses lr 1e-3)."""

    lr: float | None = None  # None: 1e-3 for pretrain, 2e-5 for finetune
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    scheduler: str = "cosine"
    epochs: float = 1.0
    max_steps: int = -1
    per_device_batch_size: int = 4
    grad_accum: int = 1
    max_grad_norm: float = 1.0

    def validate(self):
        if self.per_device_batch_size < 1 or self.grad_accum < 1:
            raise ValueError("optim.per_device_batch_size and optim.grad_accum must be >= 1")


@dataclass
class LoraSection:
    """Optional LoRA on the language model (needs `peft`)."""

    r: int = 0
    alpha: int = 16
    dropout: float = 0.05


@dataclass
class TrainConfig:
    """A whole training run."""

    output_dir: str
    model: ModelSection
    data: DataSection
    scheme: typing.Any = "single"  # name | path to a YAML list | list of stages; resolved by `scheme_obj`
    scheme_reference_layers: int | None = None  # rescale the scheme's K from this depth to the model's (tiny models)
    phase: str = "finetune"
    optim: OptimSection = field(default_factory=OptimSection)
    lora: LoraSection = field(default_factory=LoraSection)
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    deepspeed: typing.Any = None  # path to a JSON/YAML DeepSpeed config, a dict, or None
    seed: int = 0
    logging_steps: int = 10
    save_steps: int = 0  # 0: save only at the end
    save_total_limit: int | None = 2
    template: str = "vicuna_v1"
    report_name: str = "train_report"
    # Seconds a rank waits in a collective (all-reduce, all-gather) before failing: a dead or stuck peer turns a
    # hang into an error on the ranks left (docs/distributed.md).
    collective_timeout: int = 1800
    step_log: bool = False  # each rank appends one line per micro-batch to output_dir/steps/rank<R>.jsonl

    def validate(self):
        """Check every field; raises ValueError naming the field."""
        if self.phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {self.phase!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        for section in (self.model, self.data, self.optim):
            section.validate()
        if self.collective_timeout < 1:
            raise ValueError(f"collective_timeout must be >= 1 second, got {self.collective_timeout}")
        self.scheme_obj()
        self.deepspeed_config()
        return self

    @property
    def learning_rate(self) -> float:
        """The configured lr, or the phase default."""
        return self.optim.lr if self.optim.lr is not None else (1e-3 if self.phase == "pretrain" else 2e-5)

    def scheme_obj(self) -> Scheme:
        """The compression scheme: a built-in name, a YAML file of stages, or an inline list."""
        if isinstance(self.scheme, str) and self.scheme in SCHEMES:
            return SCHEMES[self.scheme]
        if isinstance(self.scheme, str):
            if not os.path.isfile(self.scheme):
                raise ValueError(f"scheme {self.scheme!r} is neither a built-in ({sorted(SCHEMES)}) nor a file")
            with open(self.scheme) as f:
                data = yaml.safe_load(f)
            name = os.path.splitext(os.path.basename(self.scheme))[0]
            stages = data.get("stages") if isinstance(data, dict) else data
            return Scheme.from_list(data.get("name", name) if isinstance(data, dict) else name, stages or [])
        if isinstance(self.scheme, list):
            return Scheme.from_list("custom", self.scheme)
        raise ValueError(f"scheme must be a name, a file or a list of stages, got {type(self.scheme).__name__}")

    def deepspeed_config(self) -> dict | None:
        """The DeepSpeed config as a dict (None: plain PyTorch)."""
        if self.deepspeed is None or isinstance(self.deepspeed, dict):
            return self.deepspeed
        if not os.path.isfile(self.deepspeed):
            raise ValueError(f"deepspeed: no config file at {self.deepspeed}")
        with open(self.deepspeed) as f:
            return yaml.safe_load(f)  # JSON is YAML

    def zero_stage(self) -> int:
        """ZeRO stage of the DeepSpeed config (0 without DeepSpeed)."""
        return int(((self.deepspeed_config() or {}).get("zero_optimization") or {}).get("stage", 0))

    def to_dict(self) -> dict:
        """Plain-data form (for the run report)."""
        return dataclasses.asdict(self)


def _build(cls, data, where: str):
    """Instantiate dataclass `cls` from a dict, recursing into dataclass fields; unknown keys are errors."""
    if not isinstance(data, dict):
        raise ValueError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where or 'config'}: unknown field(s) {unknown}; known: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            value = _build(hint, value or {}, f"{where}.{key}".lstrip("."))
        else:
            value = _coerce(value, hint, f"{where}.{key}".lstrip("."))
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"{where or 'config'}: {err}") from None


def _coerce(value, hint, where: str):
    """Numbers written as YAML strings ('3e-4' is a string in YAML 1.1) become the annotated type."""
    allowed = typing.get_args(hint) or (hint,)
    if hint is typing.Any:
        return value
    if isinstance(value, str) and str not in allowed:
        for kind in (int, float):
            if kind in allowed:
                try:
                    return kind(value)
                except ValueError:
                    pass
        raise ValueError(
            f"{where}: expected {' or '.join(getattr(a, '__name__', str(a)) for a in allowed)}, got {value!r}"
        )
    if isinstance(value, int) and not isinstance(value, bool) and float in allowed and int not in allowed:
        return float(value)
    return value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set `a.b.c=value` overrides (value parsed as YAML) on a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        node = data
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {p} is not a section")
        node[last] = yaml.safe_load(raw)
    return data


def load_config(path: str | None, overrides: list[str] = ()) -> TrainConfig:
    """Read a run's YAML file, apply overrides, validate. Relative paths stay relative to the working directory."""
    data = {}
    if path is not None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no config file at {path}")
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    data = apply_overrides(data, list(overrides))
    try:
        config = _build(TrainConfig, data, "")
        return config.validate()
    except ValueError as err:
        raise ValueError(f"{path or 'config'}: {err}") from None
