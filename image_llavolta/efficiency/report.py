"""The efficiency report: the stock model and compression settings side by side, in one run, on one batch.

Per setting: visual tokens (in, out, and the tables' #Tokens = Σ over layers), CR (Eq. 3), prefill FLOPs counted
analytically and by the DeepSpeed flops profiler (cross-checked), time to first token, decode tokens/s and peak
memory (`measure` says how each is measured). JSON plus a table shaped like the paper's Table 5 (#Tokens, CR,
latency, TFLOPs).

FLOPs cover the whole model (vision encoders + projector + decoder + LM head), split into those parts. The
analytic count (`flops`) counts the matrix products, attention over the full query×key matrix ("full", as SDPA
computes it with a mask and as DeepSpeed counts it). The profiler's "FLOPs" add the elementwise work it sees
(activations, LayerNorm); its MACs cover matrix products only, so 2·MACs is the like-for-like figure and the two
are cross-checked (`rel_diff` fields).

Command line: `add_arguments(parser)` and `run(args, families)`, where `families` maps model types to
`ModelFamily` values; `python -m image_llavolta.efficiency` measures LLaVA, `llavolta efficiency` every family.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Mapping

import torch

from ..commands import command_main
from ..compression import FROM_CONFIG, GRAMMAR, parse_spec
from ..family import LLAVA, ModelFamily, family_named, find_family
from ..generation import spec_argument
from ..jsonio import write_json
from ..tables import format_table
from .flops import PAPER_LAYERS, PAPER_TABLE5, PAPER_VISUAL_TOKENS, analytic_flops, paper_7b_flops
from .measure import (
    Setting,
    accounting,
    decode_tokens_per_second,
    memory_method,
    peak_memory_bytes,
    profiled_flops,
    time_to_first_token,
    timing_rounds,
)

DEFAULT_SPECS = ("none", "2,8", "2,2", "16,8", "16,2")  # the paper's Table 5
IMAGE_FAMILIES = {LLAVA.model_type: LLAVA}  # what `python -m image_llavolta.efficiency` measures


def setting_label(spec: Setting) -> str:
    """'stock', 'K=2,S=8' or 'K=2,S=8,fastv'."""
    return "stock" if spec is None else spec.label()


def _rel_diff(measured: float, reference: float) -> float:
    return (measured - reference) / reference if reference else math.inf


def paper_table5_check(rows: list[dict], num_layers: int, visual_per_sample: list[int]) -> dict:
    """Compare #Tokens and CR with the paper's Table 5 when the model has its shape (N=32, 576 tokens, batch 1)."""
    if num_layers != PAPER_LAYERS or visual_per_sample != [PAPER_VISUAL_TOKENS]:
        return {
            "applicable": False,
            "reason": f"Table 5 needs N={PAPER_LAYERS} layers and one sample of {PAPER_VISUAL_TOKENS} visual "
            f"tokens; this run has N={num_layers}, visual tokens per sample {visual_per_sample}",
        }
    checked = []
    for row in rows:
        key = None if row["layer"] is None else (row["layer"], row["stride"])
        if key not in PAPER_TABLE5:
            continue
        tokens, cr_percent, tflops, latency = PAPER_TABLE5[key]
        checked.append(
            {
                "setting": row["setting"],
                "paper_tokens": tokens,
                "tokens": row["tokens_over_layers"],
                "paper_cr_percent": cr_percent,
                "cr_percent": round(100 * row["compression_ratio"]),
                "match": tokens == row["tokens_over_layers"] and cr_percent == round(100 * row["compression_ratio"]),
                "paper_tflops": tflops,
                "paper_latency_ms": latency,
            }
        )
    return {"applicable": True, "rows": checked, "all_match": all(r["match"] for r in checked)}


def _count(family, model, inputs, spec, label, profile) -> dict:
    """A setting's row before timing: token accounting, FLOPs and peak memory."""
    stats = accounting(model, inputs, spec)
    analytic = analytic_flops(family, model, inputs, stats)
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
        "flops_analytic_causal": analytic_flops(family, model, inputs, stats, attention="causal")["total"],
    }
    if profile:
        measured = profiled_flops(model, inputs, spec)
        row["flops_profiler"], row["macs_profiler"] = measured["flops"], measured["macs"]
        row["flops_rel_diff"] = _rel_diff(measured["flops"]["total"], analytic["total"])
        row["two_macs_rel_diff"] = _rel_diff(2 * measured["macs"]["total"], analytic["total"])
    row["peak_memory_mb"] = peak_memory_bytes(model, inputs, spec) / 2**20
    return row


