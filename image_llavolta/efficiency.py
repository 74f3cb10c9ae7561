"""Efficiency report: the stock model and compression settings side by side, in one run, on one batch.

Per setting: visual tokens (in, out, and the tables' #Tokens = Σ over layers), CR (Eq. 3), prefill FLOPs counted
analytically and by the DeepSpeed flops profiler (cross-checked), time to first token, decode tokens/s and peak
memory. JSON plus a table shaped like the paper's Table 5 (#Tokens, CR, latency, TFLOPs).

What is measured:

- Prefill = the forward `generate` runs first: the whole prompt, KV cache on, logits of the last position only
  (`logits_to_keep=1`), vision tower and projector included.
- FLOPs cover the whole model (vision tower + projector + decoder + LM head), split into those parts. The
  analytic count (`image_llavolta.flops`) counts the matrix products, attention over the full query×key matrix
  ("full", as SDPA computes it with a mask and as DeepSpeed counts it). The profiler's "FLOPs" add the
  elementwise work it sees (activations, LayerNorm); its MACs cover matrix products only, so 2·MACs is the
  like-for-like figure and the two are cross-checked (`rel_diff` fields).
- TTFT: median over `repeats` prefill forwards (after `warmup`), each ending with the argmax of the first token.
  Settings run interleaved, round by round, in a shuffled order, so none always runs first.
- Decode: greedy `generate` of `new_tokens` tokens; rate = (new_tokens − 1) / (time of the last token − time of
  the first), per sequence; median over the same rounds.
- Peak memory: of one prefill, above what was allocated before it (weights and inputs excluded). CUDA:
  `torch.cuda.max_memory_allocated`. CPU: the torch CPU allocator's running total, read from
  `torch.profiler(profile_memory=True)` allocation events: tensor bytes only, not process RSS.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time

import torch

from .compression import CompressionSpec, CompressionStats, parse_spec, placeholder_ids
from .flops import prefill_flops, projector_flops, vision_tower_flops

# The paper's Table 5 (LLaVA-1.5-7B: N=32 layers, 576 visual tokens): (K, S) → (#Tokens, CR %, TFLOPs, latency ms).
PAPER_TABLE5 = {
    (2, 8): (3312, 557, 2.14, 37.9),
    (2, 2): (9792, 188, 4.77, 48.6),
    (16, 8): (10368, 178, 5.00, 51.3),
    (16, 2): (13824, 133, 6.40, 58.8),
    None: (18432, 100, 8.26, 68.5),
}
PAPER_LAYERS, PAPER_VISUAL_TOKENS = 32, 576
DEFAULT_SPECS = "none,2:8,2:2,16:8,16:2"

# Config fields of the Video-LLaVA model (saved in config.json by video_llavolta): the LanguageBind temporal branch
# and frames per video. Read as plain config fields so that this module does not import video_llavolta.
TEMPORAL_KEY, FRAMES_KEY = "video_temporal_attention", "num_frames"


def parse_specs(text: str) -> list[CompressionSpec | None]:
    """'none,2:8,16:2:fastv' → [None, CompressionSpec(2, 8), CompressionSpec(16, 2, 'fastv')] (K:S[:method])."""
    settings = []
    for item in text.split(","):
        item = item.strip().lower()
        if item in ("none", "stock"):
            settings.append(None)
            continue
        try:
            settings.append(parse_spec(item.replace(":", ",")))
        except ValueError as err:
            raise ValueError(f"--specs: each setting is 'none' or 'K:S[:method]' (e.g. 2:8), got {item!r} in "
                             f"{text!r} ({err})") from None
    if not settings:
        raise ValueError("--specs is empty")
    return settings


def setting_label(spec: CompressionSpec | None) -> str:
    """'stock', 'K=2,S=8' or 'K=2,S=8,fastv'."""
    return "stock" if spec is None else spec.label()


def _rel_diff(measured: float, reference: float) -> float:
    return (measured - reference) / reference if reference else math.inf


def _prefill(model, inputs: dict, spec, output_compression: bool = False):
    """The prefill forward generate runs first: KV cache on, logits of the last position only."""
    return model(**inputs, compression=spec, use_cache=True, logits_to_keep=1, output_compression=output_compression)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- FLOPs -------------------------------------------------------------------------------------------------------

def _compressed_length(inputs: dict, stats: CompressionStats) -> int:
    """Padded length of the decoder's sequence after pooling: every sample keeps its text, its visual tokens shrink."""
    ids = inputs["input_ids"]
    mask = inputs.get("attention_mask")
    valid = mask.sum(1) if mask is not None else torch.full((ids.shape[0],), ids.shape[1])
    kept = valid.cpu() - stats.visual_tokens_in.cpu() + stats.visual_tokens_out.cpu()
    return int(kept.max())


