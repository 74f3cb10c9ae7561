"""GPU readiness check: every GPU-only path of the compressor, side by side in one run, one table and one JSON.

On CUDA: LLaVA (576 visual tokens per image) and Video-LLaVA (8 frames × 257) layouts on a decoder of the 7B's
widths (hidden 4096, 32 heads, MLP 11008, vocabulary 32064) and 8 layers, bf16, random weights:

- parity: compressed logits under flash_attention_2 and sdpa against eager, left and right padding, stock
  rows as the control; a KV-cached greedy decode against recomputing every step without a cache;
- speed: prefill (time to first token) of stock vs the compressed stages of the four-stage scheme
  (`SCHEME`, K scaled to the model's depth), as measured speedup and its share of the FLOP-ideal speedup, decode
  tokens/s of the compressed cache vs stock, one training step (forward + backward, gradient checkpointing) per
  stage of the scheme;
- memory: peak tensor memory of each prefill and training step (`torch.cuda.max_memory_allocated`).

Without CUDA it says so and runs the same checks on a tiny fp32 model on the CPU (eager vs sdpa), reporting
the CUDA-only rows as skipped with the reason. Exit code 0 when every check that ran passed, 1 otherwise.
Timings come from `image_llavolta.efficiency.measure` (settings interleaved round by round, medians).
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch
import transformers
import yaml
from transformers.utils import is_flash_attn_2_available

from image_llavolta.commands import command_main
from image_llavolta.compression import CompressionSpec, enable_compression, placeholder_ids
from image_llavolta.configs import VICUNA_7B, tiny_llava_config
from image_llavolta.efficiency.flops import analytic_flops, compressed_length
from image_llavolta.efficiency.measure import (
    accounting,
    decode_tokens_per_second,
    paired_speedup,
    peak_bytes,
    peak_memory_bytes,
    time_to_first_token,
    timing_rounds,
)
from image_llavolta.family import LLAVA
from image_llavolta.jsonio import write_json
from image_llavolta.models.llava import LlavoltaForConditionalGeneration
from image_llavolta.schedule import Scheme
from image_llavolta.tables import format_table
from video_llavolta.configs import tiny_video_llava_config
from video_llavolta.families import VIDEO_LLAVA
from video_llavolta.models.video_llava import build_model as build_video_llava

ROOT = Path(__file__).resolve().parent.parent
SCHEME = ROOT / "configs/schemes/four_wider_then_deeper.yaml"  # its stages are Table 5's (2,8), (2,2), (16,2)
REFERENCE_LAYERS = 32  # the depth the scheme's K are written for (Vicuna-7B)
REFERENCE_ATTN = "eager"
FA2 = "flash_attention_2"
NO_CUDA = "no CUDA device: bf16 kernels and flash-attn run on CUDA only"


@dataclass(frozen=True)
class Profile:
    """What one mode runs: the model's size and dtype, the attention implementations, tolerance and rounds."""

    device: str
    dtype: torch.dtype
    layers: int
    hidden: int
    text: dict  # further LlamaConfig fields of the decoder
    vocab_size: int
    image_size: dict  # layout -> pixels
    patch_size: int
    attn: tuple[str, ...]  # compared with REFERENCE_ATTN
    speed_attn: tuple[str, ...]
    tolerance: float  # max |Δ logit| / max |reference logit| over real positions
    text_tokens: tuple[int, int] = (48, 80)  # two prompts of different lengths: a padded batch
    rounds: int = 7
    warmup: int = 2
    new_tokens: int = 16  # generated to time decoding
    decode_steps: int = 4  # cached decode vs recompute
    skipped: dict = field(default_factory=dict)  # attention implementation -> why it cannot run
    threads: int | None = None  # torch CPU threads while checking (None: leave as is)


def flash_attention_missing() -> str | None:
    """Why flash-attn cannot run here, or None when it imports."""
    if not is_flash_attn_2_available():
        return "flash-attn is not installed (no wheel matching this torch and CUDA installed without a build)"
    try:
        import flash_attn  # noqa: F401  (a wheel built for another torch fails here, not in the metadata check)
    except Exception as err:  # an ABI mismatch raises OSError / ImportError / RuntimeError alike
        return f"flash-attn does not import: {type(err).__name__}: {err}"
    return None


