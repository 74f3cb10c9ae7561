"""Convert an original Video-LLaVA checkpoint plus its LanguageBind towers into a Hugging Face-format directory.

The original layout is three directories: the Video-LLaVA language model (`config.json` with Llama fields and
`mm_*` fields, weights `model.*`, `lm_head.*`, `model.mm_projector.{0,2}.*`, sometimes the towers under
`model.{image,video}_tower.{image,video}_tower.*`), and the LanguageBind_Image / LanguageBind_Video(_merge)
CLIP checkpoints (`vision_model.*` plus a contrastive text side that Video-LLaVA does not use). Every source
key either maps through `KEY_MAP`, is dropped for a reason in `DROPPED`, or is reported as unused; every model
weight that nothing fills is reported as missing. Either makes the conversion fail, listing every key.

    python -m video_llavolta.convert --llm Video-LLaVA-7B --image-tower LanguageBind_Image \
        --video-tower LanguageBind_Video_merge --out Video-LLaVA-7B-llavolta
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
from dataclasses import dataclass, field

import torch
from huggingface_hub import save_torch_state_dict
from transformers import CLIPVisionConfig, LlamaConfig, VideoLlavaConfig

from image_llavolta.configs import image_tokens

from .modeling import FRAMES_KEY, TEMPORAL_KEY, VideoLlavaLanguageBindForConditionalGeneration, frame_tokens

# (source pattern, target) per source; the first matching pattern wins.
KEY_MAP = {
    "llm": [
        (r"^model\.embed_tokens\.", "model.language_model.embed_tokens."),
        (r"^model\.layers\.", "model.language_model.layers."),
        (r"^model\.norm\.", "model.language_model.norm."),
        (r"^lm_head\.", "lm_head."),
        (r"^model\.mm_projector\.0\.", "model.multi_modal_projector.linear_1."),
        (r"^model\.mm_projector\.2\.", "model.multi_modal_projector.linear_2."),
        (r"^model\.image_tower\.image_tower\.", "model.image_tower."),
        (r"^model\.video_tower\.video_tower\.", "model.video_tower."),
    ],
    "image_tower": [(r"^vision_model\.", "model.image_tower.")],
    "video_tower": [(r"^vision_model\.", "model.video_tower.")],
}
DROPPED = [
    (r"\.rotary_emb\.inv_freq$", "RoPE frequencies: a buffer transformers recomputes"),
    (r"(^|\.)position_ids$", "position-id buffer that transformers recomputes"),
    (r"^(text_model\.|text_projection\.|visual_projection\.|logit_scale$)",
     "LanguageBind's contrastive text side and projections: Video-LLaVA uses the vision transformer only"),
]
PLACEHOLDERS = ("<image>", "<video>")
VOCAB_MULTIPLE = 64  # llava-hf pads the vocabulary after adding the placeholders


@dataclass
class ConversionReport:
    """Where every source key went: converted, dropped (with the reason), unused; and the missing model keys."""

    converted: int = 0
    dropped: dict[str, list[str]] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No unused, missing or reshaped key."""
        return not (self.unused or self.missing or self.mismatched)

    def as_dict(self) -> dict:
        """JSON-ready summary with every key listed."""
        return {"converted": self.converted, "dropped": self.dropped, "unused": self.unused,
                "missing": self.missing, "mismatched": self.mismatched}


def read_weights(directory: str) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint directory (safetensors preferred, else PyTorch .bin files)."""
    from safetensors.torch import load_file

    files = sorted(glob.glob(os.path.join(directory, "*.safetensors")))
    loader = load_file
    if not files:
        files = sorted(glob.glob(os.path.join(directory, "*.bin")))
        loader = lambda f: torch.load(f, map_location="cpu", weights_only=True)  # noqa: E731
    if not files:
        raise FileNotFoundError(f"{directory}: no *.safetensors or *.bin weight files")
    weights = {}
    for f in files:
        for key, value in loader(f).items():
            if key in weights:
                raise ValueError(f"{f}: key {key} appears in more than one weight file of {directory}")
            weights[key] = value
    return weights


def read_json(path: str) -> dict:
    """A JSON file, with an error that names it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"missing {path}")
    with open(path) as f:
        return json.load(f)