def analytic_flops(model, inputs: dict, stats: CompressionStats, attention: str = "full") -> dict[str, int]:
    """Analytic prefill FLOPs of `inputs` split into vision tower(s), projector and language model (with LM head).

    The batch counts at its padded shape (as it runs): every sample is `input_ids.shape[1]` long for layers
    1..K, and as long as the longest pooled sample after. `attention` is the decoder's convention (see
    `image_llavolta.flops`); the vision tower's attention is not causal and always counts in full.
    """
    config = model.config
    text = config.text_config
    batch, length = inputs["input_ids"].shape
    vision = 0
    if inputs.get("pixel_values") is not None:
        vision += vision_tower_flops(config.vision_config, inputs["pixel_values"].shape[0])
    if inputs.get("pixel_values_videos") is not None:
        videos, frames = inputs["pixel_values_videos"].shape[:2]
        temporal = frames if getattr(config, TEMPORAL_KEY, False) else 0
        vision += vision_tower_flops(config.vision_config, videos * frames, temporal_frames=temporal)
    compressing = stats.stride > 1 and stats.layer < stats.num_layers
    short = _compressed_length(inputs, stats) if compressing else length
    layer = stats.layer if compressing else text.num_hidden_layers
    language = batch * prefill_flops(text, length, short, layer, logits_tokens=1, attention=attention)
    parts = {
        "vision": vision,
        "projector": projector_flops(config, stats.tokens_in),  # one projector row per visual placeholder
        "language_model": language,
    }
    return {**parts, "total": sum(parts.values())}


def _component_modules(model) -> dict[str, list]:
    inner = model.model
    towers = [getattr(inner, n) for n in ("vision_tower", "image_tower", "video_tower") if hasattr(inner, n)]
    return {"vision": towers, "projector": [inner.multi_modal_projector],
            "language_model": [inner.language_model, model.lm_head]}


def profiled_flops(model, inputs: dict, spec) -> dict[str, dict[str, int]]:
    """FLOPs and MACs of one prefill as the DeepSpeed flops profiler counts them, total and per part.

    The profiler patches torch functions (F.linear, matmul, SDPA, conv, norms, activations) and hooks every
    module; `other` is what ran outside the named parts (the compressed pass itself: pooling has no matmul).
    """
    from deepspeed.profiling.flops_profiler.profiler import FlopsProfiler, get_module_flops, get_module_macs

    profiler = FlopsProfiler(model)
    profiler.start_profile()
    try:
        with torch.no_grad():
            _prefill(model, inputs, spec)
        result = {"flops": {}, "macs": {}}
        for name, modules in _component_modules(model).items():
            result["flops"][name] = sum(get_module_flops(m) for m in modules)
            result["macs"][name] = sum(get_module_macs(m) for m in modules)
        for key, total in (("flops", profiler.get_total_flops()), ("macs", profiler.get_total_macs())):
            result[key]["other"] = total - sum(result[key].values())
            result[key]["total"] = total
    finally:
        profiler.end_profile()
    return result


# ---- memory ------------------------------------------------------------------------------------------------------

