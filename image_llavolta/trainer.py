"""Staged training on transformers' Trainer: each optimizer step runs with its stage's compression spec.

The spec is passed to the model's forward per call (never set on the model between steps); the stage comes from
`state.global_step`, so gradient accumulation, the number of ranks and resuming do not move stage boundaries.
Samples that fail to load are logged (id, path, reason) to `failures.jsonl`, counted, and stop the run above
`max_failure_share`; they are never replaced by other samples. A micro-batch whose samples all failed still runs
a forward under ZeRO-3 (on a stand-in sample of the same modality, weighted zero), since the other ranks' parameter
gathers wait for it; without ZeRO-3 it contributes a zero loss. With `step_log`, each rank appends one line per
micro-batch to `steps/rank<R>.jsonl` (docs/distributed.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass

import torch
from transformers import Trainer, TrainerCallback

from .checkpoint import load_model, read_config
from .compression import enable_compression, ratio_over_layers
from .conversation import record_template
from .distributed import init_process_group
from .schedule import Scheme
from .tables import format_table


@dataclass
class StageTally:
    """What one stage did, summed over its optimizer steps (and over ranks at the end)."""

    steps: int = 0
    seconds: float = 0.0
    samples: int = 0
    loss_sum: float = 0.0
    loss_batches: int = 0
    visual_in: int = 0
    visual_out: int = 0
    tokens_over_layers: int = 0

    def as_row(self, label: str, num_layers: int) -> dict:
        """The report's row for this stage."""
        return {
            "stage": label,
            "optimizer_steps": self.steps,
            "wall_seconds": round(self.seconds, 2),
            "samples_per_second": round(self.samples / self.seconds, 3) if self.seconds else 0.0,
            "samples": self.samples,
            "visual_tokens_in": self.visual_in,
            "visual_tokens_out": self.visual_out,
            "compression_ratio": round(self._ratio(num_layers), 4),
            "mean_loss": round(self.loss_sum / self.loss_batches, 4) if self.loss_batches else None,
        }

    def _ratio(self, num_layers: int) -> float:
        return ratio_over_layers(num_layers, self.visual_in, self.tokens_over_layers)


class FailureLimitExceeded(RuntimeError):
    """More samples failed to load than the run allows."""