def efficiency_report(
    family: ModelFamily,
    model,
    inputs: dict,
    settings: list[Setting],
    repeats: int = 5,
    warmup: int = 2,
    new_tokens: int = 16,
    profile: bool = True,
    seed: int = 0,
) -> dict:
    """Measure every setting on one batch; return the report (the module note and `measure` say what is measured).

    `model` is a compressed model of `family` (`enable_compression`); `inputs` are model inputs (ids, attention
    mask, pixels), e.g. `family.synthetic_inputs`; `settings` lists None (stock) or specs. `repeats=0` skips
    the timings, `profile=False` the DeepSpeed profiler.
    """
    if not settings:
        raise ValueError("settings is empty: give None (stock) and/or CompressionSpec values")
    if repeats < 0 or warmup < 0:
        raise ValueError(f"repeats and warmup must be >= 0, got repeats={repeats}, warmup={warmup}")
    if not hasattr(model, "compression_spec"):
        raise ValueError(
            f"{type(model).__name__} is not a compressed model: call enable_compression(model, None) first"
        )
    labels = [setting_label(s) for s in settings]
    if len(set(labels)) != len(labels):
        raise ValueError(f"settings repeat: {labels}")
    device = inputs["input_ids"].device
    num_layers = model.config.get_text_config(decoder=True).num_hidden_layers
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            rows = [_count(family, model, inputs, spec, label, profile) for spec, label in zip(settings, labels)]
            # the model's own count: placeholders a family keeps in place (newlines) are not visual tokens
            visual_per_sample = accounting(model, inputs, None).visual_tokens_in.tolist()
            jobs = {
                label: (
                    lambda spec=spec: {
                        "ttft": time_to_first_token(model, inputs, spec),
                        "decode": decode_tokens_per_second(model, inputs, spec, new_tokens),
                    }
                )
                for spec, label in zip(settings, labels)
            }
            timed = timing_rounds(jobs, repeats, warmup, seed)
    finally:
        model.train(was_training)
    for row in rows:
        times = timed[row["setting"]]
        row["ttft_ms"] = 1000 * statistics.median(times["ttft"]) if repeats else None
        row["decode_tokens_per_s"] = statistics.median(times["decode"]) if repeats else None

    ids = inputs["input_ids"]
    text = model.config.get_text_config(decoder=True)
    return {
        "model": {
            "family": family.name,
            "class": type(model).__name__,
            "num_layers": num_layers,
            "hidden_size": text.hidden_size,
            "vision_hidden_size": model.config.vision_config.hidden_size,
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "device": str(device),
            "attn_implementation": text._attn_implementation,
        },
        "inputs": {
            "batch": ids.shape[0],
            "sequence_length": ids.shape[1],
            "visual_tokens_per_sample": visual_per_sample,
            **{k: list(v.shape) for k, v in inputs.items() if k.startswith("pixel_values")},
        },
        "method": {
            "repeats": repeats,
            "warmup": warmup,
            "new_tokens": new_tokens,
            "threads": torch.get_num_threads(),
            "prefill": "forward with use_cache=True, logits_to_keep=1 (as generate's first step); stock = the "
            "stock transformers class's forward",
            "flops": "whole model (vision encoders + projector + decoder + LM head); analytic: matrix products, 2 "
            "per multiply-add, attention over the full query×key matrix; profiler: DeepSpeed FlopsProfiler",
            "ttft": f"median of {repeats} prefill forwards + argmax after {warmup} warm-up rounds, settings "
            "interleaved",
            "decode": f"greedy generate of {new_tokens} tokens: (new_tokens - 1) / (last token time - first token "
            "time), per sequence, median over the same rounds",
            "memory": memory_method(device),
        },
        "exact_columns": (
            "visual tokens, #Tokens and CR follow the paper's definitions exactly (#Tokens = Σ over "
            "layers of visual tokens, CR = Eq. 3); FLOPs, TTFT, decode rate and memory depend on the "
            "model's widths, the prompt and the machine"
        ),
        "rows": rows,
        "paper_table5": paper_table5_check(rows, num_layers, visual_per_sample),
    }