def _cpu_peak_bytes(fn) -> int:
    """Peak bytes of CPU tensors allocated while `fn` runs, above those live before (torch profiler events)."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    stack, events = list(prof.profiler.kineto_results.experimental_event_tree()), []
    while stack:
        event = stack.pop()
        stack.extend(event.children)
        if event.tag == _EventType.Allocation and event.extra_fields.device.type == "cpu":
            events.append(event)
    if not events:
        return 0
    events.sort(key=lambda e: e.start_time_ns)
    first = events[0].extra_fields
    # the allocator's running total counts only what was allocated while profiling: start from its first value
    base = first.total_allocated - first.alloc_size
    return max(e.extra_fields.total_allocated for e in events) - base


def peak_memory_bytes(model, inputs: dict, spec) -> int:
    """Peak tensor memory of one prefill above what was allocated before it (see the module note)."""
    device = next(model.parameters()).device
    run = lambda: _prefill(model, inputs, spec)  # noqa: E731
    with torch.no_grad():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            run()
            torch.cuda.synchronize(device)
            return torch.cuda.max_memory_allocated(device) - before
        return _cpu_peak_bytes(run)


def memory_method(device: torch.device) -> str:
    """What `peak_memory_bytes` measures on `device`, for the report."""
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated during one prefill, minus memory_allocated before it"
    return ("CPU tensor bytes: peak of the torch CPU allocator's running total during one prefill, minus its value "
            "before (torch.profiler profile_memory allocation events); not process RSS")


# ---- timing ------------------------------------------------------------------------------------------------------

class _TokenClock:
    """A generate streamer that notes when each put arrives: the prompt, then every new token."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, value):
        self.times.append(time.perf_counter())

    def end(self):
        pass


def time_to_first_token(model, inputs: dict, spec) -> float:
    """Seconds of one prefill forward and the argmax that yields the first token."""
    device = inputs["input_ids"].device
    _sync(device)
    start = time.perf_counter()
    out = _prefill(model, inputs, spec)
    out.logits[:, -1].argmax(-1).tolist()  # the first token on the host, as a caller would see it
    _sync(device)
    return time.perf_counter() - start


def _pad_token_id(model) -> int:
    for source in (model.generation_config, model.config.text_config, model.config):
        value = getattr(source, "pad_token_id", None)
        if value is not None:
            return value
    return 0


def decode_tokens_per_second(model, inputs: dict, spec, new_tokens: int) -> float:
    """Greedy generate of `new_tokens` tokens; decode tokens/s per sequence after the first token."""
    if new_tokens < 2:
        raise ValueError(f"new_tokens must be >= 2 to time decoding, got {new_tokens}")
    clock = _TokenClock()
    model.generate(**inputs, compression=spec, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                   do_sample=False, num_beams=1, pad_token_id=_pad_token_id(model), streamer=clock)
    if len(clock.times) != new_tokens + 1:
        raise RuntimeError(f"generate streamed {len(clock.times) - 1} tokens, expected {new_tokens}")
    return (new_tokens - 1) / (clock.times[-1] - clock.times[1])


# ---- the report --------------------------------------------------------------------------------------------------

def paper_table5_check(rows: list[dict], num_layers: int, visual_per_sample: list[int]) -> dict:
    """Compare #Tokens and CR with the paper's Table 5 when the model has its shape (N=32, 576 tokens, batch 1)."""
    if num_layers != PAPER_LAYERS or visual_per_sample != [PAPER_VISUAL_TOKENS]:
        return {"applicable": False,
                "reason": f"Table 5 needs N={PAPER_LAYERS} layers and one sample of {PAPER_VISUAL_TOKENS} visual "
                          f"tokens; this run has N={num_layers}, visual tokens per sample {visual_per_sample}"}
    checked = []
    for row in rows:
        key = None if row["layer"] is None else (row["layer"], row["stride"])
        if key not in PAPER_TABLE5:
            continue
        tokens, cr_percent, tflops, latency = PAPER_TABLE5[key]
        checked.append({
            "setting": row["setting"], "paper_tokens": tokens, "tokens": row["tokens_over_layers"],
            "paper_cr_percent": cr_percent, "cr_percent": round(100 * row["compression_ratio"]),
            "match": tokens == row["tokens_over_layers"] and cr_percent == round(100 * row["compression_ratio"]),
            "paper_tflops": tflops, "paper_latency_ms": latency,
        })
    return {"applicable": True, "rows": checked, "all_match": all(r["match"] for r in checked)}


