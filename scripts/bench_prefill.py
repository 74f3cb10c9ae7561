"""Stock vs compressed prefill, side by side in one run: measured speedup against the FLOP-count ideal.

A Video-LLaVA model with a Llama decoder (hidden 1024, 8 layers) prefills 8 frames × 257 visual tokens
plus ~75 text tokens, fp32 on CPU. Video features are precomputed and handed to every setting alike
(`mm_encoder_outputs`), so the timings are the language model's. Settings run interleaved, round by
round; the median is reported. Peak memory is measured for each setting in a fresh process.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time

import torch
from transformers import CLIPVisionConfig, LlamaConfig, VideoLlavaConfig, VideoLlavaForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutputWithPooling

from image_llavolta.compression import CompressionSpec, enable_compression, pooled_length
from image_llavolta.flops import prefill_flops

VIDEO_TOKEN, FRAMES, FRAME_TOKENS, TEXT_BEFORE, TEXT_AFTER = 32001, 8, 257, 40, 35
SETTINGS = {"stock": None, "K=1,S=8": CompressionSpec(1, 8), "K=4,S=2": CompressionSpec(4, 2),
            "no-op S=1": CompressionSpec(4, 1)}


def build(seed: int = 0):
    """The benchmark model and one prefill's inputs."""
    torch.manual_seed(seed)
    text = LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
                       num_key_value_heads=16, vocab_size=32064, max_position_embeddings=4096)
    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                              image_size=224, patch_size=14)
    config = VideoLlavaConfig(vision_config=vision, text_config=text, video_token_index=VIDEO_TOKEN)
    model = VideoLlavaForConditionalGeneration._from_config(config, attn_implementation="sdpa").eval()
    ids = torch.randint(3, 32000, (1, TEXT_BEFORE + FRAMES * FRAME_TOKENS + TEXT_AFTER))
    ids[0, TEXT_BEFORE:TEXT_BEFORE + FRAMES * FRAME_TOKENS] = VIDEO_TOKEN
    features = torch.randn(FRAMES, FRAME_TOKENS, text.hidden_size)
    return model, ids, features


def prefill(model, ids, features, spec):
    """One generate-style prefill (KV cache on, logits of the last position only)."""
    encoded = {"video": BaseModelOutputWithPooling(pooler_output=features)}
    if spec is None:  # pure stock transformers
        return VideoLlavaForConditionalGeneration.forward(model, input_ids=ids, mm_encoder_outputs=encoded,
                                                          use_cache=True, logits_to_keep=1)
    enable_compression(model, spec)
    return model(input_ids=ids, mm_encoder_outputs=encoded, use_cache=True, logits_to_keep=1)


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def memory_probe(name: str) -> None:
    """Print the peak RSS growth of one prefill (run in a fresh process per setting)."""
    model, ids, features = build()
    with torch.no_grad():
        prefill(model, ids[:, :TEXT_BEFORE], features[:0], None)  # warm up on the text prefix
        with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM (ru_maxrss would include the parent's)
            f.write("5")
        before = _status_mb("VmRSS")
        prefill(model, ids, features, SETTINGS[name])
    print(json.dumps({"peak_growth_mb": _status_mb("VmHWM") - before}))


# glibc keeps freed memory around, which makes RSS peaks depend on history; serving every block over 64 KiB
# by mmap (returned on free) makes the probe's RSS track live tensors, repeatable to ~0.1 MB.
PROBE_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0", "MALLOC_ARENA_MAX": "1"}


def measure_memory(name: str) -> float:
    """Peak RSS growth (MB) of one prefill with setting `name`, in a fresh process."""
    out = subprocess.run([sys.executable, __file__, "--memory-probe", name], capture_output=True, text=True,
                         check=True, env={**os.environ, **PROBE_ENV})
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_growth_mb"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        return memory_probe(args.memory_probe)

    model, ids, features = build()
    times = {name: [] for name in SETTINGS}
    order = list(SETTINGS)
    shuffle = random.Random(0).shuffle
    with torch.no_grad():
        reference = prefill(model, ids, features, None).logits
        noop = prefill(model, ids, features, SETTINGS["no-op S=1"]).logits
        assert torch.equal(noop, reference), "a no-op spec must give the stock logits"
        for r in range(args.warmup + args.rounds):
            shuffle(order)  # no setting always runs first, or right after another
            for name in order:
                start = time.perf_counter()
                prefill(model, ids, features, SETTINGS[name])
                if r >= args.warmup:
                    times[name].append(time.perf_counter() - start)

    text = model.config.text_config
    full = ids.shape[1]
    rows = []
    for name, spec in SETTINGS.items():
        layer = text.num_hidden_layers if spec is None or spec.stride == 1 else spec.layer
        stride = 1 if spec is None else spec.stride
        short = TEXT_BEFORE + TEXT_AFTER + FRAMES * pooled_length(FRAME_TOKENS, stride)
        ideal = prefill_flops(text, full, full, text.num_hidden_layers) / prefill_flops(text, full, short, layer)
        # speedup: median over rounds of the paired ratio stock/setting, both timed in the same round
        measured = statistics.median(a / b for a, b in zip(times["stock"], times[name]))
        rows.append(dict(setting=name, tokens=short, ms=1000 * statistics.median(times[name]),
                         measured=measured, ideal=ideal, ratio=measured / ideal,
                         peak_mb=measure_memory(name)))
    print(f"\nprefill of {full} tokens ({FRAMES}×{FRAME_TOKENS} visual), Llama hidden {text.hidden_size}, "
          f"{text.num_hidden_layers} layers, fp32, {args.threads} threads, median of {args.rounds} rounds")
    print(f"{'setting':<11} {'tokens>K':>8} {'ms':>8} {'speedup':>8} {'ideal':>6} {'ratio':>6} {'peak MB':>8}")
    for r in rows:
        print(f"{r['setting']:<11} {r['tokens']:>8} {r['ms']:>8.1f} {r['measured']:>8.2f} {r['ideal']:>6.2f} "
              f"{r['ratio']:>6.2f} {r['peak_mb']:>8.1f}")
    noop = next(r for r in rows if r["setting"].startswith("no-op"))
    print(f"no-op overhead over stock: {100 * (1 / noop['measured'] - 1):+.1f}%  (target <= +3%); "
          f"compressed ratio target >= 0.85")


if __name__ == "__main__":
    main()