def cuda_profile() -> Profile:
    """The 7B's decoder widths in bf16, every attention implementation this machine has."""
    attn, skipped = ("sdpa", FA2), {}
    if (missing := flash_attention_missing()) is not None:
        attn, skipped = ("sdpa",), {FA2: missing}
    text = {k: VICUNA_7B[k] for k in ("intermediate_size", "num_attention_heads", "num_key_value_heads")}
    return Profile(
        device="cuda",
        dtype=torch.bfloat16,
        layers=8,
        hidden=VICUNA_7B["hidden_size"],
        text={**text, "rms_norm_eps": VICUNA_7B["rms_norm_eps"]},
        vocab_size=VICUNA_7B["vocab_size"],
        image_size={"llava": LLAVA.image_size, "video_llava": VIDEO_LLAVA.image_size},  # 576; 8 × 257 tokens
        patch_size=14,
        attn=attn,
        speed_attn=attn,
        # bf16 keeps 8 significant bits, so logits of scale x differ between kernels by a few ulps of x (about 1e-2
        # of the largest on a 512-wide bf16 decoder on CPU); a wrong mask or shifted positions is O(1)
        tolerance=5e-2,
        rounds=7,
        warmup=2,
        new_tokens=16,
        skipped=skipped,
    )


def cpu_profile() -> Profile:
    """A tiny fp32 model (16 visual tokens per image, 8 × 17 per video), eager vs sdpa."""
    return Profile(
        device="cpu",
        dtype=torch.float32,
        layers=4,
        hidden=64,
        text={},
        vocab_size=128,
        image_size={"llava": 28, "video_llava": 28},
        patch_size=7,
        attn=("sdpa",),
        speed_attn=("sdpa",),
        tolerance=1e-4,
        rounds=1,  # CPU timings of a tiny model under test load say little: one round keeps the rows alive
        warmup=0,
        new_tokens=2,
        decode_steps=2,
        threads=1,  # at these widths more threads only add synchronisation
        skipped={FA2: NO_CUDA},
    )


# ---- models and inputs -------------------------------------------------------------------------------------------


def _llava(profile: Profile, seed: int):
    config = tiny_llava_config(
        layers=profile.layers,
        vocab_size=profile.vocab_size,
        image_size=profile.image_size["llava"],
        patch_size=profile.patch_size,
        hidden=profile.hidden,
        text=profile.text,
    )
    config.dtype = profile.dtype  # initialised in it, as from_pretrained(dtype=...) does: RoPE buffers stay fp32
    torch.manual_seed(seed)
    model = LlavoltaForConditionalGeneration._from_config(config, attn_implementation="sdpa")
    return enable_compression(model, None)


def _video_llava(profile: Profile, seed: int):
    config = tiny_video_llava_config(
        layers=profile.layers,
        vocab_size=profile.vocab_size,
        image_size=profile.image_size["video_llava"],
        patch_size=profile.patch_size,
        hidden=profile.hidden,
        text=profile.text,
    )
    config.dtype = profile.dtype  # as for LLaVA
    return build_video_llava(config, seed=seed)


LAYOUTS = {"llava": (LLAVA, _llava), "video_llava": (VIDEO_LLAVA, _video_llava)}


def build(layout: str, profile: Profile, seed: int):
    """The layout's family and its random-initialised compressed model, on the profile's device and dtype."""
    family, make = LAYOUTS[layout]
    with torch.device(profile.device):  # initialised in place: a 7B-wide decoder is slow to initialise on a CPU
        model = make(profile, seed)
    return family, model.eval()


def _to(inputs: dict, profile: Profile) -> dict:
    return {k: v.to(profile.device, profile.dtype if v.is_floating_point() else v.dtype) for k, v in inputs.items()}


def single_inputs(family, model, profile: Profile, seed: int) -> dict:
    """One unpadded prompt (the measurements' batch)."""
    return _to(family.synthetic_inputs(model.config, 1, profile.text_tokens[0], seed), profile)