def _measure(model, inputs, settings, labels, repeats, warmup, new_tokens, profile, seed):
    """Counts, FLOPs and memory per setting, then the interleaved timing rounds."""
    rows = []
    with torch.no_grad():
        for spec, label in zip(settings, labels):
            stats = _prefill(model, inputs, spec, output_compression=True).compression
            analytic = analytic_flops(model, inputs, stats)
            row = {
                "setting": label,
                "layer": None if spec is None else spec.layer,
                "stride": None if spec is None else spec.stride,
                "visual_tokens_in": stats.tokens_in,
                "visual_tokens_out": stats.tokens_out,
                "tokens_over_layers": stats.tokens_over_layers,
                "compression_ratio": stats.ratio,
                "flops_analytic": analytic,
                # the work left when a kernel skips the masked half of the decoder's attention
                "flops_analytic_causal": analytic_flops(model, inputs, stats, attention="causal")["total"],
            }
            if profile:
                measured = profiled_flops(model, inputs, spec)
                row["flops_profiler"], row["macs_profiler"] = measured["flops"], measured["macs"]
                row["flops_rel_diff"] = _rel_diff(measured["flops"]["total"], analytic["total"])
                row["two_macs_rel_diff"] = _rel_diff(2 * measured["macs"]["total"], analytic["total"])
            row["peak_memory_mb"] = peak_memory_bytes(model, inputs, spec) / 2**20
            rows.append(row)

        ttft = {label: [] for label in labels}
        decode = {label: [] for label in labels}
        order = list(zip(settings, labels))
        shuffle = random.Random(seed).shuffle
        for r in range(warmup + repeats if repeats else 0):
            shuffle(order)
            for spec, label in order:
                seconds = time_to_first_token(model, inputs, spec)
                rate = decode_tokens_per_second(model, inputs, spec, new_tokens)
                if r >= warmup:
                    ttft[label].append(seconds)
                    decode[label].append(rate)
    return rows, ttft, decode


def efficiency_report(model, inputs: dict, settings: list[CompressionSpec | None], repeats: int = 5,
                      warmup: int = 2, new_tokens: int = 16, profile: bool = True, seed: int = 0) -> dict:
    """Measure every setting on one batch; return the report (see the module note for what each field means).

    `model` is a compressed LLaVA / Video-LLaVA model (`enable_compression`); `inputs` holds input_ids,
    attention_mask and pixel_values and/or pixel_values_videos; `settings` lists None (stock) or specs.
    `repeats=0` skips the timings, `profile=False` the DeepSpeed profiler.
    """
    if not settings:
        raise ValueError("settings is empty: give None (stock) and/or CompressionSpec values")
    if repeats < 0 or warmup < 0:
        raise ValueError(f"repeats and warmup must be >= 0, got repeats={repeats}, warmup={warmup}")
    if not hasattr(model, "compression_spec"):
        raise ValueError(f"{type(model).__name__} is not a compressed model: call enable_compression(model, None) first")
    device = inputs["input_ids"].device
    num_layers = model.config.text_config.num_hidden_layers
    labels = [setting_label(s) for s in settings]
    if len(set(labels)) != len(labels):
        raise ValueError(f"settings repeat: {labels}")
    was_training = model.training
    model.eval()
    try:
        rows, ttft, decode = _measure(model, inputs, settings, labels, repeats, warmup, new_tokens, profile, seed)
    finally:
        model.train(was_training)
    for row in rows:
        if repeats:
            row["ttft_ms"] = 1000 * statistics.median(ttft[row["setting"]])
            row["decode_tokens_per_s"] = statistics.median(decode[row["setting"]])
        else:
            row["ttft_ms"] = row["decode_tokens_per_s"] = None

    ids = inputs["input_ids"]
    mask = inputs.get("attention_mask")
    visual = torch.isin(ids, torch.tensor(placeholder_ids(model.config))) & (mask.bool() if mask is not None else True)
    visual_per_sample = visual.sum(1).tolist()
    return {
        "model": {
            "class": type(model).__name__,
            "num_layers": num_layers,
            "hidden_size": model.config.text_config.hidden_size,
            "vision_hidden_size": model.config.vision_config.hidden_size,
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "device": str(device),
            "attn_implementation": model.config.text_config._attn_implementation,
        },
        "inputs": {"batch": ids.shape[0], "sequence_length": ids.shape[1], "visual_tokens_per_sample": visual_per_sample,
                   "pixel_values": list(inputs["pixel_values"].shape) if inputs.get("pixel_values") is not None else None,
                   "pixel_values_videos": list(inputs["pixel_values_videos"].shape)
                   if inputs.get("pixel_values_videos") is not None else None},
        "method": {
            "repeats": repeats, "warmup": warmup, "new_tokens": new_tokens, "threads": torch.get_num_threads(),
            "prefill": "forward with use_cache=True, logits_to_keep=1 (as generate's first step)",
            "flops": "whole model (vision tower + projector + decoder + LM head); analytic: matrix products, 2 per "
                     "multiply-add, attention over the full query×key matrix; profiler: DeepSpeed FlopsProfiler",
            "ttft": f"median of {repeats} prefill forwards + argmax after {warmup} warm-up rounds, settings interleaved",
            "decode": f"greedy generate of {new_tokens} tokens: (new_tokens - 1) / (last token time - first token "
                      "time), per sequence, median over the same rounds",
            "memory": memory_method(device),
        },
        "exact_columns": ("visual tokens, #Tokens and CR follow the paper's definitions exactly (#Tokens = Σ over "
                          "layers of visual tokens, CR = Eq. 3); FLOPs, TTFT, decode rate and memory depend on the "
                          "model's widths, the prompt and the machine"),
        "rows": rows,
        "paper_table5": paper_table5_check(rows, num_layers, visual_per_sample),
    }