# ---- printing ----------------------------------------------------------------------------------------------------


def _flops_unit(value: float) -> tuple[str, float]:
    for unit, scale in (("TFLOPs", 1e12), ("GFLOPs", 1e9), ("MFLOPs", 1e6)):
        if value >= scale:
            return unit, scale
    return "FLOPs", 1.0


def format_report(report: dict) -> str:
    """The report as text: a table shaped like the paper's Table 5 plus the measured columns, then the checks."""
    rows = report["rows"]
    unit, scale = _flops_unit(max(r["flops_analytic"]["total"] for r in rows))
    m, inp = report["model"], report["inputs"]
    title = (
        f"{m['class']}: N={m['num_layers']} layers, hidden {m['hidden_size']}, {m['dtype']} on {m['device']}; "
        f"batch {inp['batch']} × {inp['sequence_length']} tokens, visual per sample "
        f"{inp['visual_tokens_per_sample']}"
    )
    profiled = "flops_profiler" in rows[0]
    headers = ["setting", "vis in", "vis out", "#Tokens", "CR", f"{unit} (an.)"]
    headers += [f"{unit} (DS)", "Δ", "Δ 2·MAC"] if profiled else []
    headers += ["TTFT ms", "dec tok/s", "peak MB"]
    body = []
    for r in rows:
        line = [
            r["setting"],
            r["visual_tokens_in"],
            r["visual_tokens_out"],
            r["tokens_over_layers"],
            f"{100 * r['compression_ratio']:.0f}%",
            f"{r['flops_analytic']['total'] / scale:.4g}",
        ]
        if profiled:
            line += [
                f"{r['flops_profiler']['total'] / scale:.4g}",
                f"{100 * r['flops_rel_diff']:+.2f}%",
                f"{100 * r['two_macs_rel_diff']:+.3f}%",
            ]
        line += [
            None if r["ttft_ms"] is None else f"{r['ttft_ms']:.2f}",
            None if r["decode_tokens_per_s"] is None else f"{r['decode_tokens_per_s']:.1f}",
            f"{r['peak_memory_mb']:.2f}",
        ]
        body.append(line)
    lines = [format_table(body, headers, title=title), "Exact (paper's formulas): " + report["exact_columns"]]
    check = report["paper_table5"]
    if check["applicable"]:
        lines.append(
            "Paper Table 5 (#Tokens, CR): "
            + "; ".join(
                f"{r['setting']} {r['tokens']}/{r['paper_tokens']} {r['cr_percent']}%/{r['paper_cr_percent']}% "
                f"{'ok' if r['match'] else 'MISMATCH'}"
                for r in check["rows"]
            )
        )
    else:
        lines.append("Paper Table 5 comparison: not applicable (" + check["reason"] + ")")
    if "paper_7b" in report:
        p = report["paper_7b"]
        names = list(p["paper_tflops"])
        body = [["paper", *(f"{p['paper_tflops'][n]:.2f}" for n in names), None, None]]
        body += [
            [
                name,
                *(f"{c['tflops'][n]:.2f}" for n in names),
                c["fitted_text_tokens"],
                f"{100 * c['fitted_max_rel_error']:.1f}%",
            ]
            for name, c in p["conventions"].items()
        ]
        lines.append(
            "\n"
            + format_table(
                body,
                ["convention", *names, "fit: text tokens", "max err"],
                title=f"LLaVA-1.5-7B analytic TFLOPs (one image, {p['text_tokens']} text "
                "tokens) vs the paper's TFLOPs column:",
            )
        )
    return "\n".join(lines)