def padded_inputs(family, model, profile: Profile, side: str, seed: int) -> dict:
    """Two prompts of different lengths padded on `side`, as a tokenizer pads them."""
    samples = [family.synthetic_inputs(model.config, 1, t, seed + i) for i, t in enumerate(profile.text_tokens)]
    length = max(s["input_ids"].shape[1] for s in samples)
    pad = model.config.get_text_config(decoder=True).pad_token_id
    ids = torch.full((len(samples), length), pad)
    mask = torch.zeros(len(samples), length, dtype=torch.long)
    for row, sample in enumerate(samples):
        n = sample["input_ids"].shape[1]
        span = slice(length - n, length) if side == "left" else slice(0, n)
        ids[row, span], mask[row, span] = sample["input_ids"][0], 1
    pixels = {k: torch.cat([s[k] for s in samples]) for k in samples[0] if k.startswith("pixel_values")}
    return _to({"input_ids": ids, "attention_mask": mask, **pixels}, profile)


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids as generate derives them from a padding mask."""
    return (mask.cumsum(1) - 1).clamp(min=0)


def use_attention(model, attn: str) -> None:
    """Run the decoder with `attn`; the vision tower keeps its own, so differences are the decoder's."""
    model.set_attn_implementation({"text_config": attn})


def settings(num_layers: int) -> dict[str, CompressionSpec | None]:
    """'stock' and the scheme's compressed stages with K rescaled to `num_layers`, by label."""
    scheme = load_scheme().for_depth(num_layers, REFERENCE_LAYERS)
    return {"stock": None, **{s.label(): s.spec for s in scheme.stages if s.spec is not None}}


def load_scheme() -> Scheme:
    """The four-stage scheme of `SCHEME`."""
    data = yaml.safe_load(SCHEME.read_text())
    return Scheme.from_list(data["name"], data["stages"])


# ---- checks ------------------------------------------------------------------------------------------------------


def guarded(row: dict, measure) -> dict:
    """`row` with what `measure()` returns, or failed with the error: one broken kernel must not hide the rest."""
    try:
        return {**row, **measure()}
    except Exception as err:  # whatever a kernel raises is the finding: record it and go on
        return {**row, "pass": False, "error": f"{type(err).__name__}: {err}"}


def agreement(values: torch.Tensor, reference: torch.Tensor, tolerance: float) -> dict:
    """max |Δ| and max |Δ| / max |reference| over the given positions; pass when the latter is within tolerance."""
    diff = (values.float() - reference.float()).abs().max().item()
    rel = diff / max(reference.float().abs().max().item(), 1e-30)
    return {"max_abs_diff": diff, "rel_diff": rel, "pass": math.isfinite(rel) and rel <= tolerance}


@torch.no_grad()
def _logits(model, inputs: dict, spec, attn: str):
    use_attention(model, attn)
    out = model(
        **inputs,
        position_ids=positions(inputs["attention_mask"]),
        compression=spec,
        use_cache=False,
        output_compression=True,
    )
    return out.logits, out.attention_mask.bool()  # (B, Lc, V), (B, Lc): the real positions of those logits


def _compare(model, inputs: dict, spec, attn: str, reference: torch.Tensor, real: torch.Tensor, profile) -> dict:
    logits, mask = _logits(model, inputs, spec, attn)
    if logits.shape != reference.shape or not torch.equal(mask, real):
        raise ValueError(f"logits {tuple(logits.shape)} vs {tuple(reference.shape)} or their padding differ")
    return agreement(logits[real], reference[real], profile.tolerance)


def parity_rows(layout, family, model, profile: Profile, specs: dict, seed: int) -> list[dict]:
    """Logits of each setting under each attention implementation against eager, left and right padding."""
    rows = []
    for side in ("left", "right"):
        inputs = padded_inputs(family, model, profile, side, seed)
        for label, spec in specs.items():
            reference, real = _logits(model, inputs, spec, REFERENCE_ATTN)
            for attn in profile.attn:
                row = {"layout": layout, "padding": side, "setting": label, "attn": attn, "reference": REFERENCE_ATTN}
                rows.append(guarded(row, partial(_compare, model, inputs, spec, attn, reference, real, profile)))
            rows += [
                {"layout": layout, "padding": side, "setting": label, "attn": a, "skipped": why}
                for a, why in profile.skipped.items()
            ]
    return rows