# ---- the paper's TFLOPs column on the real 7B shape --------------------------------------------------------------

def paper_7b_flops(text_tokens: int) -> dict:
    """Analytic TFLOPs of LLaVA-1.5-7B prefills for Table 5's settings, in each attention convention, vs the paper.

    The paper's prompt length is not stated; `text_tokens` is assumed, and for each convention the text length
    that makes the stock row equal the paper's 8.26 is fitted, with the worst relative error over the other rows.
    """
    from .compression import pooled_length
    from .configs import llava15_config

    config = llava15_config()
    text = config.text_config
    vision = vision_tower_flops(config.vision_config, 1) + projector_flops(config, PAPER_VISUAL_TOKENS)

    def tflops(key, t, attention, with_vision):
        layer, stride = key if key else (PAPER_LAYERS, 1)
        full, short = PAPER_VISUAL_TOKENS + t, pooled_length(PAPER_VISUAL_TOKENS, stride) + t
        llm = prefill_flops(text, full, short, layer, logits_tokens=1, attention=attention)
        return (llm + (vision if with_vision else 0)) / 1e12

    conventions = {}
    for attention in ("full", "causal", "none"):
        for with_vision in (False, True):
            name = f"attention={attention}" + (", with vision tower+projector" if with_vision else ", LLM only")
            rows = {setting_label(None if k is None else CompressionSpec(*k)): round(tflops(k, text_tokens, attention,
                    with_vision), 3) for k in PAPER_TABLE5}
            fit = min(range(0, 1025), key=lambda t: abs(tflops(None, t, attention, with_vision) - PAPER_TABLE5[None][2]))
            worst = max(abs(tflops(k, fit, attention, with_vision) / v[2] - 1) for k, v in PAPER_TABLE5.items())
            conventions[name] = {"tflops": rows, "fitted_text_tokens": fit, "fitted_max_rel_error": worst}
    return {"text_tokens": text_tokens,
            "paper_tflops": {setting_label(None if k is None else CompressionSpec(*k)): v[2]
                             for k, v in PAPER_TABLE5.items()},
            "conventions": conventions}


# ---- printing ----------------------------------------------------------------------------------------------------

def _flops_unit(value: float) -> tuple[str, float]:
    for unit, scale in (("TFLOPs", 1e12), ("GFLOPs", 1e9), ("MFLOPs", 1e6)):
        if value >= scale:
            return unit, scale
    return "FLOPs", 1.0