# ---- the command line --------------------------------------------------------------------------------------------

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The report's options: the model (tiny or a checkpoint), the settings, the batch and the measurement."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--tiny", action="store_true", help="random-initialised tiny model (no weights needed)")
    source.add_argument(
        "--checkpoint", help="local Hugging Face-format checkpoint directory (its config says the family)"
    )
    parser.add_argument(
        "--family", metavar="MODEL_TYPE", help=f"--tiny: the model family, by model_type (default {LLAVA.model_type})"
    )
    parser.add_argument(
        "--video",
        dest="family",
        action="store_const",
        const="video_llava",
        help="--tiny: a Video-LLaVA model (one video per sample); short for --family video_llava",
    )
    parser.add_argument(
        "--layers", type=int, default=PAPER_LAYERS, help="--tiny: decoder layers (default: the paper's 32)"
    )
    parser.add_argument("--hidden", type=int, default=64, help="--tiny: decoder hidden size")
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="--tiny: pixels (default: the real model's, e.g. 336 for LLaVA-1.5 → 576 tokens as in "
        "the paper, 224 for Video-LLaVA)",
    )
    parser.add_argument("--patch-size", type=int, default=14, help="--tiny: ViT patch size")
    parser.add_argument("--frames", type=int, default=None, help="--tiny, video families: frames per video (default 8)")
    parser.add_argument(
        "--specs",
        nargs="+",
        type=spec_argument,
        default=[parse_spec(s) for s in DEFAULT_SPECS],
        metavar="SPEC",
        help=f"settings, each {GRAMMAR} (default: {' '.join(DEFAULT_SPECS)})",
    )
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--text-tokens", type=int, default=64, help="text tokens per prompt around the visual ones")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (0 skips TTFT and decode timing)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--new-tokens", type=int, default=16, help="tokens generated to time decoding")
    parser.add_argument("--no-profile", action="store_true", help="skip the DeepSpeed flops profiler")
    parser.add_argument(
        "--paper-7b",
        action="store_true",
        help="also compare analytic 7B TFLOPs with the paper's Table 5 column (configs only, no weights)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--dtype",
        choices=sorted(_DTYPES),
        default=None,
        help="default: float32 for --tiny, the checkpoint's own otherwise",
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="JSON report path")


def _pick_family(args, families: Mapping[str, ModelFamily]) -> ModelFamily:
    """The family the options name: a checkpoint's config says it, --tiny takes --family (default LLaVA)."""
    if args.checkpoint and args.family is not None:
        raise ValueError("--family / --video go with --tiny (a checkpoint's config says what it is)")
    try:
        if args.checkpoint:
            return find_family(args.checkpoint, families)
        return family_named(args.family or LLAVA.model_type, families, "--tiny --family / --video")
    except ValueError as err:
        if families is IMAGE_FAMILIES:
            raise ValueError(
                f"{err}; `python -m image_llavolta.efficiency` measures LLaVA only, "
                "`llavolta efficiency` every family of the toolkit"
            ) from None
        raise


def _model(args, family: ModelFamily):
    dtype = _DTYPES.get(args.dtype)
    if args.checkpoint:
        return family.load_pretrained(args.checkpoint, **({} if dtype is None else {"dtype": dtype}))
    options = {} if args.frames is None else {"num_frames": args.frames}
    if unknown := sorted(set(options) - set(family.tiny_options)):
        raise ValueError(f"--frames: the {family.name} family's tiny model takes no {unknown}")
    model = family.tiny_model(
        args.layers, args.hidden, args.image_size or family.image_size, args.patch_size, args.seed, **options
    )
    return model if dtype is None else model.to(dtype)


def run(args: argparse.Namespace, families: Mapping[str, ModelFamily]) -> int:
    """Build or load the model, measure every setting, print the table and write the JSON."""
    family = _pick_family(args, families)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = _model(args, family).to(args.device).eval()
    settings = [model.resolve_compression(s) if s is FROM_CONFIG else s for s in args.specs]
    inputs = family.synthetic_inputs(model.config, args.batch, args.text_tokens, args.seed)
    param_dtype = next(model.parameters()).dtype
    inputs = {k: v.to(args.device, param_dtype if v.is_floating_point() else v.dtype) for k, v in inputs.items()}
    report = efficiency_report(
        family,
        model,
        inputs,
        settings,
        repeats=args.repeats,
        warmup=args.warmup,
        new_tokens=args.new_tokens,
        profile=not args.no_profile,
        seed=args.seed,
    )
    if args.paper_7b:
        report["paper_7b"] = paper_7b_flops(args.text_tokens)
    print(format_report(report))
    if args.out:
        write_json(args.out, report)
        print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None, families: Mapping[str, ModelFamily] | None = None) -> int:
    """`python -m image_llavolta.efficiency`: the LLaVA family unless `families` are given."""
    families = IMAGE_FAMILIES if families is None else families
    return command_main(
        add_arguments, lambda args: run(args, families), "python -m image_llavolta.efficiency", __doc__
    )(argv)