def build_config(llm: dict, image_vision: dict, video_vision: dict, llm_dir: str) -> VideoLlavaConfig:
    """The Hugging Face Video-LLaVA config for the original configs (placeholder ids appended to the vocabulary)."""
    projector = llm.get("mm_projector_type", "linear")
    if projector != "mlp2x_gelu":
        raise ValueError(f"{llm_dir}/config.json: mm_projector_type {projector!r}; Video-LLaVA uses 'mlp2x_gelu'")
    if llm.get("mm_use_im_start_end"):
        raise ValueError(f"{llm_dir}/config.json: mm_use_im_start_end=true is not supported")
    feature = llm.get("mm_vision_select_feature", "patch")
    strategies = {"patch": "default", "cls_patch": "full"}
    if feature not in strategies:
        raise ValueError(f"{llm_dir}/config.json: mm_vision_select_feature {feature!r} not in {sorted(strategies)}")
    shape = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size", "patch_size")
    if any(image_vision.get(k) != video_vision.get(k) for k in shape):
        raise ValueError("image and video towers differ in shape; Video-LLaVA shares one vision config: "
                         + ", ".join(f"{k} {image_vision.get(k)} vs {video_vision.get(k)}" for k in shape))
    vocab = llm["vocab_size"]
    padded = -(-(vocab + len(PLACEHOLDERS)) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    text_fields = set(LlamaConfig().to_dict()) - {"architectures", "model_type", "transformers_version"}
    text = LlamaConfig(**{**{k: v for k, v in llm.items() if k in text_fields}, "vocab_size": padded})
    vision_fields = set(CLIPVisionConfig().to_dict()) - {"architectures", "model_type", "transformers_version"}
    vision = CLIPVisionConfig(**{k: v for k, v in image_vision.items() if k in vision_fields})
    config = VideoLlavaConfig(
        vision_config=vision, text_config=text, image_token_index=vocab, video_token_index=vocab + 1,
        vision_feature_layer=llm.get("mm_vision_select_layer", -2), vision_feature_select_strategy=strategies[feature],
        projector_hidden_act="gelu",
    )
    frames = int(video_vision.get("num_frames", 8))
    setattr(config, FRAMES_KEY, frames)
    setattr(config, TEMPORAL_KEY, bool(video_vision.get("add_time_attn", False)))
    config.image_seq_length = image_tokens(config)
    config.video_seq_length = frames * frame_tokens(config)
    return config


def map_keys(sources: dict[str, dict[str, torch.Tensor]], report: ConversionReport) -> dict[str, torch.Tensor]:
    """Target state dict from the source state dicts through KEY_MAP; records dropped and unused keys."""
    out: dict[str, torch.Tensor] = {}
    for source, weights in sources.items():
        for key, value in weights.items():
            target = next((re.sub(p, t, key, count=1) for p, t in KEY_MAP[source] if re.search(p, key)), None)
            reason = next((r for p, r in DROPPED if re.search(p, key)), None)
            if reason is not None:
                report.dropped.setdefault(reason, []).append(f"{source}:{key}")
            elif target is None:
                report.unused.append(f"{source}:{key}")
            elif target in out and not torch.equal(out[target], value):
                raise ValueError(f"{target} is given twice with different values (second time by {source}:{key})")
            else:
                out[target] = value
    report.converted = len(out)
    return out


def extend_vocabulary(weights: dict[str, torch.Tensor], vocab_size: int) -> None:
    """Append rows for the placeholders and padding: the mean of the existing rows (their embedding is replaced
    by visual features anyway; a mean output row keeps them from dominating generation)."""
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        if key in weights:
            w = weights[key]
            extra = w.float().mean(0, keepdim=True).expand(vocab_size - w.shape[0], -1).to(w.dtype)
            weights[key] = torch.cat([w, extra])


def convert(llm_dir: str, image_tower_dir: str, video_tower_dir: str, out_dir: str,
            dtype: torch.dtype | None = None) -> ConversionReport:
    """Convert the original layout into `out_dir` (config, safetensors, tokenizer with placeholders, report)."""
    llm_config = read_json(os.path.join(llm_dir, "config.json"))
    image_cfg = read_json(os.path.join(image_tower_dir, "config.json")).get("vision_config")
    video_cfg = read_json(os.path.join(video_tower_dir, "config.json")).get("vision_config")
    for d, c in ((image_tower_dir, image_cfg), (video_tower_dir, video_cfg)):
        if c is None:
            raise ValueError(f"{d}/config.json has no vision_config: not a LanguageBind checkpoint")
    config = build_config(llm_config, image_cfg, video_cfg, llm_dir)

    report = ConversionReport()
    sources = {"llm": read_weights(llm_dir), "image_tower": read_weights(image_tower_dir),
               "video_tower": read_weights(video_tower_dir)}
    weights = map_keys(sources, report)
    extend_vocabulary(weights, config.text_config.vocab_size)

    with torch.device("meta"):
        expected = VideoLlavaLanguageBindForConditionalGeneration(config).state_dict()
    report.unused += [f"(mapped) {k}" for k in weights if k not in expected]
    report.missing = sorted(k for k in expected if k not in weights)
    report.mismatched = [f"{k}: source {tuple(weights[k].shape)} vs model {tuple(v.shape)}"
                         for k, v in expected.items() if k in weights and weights[k].shape != v.shape]
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "conversion_report.json"), "w") as f:
        json.dump(report.as_dict(), f, indent=1)
    if not report.ok:
        raise ValueError(
            f"cannot convert {llm_dir} (+ {image_tower_dir}, {video_tower_dir}); every key is listed in "
            f"{out_dir}/conversion_report.json\n" + "\n".join(
                f"  {name}: {keys}" for name, keys in
                (("unused", report.unused), ("missing", report.missing), ("mismatched", report.mismatched)) if keys
            )
        )
    if dtype is not None:
        weights = {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()}
    config.save_pretrained(out_dir)
    save_torch_state_dict(weights, out_dir)
    _convert_tokenizer(llm_dir, out_dir, config)
    return report