def format_table(report: dict) -> str:
    """The report as a text table shaped like the paper's Table 5, plus the measured columns."""
    rows = report["rows"]
    unit, scale = _flops_unit(max(r["flops_analytic"]["total"] for r in rows))
    m, inp = report["model"], report["inputs"]
    lines = [f"{m['class']}: N={m['num_layers']} layers, hidden {m['hidden_size']}, {m['dtype']} on {m['device']}; "
             f"batch {inp['batch']} × {inp['sequence_length']} tokens, visual per sample {inp['visual_tokens_per_sample']}"]
    profiled = "flops_profiler" in rows[0]
    w = max(11, *(len(r["setting"]) for r in rows))
    head = f"{'setting':<{w}} {'vis in':>7} {'vis out':>7} {'#Tokens':>8} {'CR':>6} {unit + ' (an.)':>14}"
    if profiled:
        head += f" {unit + ' (DS)':>14} {'Δ':>7} {'Δ 2·MAC':>8}"
    head += f" {'TTFT ms':>8} {'dec tok/s':>9} {'peak MB':>8}"
    lines += [head, "-" * len(head)]
    for r in rows:
        line = (f"{r['setting']:<{w}} {r['visual_tokens_in']:>7} {r['visual_tokens_out']:>7} "
                f"{r['tokens_over_layers']:>8} {100 * r['compression_ratio']:>5.0f}% "
                f"{r['flops_analytic']['total'] / scale:>14.4g}")
        if profiled:
            line += (f" {r['flops_profiler']['total'] / scale:>14.4g} {100 * r['flops_rel_diff']:>+6.2f}% "
                     f"{100 * r['two_macs_rel_diff']:>+7.3f}%")
        ttft = "-" if r["ttft_ms"] is None else f"{r['ttft_ms']:.2f}"
        rate = "-" if r["decode_tokens_per_s"] is None else f"{r['decode_tokens_per_s']:.1f}"
        line += f" {ttft:>8} {rate:>9} {r['peak_memory_mb']:>8.2f}"
        lines.append(line)
    lines.append("Exact (paper's formulas): " + report["exact_columns"])
    check = report["paper_table5"]
    if check["applicable"]:
        lines.append("Paper Table 5 (#Tokens, CR): " + "; ".join(
            f"{r['setting']} {r['tokens']}/{r['paper_tokens']} {r['cr_percent']}%/{r['paper_cr_percent']}% "
            f"{'ok' if r['match'] else 'MISMATCH'}" for r in check["rows"]))
    else:
        lines.append("Paper Table 5 comparison: not applicable (" + check["reason"] + ")")
    if "paper_7b" in report:
        p = report["paper_7b"]
        lines.append(f"\nLLaVA-1.5-7B analytic TFLOPs (one image, {p['text_tokens']} text tokens) vs the paper's "
                     f"TFLOPs column:")
        names = list(p["paper_tflops"])
        lines.append(f"{'convention':<55} " + " ".join(f"{n:>9}" for n in names) + "  fit: text tokens, max err")
        lines.append(f"{'paper':<55} " + " ".join(f"{p['paper_tflops'][n]:>9.2f}" for n in names))
        for name, c in p["conventions"].items():
            lines.append(f"{name:<55} " + " ".join(f"{c['tflops'][n]:>9.2f}" for n in names)
                         + f"  {c['fitted_text_tokens']:>4}, {100 * c['fitted_max_rel_error']:.1f}%")
    return "\n".join(lines)


# ---- inputs and the CLI ------------------------------------------------------------------------------------------

def synthetic_batch(model, batch: int = 1, text_tokens: int = 64, seed: int = 0) -> dict:
    """One prompt per sample: text, one image (LLaVA) or one video (Video-LLaVA), text; random ids and pixels.

    Costs do not depend on content; text ids avoid the special and placeholder ids.
    """
    config = model.config
    if text_tokens < 1:
        raise ValueError(f"text_tokens must be >= 1 (the prompt ends with text), got {text_tokens}")
    g = torch.Generator().manual_seed(seed)
    vision = config.vision_config
    size = vision.image_size
    patches = (size // vision.patch_size) ** 2
    if getattr(config, "video_token_id", None) is not None:
        frames = int(getattr(config, FRAMES_KEY, None) or 8)
        token, count = config.video_token_id, frames * (patches + 1)  # Video-LLaVA keeps each frame's CLS
        pixels = {"pixel_values_videos": torch.randn(batch, frames, 3, size, size, generator=g)}
    else:
        from .configs import image_tokens

        token, count = config.image_token_id, image_tokens(config)
        pixels = {"pixel_values": torch.randn(batch, 3, size, size, generator=g)}
    text = config.text_config
    special = {getattr(config, a, None) for a in ("image_token_id", "video_token_id")}
    special |= {getattr(text, a, None) for a in ("pad_token_id", "bos_token_id", "eos_token_id")}
    high = min(text.vocab_size, 32000)  # real vocabularies put added tokens past 32000
    before = text_tokens // 2
    ids = torch.randint(3, high, (batch, text_tokens + count), generator=g)
    for value in special - {None}:
        ids[ids == value] = 3 if value != 3 else 4
    ids[:, before:before + count] = token
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), **pixels}