@torch.no_grad()
def decode_gap(model, inputs: dict, spec, steps: int, tolerance: float) -> dict:
    """Greedy generate with the (compressed) KV cache vs a forward without cache at every step (left padding)."""
    out = model.generate(
        **inputs,
        compression=spec,
        max_new_tokens=steps,
        min_new_tokens=steps,
        do_sample=False,
        num_beams=1,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=model.config.get_text_config(decoder=True).pad_token_id,
    )
    pixels = {k: v for k, v in inputs.items() if k.startswith("pixel_values")}
    rows, prompt = inputs["input_ids"].shape
    cached, recomputed = [], []
    for t, step_logits in enumerate(out.logits):
        mask = torch.cat([inputs["attention_mask"], inputs["attention_mask"].new_ones(rows, t)], dim=1)
        full = model(
            input_ids=out.sequences[:, : prompt + t],
            attention_mask=mask,
            position_ids=positions(mask),
            compression=spec,
            use_cache=False,
            **pixels,
        )
        cached.append(step_logits)  # (B, V): left padding, so every row's last position is real
        recomputed.append(full.logits[:, -1])
    return agreement(torch.cat(cached), torch.cat(recomputed), tolerance)


def decode_rows(layout, family, model, profile: Profile, specs: dict, seed: int) -> list[dict]:
    """Cached decode vs recompute for the first compressed setting, every attention implementation, left padding.

    Generation pads on the left: right padding would put the new tokens after padding, which the compressor
    refuses (padding in the middle of a sequence).
    """
    label, spec = next((label, spec) for label, spec in specs.items() if spec is not None)
    inputs = padded_inputs(family, model, profile, "left", seed)

    def gap(attn):
        use_attention(model, attn)
        return decode_gap(model, inputs, spec, profile.decode_steps, profile.tolerance)

    row = {"layout": layout, "padding": "left", "setting": label}
    rows = [guarded({**row, "attn": attn}, partial(gap, attn)) for attn in (REFERENCE_ATTN, *profile.attn)]
    return rows + [{**row, "attn": a, "skipped": why} for a, why in profile.skipped.items()]


@torch.no_grad()
def _timed_settings(model, inputs: dict, profile: Profile, specs: dict, flops: dict, stats: dict, seed: int) -> list:
    """The speed rows of one attention implementation: every setting timed in the same rounds."""
    jobs = {
        label: (
            lambda spec=spec: {
                "ttft": time_to_first_token(model, inputs, spec),
                "decode": decode_tokens_per_second(model, inputs, spec, profile.new_tokens),
            }
        )
        for label, spec in specs.items()
    }
    times = timing_rounds(jobs, profile.rounds, profile.warmup, seed)
    stock, rows = times["stock"], []
    for label, spec in specs.items():
        ideal = flops["stock"] / flops[label]
        speedup = paired_speedup(stock["ttft"], times[label]["ttft"])
        rows.append(
            {
                "setting": label,
                "visual_tokens_in": stats[label].tokens_in,
                "visual_tokens_out": stats[label].tokens_out,
                "tokens_after_k": compressed_length(inputs, stats[label]),
                "ttft_ms": 1000 * statistics.median(times[label]["ttft"]),
                "speedup": speedup,
                "flop_ideal_speedup": ideal,
                "share_of_ideal": speedup / ideal,
                "decode_tokens_per_s": statistics.median(times[label]["decode"]),
                "decode_speedup": paired_speedup(times[label]["decode"], stock["decode"]),
                "peak_memory_mb": peak_memory_bytes(model, inputs, spec) / 2**20,
            }
        )
    return rows