class StagedTrainer(Trainer):
    """transformers' Trainer running a LLaVolta scheme, with failure accounting and a per-stage report."""

    def __init__(
        self,
        *args,
        scheme: Scheme,
        num_layers: int,
        max_failure_share: float = 0.01,
        sampler_factory=None,
        zero_stage: int = 0,
        step_log: bool = False,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.zero_stage = zero_stage
        self.step_log = step_log
        self._stand_ins: dict[str, dict] = {}  # modality -> a collated batch of one loadable sample
        self.scheme = scheme
        self.num_layers = num_layers
        self.max_failure_share = max_failure_share
        self.sampler_factory = sampler_factory
        self.tallies = [StageTally() for _ in scheme.stages]
        self.failures: list[dict] = []
        self.samples_seen = 0
        self.stage_log: dict[int, str] = {}  # optimizer step -> stage label it ran with
        self.add_callback(_StageClock(self))

    def current_stage(self) -> int:
        """Index of the stage of the optimizer step being computed."""
        return self.scheme.stage_index(min(self.state.global_step, self.state.max_steps - 1), self.state.max_steps)

    def get_train_dataloader(self):
        """Batches from `sampler_factory` (one modality per global batch), this rank's share of each."""
        if self.sampler_factory is None:
            return super().get_train_dataloader()
        sampler = self.sampler_factory(self.args.per_device_train_batch_size * self.args.world_size, self.args.seed)
        return _EpochDataLoader(
            self.train_dataset,
            _RankBatches(sampler, self.args.process_index, self.args.world_size),
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The model's loss with the current stage's compression, plus bookkeeping."""
        failed = inputs.pop("failures", [])
        stage = self.current_stage()
        tally = self.tallies[stage]
        self._record_failures(failed)
        if "input_ids" not in inputs and self.zero_stage != 3:  # all failed: a zero loss keeps ranks in step
            zero = sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0
            self._log_step(stage, None, None, zero)
            return (zero, None) if return_outputs else zero
        self.stage_log[self.state.global_step] = self.scheme.stages[stage].label()
        if "input_ids" not in inputs:
            # Under ZeRO-3 the other ranks' parameter gathers wait for this rank's forward: run the same modules
            # on a sample of the batch's modality, weighted zero (mean loss: this rank may count no label at all).
            stand_in = {**self._stand_in(failed), "compression": self.scheme.stages[stage].spec}
            loss, outputs = super().compute_loss(model, stand_in, True, None)
            loss = loss * 0.0
            self._log_step(stage, stand_in, outputs.compression, loss, stand_in=True)
            return (loss, outputs) if return_outputs else loss
        inputs["compression"] = self.scheme.stages[stage].spec
        inputs["output_compression"] = True  # the accounting of uncompressed stages too
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        tally.samples += inputs["input_ids"].shape[0]
        tally.loss_sum += float(outputs.loss.detach())
        tally.loss_batches += 1
        stats = outputs.compression
        if stats is not None:
            tally.visual_in += stats.tokens_in
            tally.visual_out += stats.tokens_out
            tally.tokens_over_layers += stats.tokens_over_layers
        self._log_step(stage, inputs, stats, outputs.loss)
        return (loss, outputs) if return_outputs else loss

    def _stand_in(self, failed: list) -> dict:
        """A batch of one loadable sample of the failed samples' modality (the global batch's), on the device."""
        dataset = self.train_dataset
        ids = {str(f["id"] if isinstance(f, dict) else f.id) for f in failed}
        modality = dataset.modality(next(i for i, r in enumerate(dataset.records) if str(r["id"]) in ids))
        if modality not in self._stand_ins:
            for i in range(len(dataset)):
                sample = dataset[i] if dataset.modality(i) == modality else None
                if isinstance(sample, dict):
                    batch = self.data_collator([sample])
                    batch.pop("failures", None)
                    self._stand_ins[modality] = batch
                    break
            else:
                raise FailureLimitExceeded(f"no {modality} sample of the data set loads: nothing to stand in for")
        return {**self._prepare_inputs(dict(self._stand_ins[modality])), "output_compression": True}

    def _log_step(self, stage: int, inputs: dict | None, stats, loss, stand_in: bool = False) -> None:
        """One line per micro-batch in this rank's `steps/rank<R>.jsonl` (with `step_log`)."""
        if not self.step_log:
            return
        record = {
            "rank": self.args.process_index,
            "step": self.state.global_step,  # the optimizer step this micro-batch belongs to
            "stage": self.scheme.stages[stage].label(),
            "modality": batch_modality(inputs) if inputs is not None else None,  # None: every sample failed
            "loss": float(loss.detach()),
        }
        if inputs is not None:
            kept = int(inputs["attention_mask"].sum())
            if stats is not None:  # text tokens plus the visual tokens left after compression (deepest layer)
                kept += stats.tokens_out - stats.tokens_in
            record.update(samples=inputs["input_ids"].shape[0], length=inputs["input_ids"].shape[1], compressed=kept)
        record["stand_in"] = stand_in
        self._append_step_log(record)

    def _append_step_log(self, record: dict) -> None:
        path = os.path.join(self.args.output_dir, "steps", f"rank{self.args.process_index}.jsonl")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a") as out:
            out.write(json.dumps(record) + "\n")

    def log_parameters(self) -> None:
        """Append a digest of this rank's trainable parameters to its step log (replicated ones match across ranks)."""
        if not self.step_log:
            return
        digest = hashlib.sha256()
        named = self.accelerator.unwrap_model(self.model).named_parameters()
        for name, param in sorted((n, p) for n, p in named if p.requires_grad):
            # Under ZeRO-3 a rank holds only its partition: the digest is of that partition.
            digest.update(name.encode() + param.detach().float().cpu().contiguous().numpy().tobytes())
        self._append_step_log(
            {"rank": self.args.process_index, "end": self.state.global_step, "parameters_sha256": digest.hexdigest()}
        )

    def _record_failures(self, failed: list) -> None:
        self.samples_seen += len(failed)
        for f in failed:
            record = {"step": self.state.global_step, **(dataclasses.asdict(f) if dataclasses.is_dataclass(f) else f)}
            self.failures.append(record)
            with open(os.path.join(self.args.output_dir, "failures.jsonl"), "a") as out:
                out.write(json.dumps(record) + "\n")
        seen = self.samples_seen + sum(t.samples for t in self.tallies)
        if self.failures and len(self.failures) > self.max_failure_share * max(seen, 1) and seen >= 20:
            raise FailureLimitExceeded(
                f"{len(self.failures)} of {seen} samples failed to load (limit {self.max_failure_share:.1%}); "
                f"see {os.path.join(self.args.output_dir, 'failures.jsonl')}"
            )

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """Reload weights through `from_pretrained`, strictly.

        transformers 5.23's Trainer reloads with `load_state_dict(strict=False)`, but `save_pretrained` writes LLaVA
        models under their legacy key names, so that would skip every weight with only a warning, and a resumed
        run would silently restart from the initial weights. (DeepSpeed resumes from its own engine files.)
        """
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        if self.is_deepspeed_enabled or self.is_fsdp_enabled or hasattr(target, "peft_config"):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)  # engine files / adapters
        config = read_config(resume_from_checkpoint)
        loaded, _, _ = load_model(
            type(target),
            resume_from_checkpoint,
            config,
            dtype=target.dtype,
            attn_implementation=target.config._attn_implementation,
        )
        target.load_state_dict(loaded.state_dict(), strict=True)

    def _save(self, output_dir=None, state_dict=None):
        # The checkpoint carries the spec of the stage its last step ran in (the final stage's: normally none).
        done = max(self.state.global_step - 1, 0)
        spec = self.scheme.spec_at(done, self.state.max_steps) if self.state.max_steps else self.scheme.final_spec
        enable_compression(self.accelerator.unwrap_model(self.model), spec)
        super()._save(output_dir, state_dict)

    def report(self, total_seconds: float) -> dict:
        """Per-stage and whole-run summary (summed over ranks)."""
        tallies = _sum_over_ranks(self.tallies, self.args.device)
        # #Tokens summed over the stage's samples: the work compression saves, which machine load cannot change
        rows = [
            {**t.as_row(s.label(), self.num_layers), "visual_tokens_over_layers": t.tokens_over_layers}
            for s, t in zip(self.scheme.stages, tallies)
        ]
        run = StageTally(**{k: sum(getattr(t, k) for t in tallies) for k in StageTally.__dataclass_fields__})
        return {
            "scheme": self.scheme.name,
            "stages": rows,
            "total_optimizer_steps": self.state.global_step,
            "total_wall_seconds": round(total_seconds, 2),
            "train_seconds": round(run.seconds, 2),
            "visual_tokens_over_layers": run.tokens_over_layers,
            "average_compression_ratio": round(run._ratio(self.num_layers), 4),
            "samples": run.samples,
            "failed_samples": _total_over_ranks(len(self.failures), self.args.device),
            "stage_by_step": {str(k): v for k, v in sorted(self.stage_log.items())},  # steps run by this process
        }