def build_tiny(video: bool, layers: int, hidden: int, image_size: int, patch_size: int, frames: int, seed: int):
    """A random-initialised tiny LLaVA or Video-LLaVA (the video one through video_llavolta, imported here only)."""
    torch.manual_seed(seed)
    if video:
        from video_llavolta.configs import tiny_video_llava_config
        from video_llavolta.models.video_llava import build_model

        return build_model(tiny_video_llava_config(layers=layers, hidden=hidden, image_size=image_size,
                                                   patch_size=patch_size, num_frames=frames))
    from transformers import LlavaForConditionalGeneration

    from .compression import enable_compression
    from .configs import tiny_llava_config

    config = tiny_llava_config(layers=layers, hidden=hidden, image_size=image_size, patch_size=patch_size)
    return enable_compression(LlavaForConditionalGeneration._from_config(config, attn_implementation="sdpa"), None)


def load_checkpoint(path: str, dtype: torch.dtype | None):
    """A local LLaVA or Video-LLaVA checkpoint, loaded strictly (Video-LLaVA through video_llavolta)."""
    from .checkpoint import load_pretrained, read_config

    kwargs = {} if dtype is None else {"dtype": dtype}
    if read_config(path).model_type == "video_llava":
        from video_llavolta.checkpoint import load_pretrained as load_video

        return load_video(path, **kwargs)
    return load_pretrained(path, **kwargs)


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def main(argv: list[str] | None = None) -> dict:
    """CLI: build or load a model, run the report for each setting, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--tiny", action="store_true", help="random-initialised tiny model (no weights needed)")
    source.add_argument("--checkpoint", help="local Hugging Face-format LLaVA / Video-LLaVA directory")
    parser.add_argument("--video", action="store_true", help="with --tiny: a Video-LLaVA model (one video per sample)")
    parser.add_argument("--layers", type=int, default=PAPER_LAYERS, help="--tiny: decoder layers (default: the paper's 32)")
    parser.add_argument("--hidden", type=int, default=64, help="--tiny: decoder hidden size")
    parser.add_argument("--image-size", type=int, default=None,
                        help="--tiny: pixels (default 336 for images → 576 tokens as in the paper, 224 for video)")
    parser.add_argument("--patch-size", type=int, default=14, help="--tiny: ViT patch size")
    parser.add_argument("--frames", type=int, default=8, help="--tiny --video: frames per video")
    parser.add_argument("--specs", default=DEFAULT_SPECS, help=f"settings, 'none' or 'K:S' (default {DEFAULT_SPECS})")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--text-tokens", type=int, default=64, help="text tokens per prompt around the visual ones")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (0 skips TTFT and decode timing)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--new-tokens", type=int, default=16, help="tokens generated to time decoding")
    parser.add_argument("--no-profile", action="store_true", help="skip the DeepSpeed flops profiler")
    parser.add_argument("--paper-7b", action="store_true",
                        help="also compare analytic 7B TFLOPs with the paper's Table 5 column (configs only, no weights)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default=None,
                        help="default: float32 for --tiny, the checkpoint's own otherwise")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="JSON report path")
    args = parser.parse_args(argv)
    if args.video and not args.tiny:
        parser.error("--video goes with --tiny (a checkpoint's config says what it is)")
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = parse_specs(args.specs)
    dtype = _DTYPES.get(args.dtype)
    if args.tiny:
        image_size = args.image_size or (224 if args.video else 336)
        model = build_tiny(args.video, args.layers, args.hidden, image_size, args.patch_size, args.frames, args.seed)
        if dtype is not None:
            model = model.to(dtype)
    else:
        model = load_checkpoint(args.checkpoint, dtype)
    model = model.to(args.device).eval()
    inputs = synthetic_batch(model, args.batch, args.text_tokens, args.seed)
    param_dtype = next(model.parameters()).dtype
    inputs = {k: v.to(args.device, param_dtype if v.is_floating_point() else v.dtype) for k, v in inputs.items()}
    report = efficiency_report(model, inputs, settings, repeats=args.repeats, warmup=args.warmup,
                               new_tokens=args.new_tokens, profile=not args.no_profile, seed=args.seed)
    if args.paper_7b:
        report["paper_7b"] = paper_7b_flops(args.text_tokens)
    print(format_table(report))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