@torch.no_grad()
def speed_rows(layout, family, model, profile: Profile, specs: dict, seed: int) -> list[dict]:
    """Prefill and decode timings, FLOP-ideal speedups and prefill peak memory per setting and attention."""
    inputs = single_inputs(family, model, profile, seed)
    stats = {label: accounting(model, inputs, spec) for label, spec in specs.items()}
    # causal: the work a kernel that skips the masked half of the attention does (flash-attn, SDPA's causal kernels)
    flops = {label: analytic_flops(family, model, inputs, s, attention="causal")["total"] for label, s in stats.items()}
    rows = []
    for attn in profile.speed_attn:
        row = {"layout": layout, "attn": attn}
        try:
            use_attention(model, attn)
            rows += [{**row, **r} for r in _timed_settings(model, inputs, profile, specs, flops, stats, seed)]
        except Exception as err:  # as `guarded`: record the broken kernel, keep the other rows
            rows.append({**row, "error": f"{type(err).__name__}: {err}"})
    return rows + [{"layout": layout, "attn": a, "skipped": why} for a, why in profile.skipped.items()]


def _labels(model, inputs: dict) -> torch.Tensor:
    """Targets of every real text token (visual placeholders and padding ignored)."""
    ids = inputs["input_ids"]
    labels = ids.masked_fill(torch.isin(ids, torch.tensor(placeholder_ids(model.config), device=ids.device)), -100)
    return labels.masked_fill(inputs["attention_mask"] == 0, -100)


def training_rows(layout, family, model, profile: Profile, specs: dict, seed: int) -> list[dict]:
    """One optimisation step's forward + backward per stage of the scheme, gradient checkpointing on."""
    scheme = load_scheme().for_depth(profile.layers, REFERENCE_LAYERS)
    inputs = single_inputs(family, model, profile, seed)
    labels = _labels(model, inputs)
    device = torch.device(profile.device)
    attn = profile.speed_attn[-1]  # the fastest this machine has: flash-attn where installed
    use_attention(model, attn)

    def step(spec) -> None:
        model.zero_grad(set_to_none=True)
        model(**inputs, labels=labels, compression=spec, use_cache=False).loss.backward()

    def timed(spec) -> dict:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step(spec)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return {"ms": 1000 * (time.perf_counter() - start)}

    stages = {f"stage {i + 1}: {s.label()}": s.spec for i, s in enumerate(scheme.stages)}
    model.train()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    try:
        times = timing_rounds({k: (lambda s=s: timed(s)) for k, s in stages.items()}, profile.rounds, profile.warmup)
        memory = {}
        for name, spec in stages.items():
            model.zero_grad(set_to_none=True)
            memory[name] = peak_bytes(lambda spec=spec: step(spec), device) / 2**20
    finally:
        model.activation_checkpointing_disable()
        model.zero_grad(set_to_none=True)
        model.eval()
    uncompressed = next(k for k, s in stages.items() if s is None)
    return [
        {
            "layout": layout,
            "attn": attn,
            "stage": name,
            "setting": stages[name].label() if stages[name] else "none",
            "step_ms": statistics.median(times[name]["ms"]),
            "speedup": paired_speedup(times[uncompressed]["ms"], times[name]["ms"]),
            "peak_memory_mb": memory[name],
        }
        for name in stages
    ]


# each section's rows of one layout: (layout, family, model, profile, settings, seed) -> rows
SECTIONS = {"parity": parity_rows, "decode": decode_rows, "speed": speed_rows, "training": training_rows}


# ---- the run -----------------------------------------------------------------------------------------------------