def batch_modality(inputs: dict) -> str:
    """A collated batch's modality, from the pixel tensors it carries."""
    if "pixel_values_videos" in inputs:
        return "video"
    return "image" if any(k.startswith("pixel_values") for k in inputs) else "text"


class _StageClock(TrainerCallback):
    """Charges the wall time between optimizer steps (data loading included) to each step's stage."""

    def __init__(self, trainer: StagedTrainer):
        self.trainer = trainer
        self.last = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now, t = time.perf_counter(), self.trainer
        stage = t.scheme.stage_index(state.global_step - 1, state.max_steps)
        t.tallies[stage].steps += 1
        t.tallies[stage].seconds += now - self.last
        self.last = now


class _RankBatches:
    """A batch sampler: this rank's part of each global batch of `sampler`, re-drawn per epoch."""

    def __init__(self, sampler, rank: int, world_size: int):
        self.sampler, self.rank, self.world_size = sampler, rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self):
        return iter(self.sampler.rank_batches(self.rank, self.world_size))

    def __len__(self) -> int:
        return len(self.sampler.rank_batches(self.rank, self.world_size))


class _EpochDataLoader(torch.utils.data.DataLoader):
    """A DataLoader over a batch sampler that forwards `set_epoch` (the Trainer calls it each epoch)."""

    def __init__(self, dataset, batch_sampler, **kwargs):
        super().__init__(dataset, batch_sampler=batch_sampler, **kwargs)

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)


