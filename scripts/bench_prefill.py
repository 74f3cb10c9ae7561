"""Stock vs compressed prefill, side by side in one run: measured speedup against the FLOP-count ideal.

A Video-LLaVA model with a Llama decoder (hidden 1024, 8 layers) prefills 8 frames × 257 visual tokens plus 75
text tokens, fp32 on CPU. Video features are precomputed and handed to every setting alike
(`mm_encoder_outputs`), so the timings are the language model's. Measured by `image_llavolta.efficiency.measure`:
settings interleaved round by round, the median of the rounds (the speedup: of the paired ratios stock/setting),
peak tensor memory of one prefill.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from transformers import CLIPVisionConfig, LlamaConfig, VideoLlavaConfig
from transformers.modeling_outputs import BaseModelOutputWithPooling

from image_llavolta.compression import CompressionSpec
from image_llavolta.efficiency.flops import compressed_length, language_model_flops
from image_llavolta.efficiency.measure import (
    accounting,
    paired_speedup,
    peak_memory_bytes,
    prefill,
    time_to_first_token,
    timing_rounds,
)
from image_llavolta.tables import format_table
from video_llavolta.configs import frame_tokens, num_frames
from video_llavolta.families import VIDEO_LLAVA
from video_llavolta.models.video_llava import build_model

TEXT_TOKENS = 75
SETTINGS = {
    "stock": None,
    "K=1,S=8": CompressionSpec(1, 8),
    "K=4,S=2": CompressionSpec(4, 2),
    "no-op S=1": CompressionSpec(4, 1),
}


def build(seed: int = 0):
    """The benchmark model and one prefill's inputs (ids, attention mask, precomputed video features)."""
    text = LlamaConfig(
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=8,
        num_attention_heads=16,
        num_key_value_heads=16,
        vocab_size=32064,
        max_position_embeddings=4096,
    )
    vision = CLIPVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2, image_size=224, patch_size=14
    )
    config = VideoLlavaConfig(vision_config=vision, text_config=text, video_token_index=32001)
    model = build_model(config, seed=seed).eval()
    inputs = VIDEO_LLAVA.synthetic_inputs(config, batch=1, text_tokens=TEXT_TOKENS, seed=seed)
    del inputs["pixel_values_videos"]
    features = torch.randn(num_frames(config), frame_tokens(config), text.hidden_size)
    inputs["mm_encoder_outputs"] = {"video": BaseModelOutputWithPooling(pooler_output=features)}
    return model, inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, inputs = build()
    with torch.no_grad():
        reference = prefill(model, inputs, None).logits
        assert torch.equal(prefill(model, inputs, SETTINGS["no-op S=1"]).logits, reference), (
            "a no-op spec must give the stock logits"
        )
        jobs = {
            name: (lambda spec=spec: {"ms": 1000 * time_to_first_token(model, inputs, spec)})
            for name, spec in SETTINGS.items()
        }
        times = timing_rounds(jobs, args.rounds, args.warmup)
        stats = {name: accounting(model, inputs, spec) for name, spec in SETTINGS.items()}
        memory = {name: peak_memory_bytes(model, inputs, spec) / 2**20 for name, spec in SETTINGS.items()}

    config = model.config
    stock_flops = language_model_flops(config, inputs, stats["stock"], attention="causal")
    rows, speedups = [], {}
    for name in SETTINGS:
        ideal = stock_flops / language_model_flops(config, inputs, stats[name], attention="causal")
        speedups[name] = paired_speedup(times["stock"]["ms"], times[name]["ms"])
        rows.append(
            [
                name,
                compressed_length(inputs, stats[name]),
                f"{statistics.median(times[name]['ms']):.1f}",
                f"{speedups[name]:.2f}",
                f"{ideal:.2f}",
                f"{speedups[name] / ideal:.2f}",
                f"{memory[name]:.1f}",
            ]
        )
    text = config.text_config
    print(
        format_table(
            rows,
            ["setting", "tokens>K", "ms", "speedup", "ideal", "ratio", "peak MB"],
            title=f"\nprefill of {inputs['input_ids'].shape[1]} tokens ({num_frames(config)}×"
            f"{frame_tokens(config)} visual), Llama hidden {text.hidden_size}, "
            f"{text.num_hidden_layers} layers, fp32, {args.threads} threads, median of "
            f"{args.rounds} rounds; peak MB = tensor memory of one prefill",
        )
    )
    print(
        f"no-op overhead over stock: {100 * (1 / speedups['no-op S=1'] - 1):+.1f}%  (target <= +3%); "
        f"compressed ratio target >= 0.85"
    )


if __name__ == "__main__":
    main()