def _convert_tokenizer(llm_dir: str, out_dir: str, config: VideoLlavaConfig) -> None:
    """Copy the tokenizer (if the source has one) with <image> and <video> added as special tokens."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(llm_dir)
    except (OSError, ValueError):
        return  # weights-only source: the user supplies a tokenizer
    tokenizer.add_tokens(list(PLACEHOLDERS), special_tokens=True)
    ids = tokenizer.convert_tokens_to_ids(list(PLACEHOLDERS))
    if ids != [config.image_token_index, config.video_token_index]:
        raise ValueError(f"{llm_dir}: the tokenizer gives {PLACEHOLDERS} ids {ids}, but the config's vocabulary "
                         f"puts them at {[config.image_token_index, config.video_token_index]}")
    tokenizer.save_pretrained(out_dir)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llm", required=True, help="original Video-LLaVA checkpoint directory")
    parser.add_argument("--image-tower", required=True, help="LanguageBind_Image directory")
    parser.add_argument("--video-tower", required=True, help="LanguageBind_Video(_merge) directory")
    parser.add_argument("--out", required=True, help="output directory (Hugging Face format)")
    parser.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default=None)
    args = parser.parse_args(argv)
    report = convert(args.llm, args.image_tower, args.video_tower, args.out,
                     dtype=getattr(torch, args.dtype) if args.dtype else None)
    print(f"converted {report.converted} tensors into {args.out}")
    for reason, keys in report.dropped.items():
        print(f"  dropped {len(keys):5d}  {reason}")


if __name__ == "__main__":
    main()