def _sum_over_ranks(tallies: list[StageTally], device) -> list[StageTally]:
    """Element-wise sums across ranks (times: the slowest rank); on `device`, since NCCL reduces no CPU tensor."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return tallies
    keys = [k for k in StageTally.__dataclass_fields__ if k not in ("steps", "seconds")]
    sums = torch.tensor([[float(getattr(t, k)) for k in keys] for t in tallies], dtype=torch.float64, device=device)
    times = torch.tensor([t.seconds for t in tallies], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(sums)
    torch.distributed.all_reduce(times, op=torch.distributed.ReduceOp.MAX)
    out = []
    for t, row, sec in zip(tallies, sums.tolist(), times.tolist()):
        values = {k: (v if k == "loss_sum" else int(v)) for k, v in zip(keys, row)}
        out.append(StageTally(steps=t.steps, seconds=sec, **values))
    return out


def _total_over_ranks(count: int, device) -> int:
    """`count` summed over ranks (on `device`, as `_sum_over_ranks`)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return count
    total = torch.tensor([count], dtype=torch.int64, device=device)
    torch.distributed.all_reduce(total)
    return int(total)


def print_report(report: dict) -> None:
    """The run report as a short table."""
    cols = [
        "stage",
        "optimizer_steps",
        "wall_seconds",
        "samples_per_second",
        "visual_tokens_in",
        "visual_tokens_out",
        "visual_tokens_over_layers",
        "compression_ratio",
        "mean_loss",
    ]
    heads = ["stage", "steps", "time s", "samples/s", "vis in", "vis out", "#Tokens", "CR", "loss"]
    print(
        f"scheme {report['scheme']}: {report['total_optimizer_steps']} optimizer steps, "
        f"{report['train_seconds']} s training, average CR {report['average_compression_ratio']}, "
        f"{report['failed_samples']} failed samples"
    )
    print(format_table([[r[c] for c in cols] for r in report["stages"]], heads))


# where a family's projector sits in its inner model: LLaVA's, or Qwen-VL's 2x2 merger at the end of its tower
PROJECTORS = ("multi_modal_projector", "visual.merger")


def _has_submodule(module, path: str) -> bool:
    try:
        module.get_submodule(path)
    except AttributeError:
        return False
    return True


def set_trainable(model, phase: str, train_vision_towers: bool = False) -> dict:
    """Freeze per phase: pretrain trains the projector; finetune the projector and the language model.

    The vision towers stay frozen (as in LLaVA-1.5 and Video-LLaVA) unless `train_vision_towers`.
    Returns the trainable parameter count per part.
    """
    inner = model.model
    parts = {"projector": [inner.get_submodule(next(p for p in PROJECTORS if _has_submodule(inner, p)))]}
    if phase == "finetune":
        parts["language_model"] = [inner.language_model, model.lm_head]
    towers = [getattr(inner, n) for n in ("vision_tower", "image_tower", "video_tower", "visual") if hasattr(inner, n)]
    if train_vision_towers:
        parts["vision_towers"] = towers
    model.requires_grad_(False)
    counts = {}
    for name, modules in parts.items():
        for m in modules:
            m.requires_grad_(True)
        counts[name] = sum(p.numel() for m in modules for p in m.parameters())
    return counts


