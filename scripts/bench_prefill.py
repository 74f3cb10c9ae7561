"""Stock vs compressed prefill, side by side in one run: measured speedup against the FLOP-count ideal.

`--family video_llava` (default): a Video-LLaVA model with a Llama decoder (hidden 1024, 8 layers) prefills 8 frames
× 257 visual tokens plus 75 text tokens. `--family qwen2_vl` / `qwen2_5_vl`: the same size of Qwen2-style decoder
(GQA, M-RoPE) prefills a video of 8 temporal patches × 196 tokens (grid 8 × 28 × 28, one segment each) between its
vision start and end tokens, plus text. fp32 on CPU. Visual features are precomputed and handed to every setting
alike (`mm_encoder_outputs`), so the timings are the language model's. Measured by
`image_llavolta.efficiency.measure`: settings interleaved round by round, the median of the rounds (the speedup: of
the paired ratios stock/setting), peak tensor memory of one prefill.
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
from video_llavolta.models import qwen_vl
from video_llavolta.models.video_llava import build_model

TEXT_TOKENS = 75
SETTINGS = {
    "stock": None,
    "K=1,S=8": CompressionSpec(1, 8),
    "K=4,S=2": CompressionSpec(4, 2),
    "no-op S=1": CompressionSpec(4, 1),
}
DECODER = dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16)
QWEN_GRID = (8, 28, 28)  # temporal patches x patch rows x patch columns: 8 segments of 14 x 14 = 196 tokens


def build_video_llava(seed: int = 0):
    """The Video-LLaVA benchmark model, one prefill's inputs (precomputed video features) and its description."""
    text = LlamaConfig(**DECODER, num_key_value_heads=16, vocab_size=32064, max_position_embeddings=4096)
    vision = CLIPVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2, image_size=224, patch_size=14
    )
    config = VideoLlavaConfig(vision_config=vision, text_config=text, video_token_index=32001)
    model = build_model(config, seed=seed).eval()
    inputs = VIDEO_LLAVA.synthetic_inputs(config, batch=1, text_tokens=TEXT_TOKENS, seed=seed)
    del inputs["pixel_values_videos"]
    features = torch.randn(num_frames(config), frame_tokens(config), text.hidden_size)
    inputs["mm_encoder_outputs"] = {"video": BaseModelOutputWithPooling(pooler_output=features)}
    return model, inputs, f"{num_frames(config)}×{frame_tokens(config)} visual, Llama"


def build_qwen(model_type: str):
    """A builder of the Qwen2-VL / Qwen2.5-VL benchmark model (see the module note)."""

    def build(seed: int = 0):
        config = qwen_vl.tiny_config(
            model_type,
            layers=DECODER["num_hidden_layers"],
            hidden=DECODER["hidden_size"],
            vocab=32064,
            intermediate_size=DECODER["intermediate_size"],
            num_attention_heads=DECODER["num_attention_heads"],
            num_key_value_heads=4,
        )
        model = qwen_vl.build_model(config, seed=seed).eval()
        t, h, w = QWEN_GRID
        visual = t * h * w // 4
        g = torch.Generator().manual_seed(seed)
        before, after = TEXT_TOKENS // 2, TEXT_TOKENS - TEXT_TOKENS // 2
        ids = torch.randint(3, 32000, (1, before + visual + after), generator=g)
        ids[0, before - 1], ids[0, before + visual] = config.vision_start_token_id, config.vision_end_token_id
        ids[0, before : before + visual] = config.video_token_id
        features = torch.randn(visual, DECODER["hidden_size"], generator=g)
        inputs = {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "mm_token_type_ids": qwen_vl.token_types(config, ids),
            "video_grid_thw": torch.tensor([QWEN_GRID]),
            "mm_encoder_outputs": {"video": BaseModelOutputWithPooling(pooler_output=(features,))},
        }
        return model, inputs, f"{t}×{h * w // 4} visual (temporal patches), Qwen2-style"

    return build


BUILDERS = {
    "video_llava": build_video_llava,
    "qwen2_vl": build_qwen("qwen2_vl"),
    "qwen2_5_vl": build_qwen("qwen2_5_vl"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--family", choices=sorted(BUILDERS), default="video_llava")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, inputs, described = BUILDERS[args.family]()
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
            title=f"\n{args.family}: prefill of {inputs['input_ids'].shape[1]} tokens ({described} hidden "
            f"{text.hidden_size}, "
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