def check(profile: Profile, seed: int = 0) -> dict:
    """Every check on both layouts; the report (JSON-ready)."""
    report = {
        "cuda": profile.device == "cuda",
        "device": torch.cuda.get_device_name() if profile.device == "cuda" else platform.processor() or "cpu",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "profile": {
            **{k: v for k, v in asdict(profile).items() if k != "dtype"},
            "dtype": str(profile.dtype).removeprefix("torch."),
            "scheme": SCHEME.name,
            "tolerance_rule": "max |Δ logit| / max |reference logit| over the real positions <= tolerance",
        },
        "parity": [],
        "decode": [],
        "speed": [],
        "training": [],
        "seconds": {},
    }
    start, threads = time.perf_counter(), torch.get_num_threads()
    torch.set_num_threads(profile.threads or threads)
    try:
        for layout in LAYOUTS:
            family, model = build(layout, profile, seed)
            specs = settings(profile.layers)
            for section, rows_of in SECTIONS.items():
                t = time.perf_counter()
                report[section] += rows_of(layout, family, model, profile, specs, seed)
                report["seconds"][f"{layout} {section}"] = round(time.perf_counter() - t, 2)
            del model
            if profile.device == "cuda":
                torch.cuda.empty_cache()
    finally:
        torch.set_num_threads(threads)
    report["seconds"]["total"] = round(time.perf_counter() - start, 2)
    checked = [r for r in report["parity"] + report["decode"] if "skipped" not in r]
    errors = [r for s in ("speed", "training") for r in report[s] if "error" in r]
    report["passed"] = bool(checked) and all(r["pass"] for r in checked) and not errors
    return report


def _f(value, spec: str):
    return None if value is None else format(value, spec)


def format_report(report: dict) -> str:
    """One table of every row (a column a row has nothing for reads '-'), then what was skipped and why."""
    rows = []
    for check, section in (("parity", "parity"), ("decode=recompute", "decode")):
        for r in report[section]:
            if "skipped" not in r:
                ok = "ok" if r["pass"] else "FAIL"
                rows.append(
                    [check, r["layout"], r["attn"], r["padding"], r["setting"], _f(r.get("rel_diff"), ".1e"), ok]
                )
    for r in report["speed"]:
        if "skipped" not in r:
            rows.append(
                ["prefill+decode", r["layout"], r["attn"], None, r["setting"], None, None]
                + [_f(r["ttft_ms"], ".2f"), _f(r["speedup"], ".2f"), _f(r["flop_ideal_speedup"], ".2f")]
                + [_f(r["share_of_ideal"], ".2f"), _f(r["decode_tokens_per_s"], ".1f")]
                + [_f(r["decode_speedup"], ".2f"), _f(r["peak_memory_mb"], ".1f")]
            )
    for r in report["training"]:
        rows.append(
            ["train step", r["layout"], r["attn"], None, r["stage"], None, None, _f(r["step_ms"], ".2f")]
            + [_f(r["speedup"], ".2f"), None, None, None, None, _f(r["peak_memory_mb"], ".1f")]
        )
    p = report["profile"]
    title = (
        f"GPU check on {report['device']} ({'CUDA' if report['cuda'] else 'no CUDA: tiny CPU model'}): decoder "
        f"hidden {p['hidden']}, {p['layers']} layers, {p['dtype']}; settings = {p['scheme']} scaled to "
        f"{p['layers']} layers; parity Δ = {p['tolerance_rule']} (tolerance {p['tolerance']:g})"
    )
    headers = ["check", "layout", "attn", "pad", "setting", "Δ rel", "ok", "ms", "speedup", "ideal", "share"]
    headers += ["dec tok/s", "dec ×", "peak MB"]
    skipped = sorted(
        {f"{r['attn']}: {r['skipped']}" for s in ("parity", "decode", "speed") for r in report[s] if "skipped" in r}
    )
    lines = [format_table(rows, headers, title=title)]
    lines += [f"skipped {line}" for line in skipped]
    lines.append(f"{'all parity and decode checks passed' if report['passed'] else 'SOME CHECKS FAILED'}; ")
    lines[-1] += f"{report['seconds']['total']:.1f} s in all"
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The check's options."""
    parser.add_argument("--out", default="runs/gpu_check.json", help="JSON report path")
    parser.add_argument("--cpu", action="store_true", help="the CPU mode even where CUDA is available")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    """Run every check in the mode this machine allows, print the table, write the JSON."""
    cuda = torch.cuda.is_available() and not args.cpu
    if not cuda:
        print(f"{NO_CUDA if not torch.cuda.is_available() else '--cpu'}: running the CPU checks on a tiny model")
    report = check(cuda_profile() if cuda else cpu_profile(), args.seed)
    print(format_report(report))
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0 if report["passed"] else 1


main = command_main(add_arguments, run, "scripts/gpu_check.py", __doc__)

if __name__ == "__main__":
    raise SystemExit(main())