# LoRA on the decoder's attention and MLP projections (LLaVA's choice); the projector trains in full.
LORA_TARGETS = r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


def add_lora(model, lora):
    """Wrap `model` with LoRA adapters (`peft`) on the language model; the projector stays fully trainable."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ValueError("lora.r > 0 needs peft: pip install 'llavolta[lora]'") from None
    towers = {n for n, p in model.named_parameters() if p.requires_grad and "_tower" in n}
    model = get_peft_model(
        model,
        LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=LORA_TARGETS,
            modules_to_save=["multi_modal_projector"],
        ),
    )
    for name, param in model.named_parameters():  # keep towers trainable if the config asked for it
        if any(name.endswith(t) for t in towers):
            param.requires_grad_(True)
    return model


def run_training(
    config,
    model,
    tokenizer,
    train_dataset,
    data_collator,
    sampler_factory=None,
    resume: str | None = None,
    callbacks=(),
) -> dict:
    """Train `model` per `config` (a TrainConfig) and its scheme; save it, write and print the run report."""
    from transformers import TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    started = time.perf_counter()
    scheme = config.scheme_obj()
    num_layers = model.config.text_config.num_hidden_layers
    if config.scheme_reference_layers:
        scheme = scheme.for_depth(num_layers, config.scheme_reference_layers)
    scheme.check_fits(num_layers)
    record_template(model.config, config.template)  # the checkpoint answers with the template it learned
    trainable = set_trainable(model, config.phase, config.model.train_vision_towers)
    if config.lora.r:
        model = add_lora(model, config.lora)
        trainable = {"lora_and_projector": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    os.makedirs(config.output_dir, exist_ok=True)
    init_process_group(config.collective_timeout)
    o = config.optim
    args = TrainingArguments(
        output_dir=config.output_dir,
        per_device_train_batch_size=o.per_device_batch_size,
        gradient_accumulation_steps=o.grad_accum,
        learning_rate=config.learning_rate,
        weight_decay=o.weight_decay,
        warmup_steps=o.warmup_ratio,
        lr_scheduler_type=o.scheduler,
        num_train_epochs=o.epochs,
        max_steps=o.max_steps,
        max_grad_norm=o.max_grad_norm,
        logging_steps=config.logging_steps,
        save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or 500,
        save_total_limit=config.save_total_limit,
        bf16=config.precision == "bf16",
        gradient_checkpointing=config.gradient_checkpointing,
        deepspeed=config.deepspeed_config(),
        seed=config.seed,
        report_to=[],
        remove_unused_columns=False,
        dataloader_num_workers=config.data.num_workers,
        use_cpu=not torch.cuda.is_available(),
        ddp_timeout=config.collective_timeout,
    )
    trainer = StagedTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        data_collator=data_collator,
        processing_class=tokenizer,
        scheme=scheme,
        num_layers=num_layers,
        max_failure_share=config.data.max_failure_share,
        sampler_factory=sampler_factory,
        callbacks=list(callbacks),
        zero_stage=config.zero_stage(),
        step_log=config.step_log,
    )
    if resume == "auto":
        resume = get_last_checkpoint(config.output_dir)
    trainer.train(resume_from_checkpoint=resume)
    trainer.log_parameters()
    if config.lora.r:  # save a merged model: it loads like any other checkpoint, no peft needed downstream
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        enable_compression(merged, scheme.final_spec)
        if trainer.is_world_process_zero():
            merged.save_pretrained(config.output_dir)
            tokenizer.save_pretrained(config.output_dir)
    else:
        trainer.save_model(config.output_dir)
    report = trainer.report(time.perf_counter() - started)
    report.update(trainable_parameters=trainable, resumed_from=resume, config=config.to_dict())
    if trainer.is_world_process_zero():
        with open(os.path.join(config.output_dir, f"{config.report_name}.json"), "w") as f:
            json.dump(report, f, indent=2)
        print_report(report)
    return report
