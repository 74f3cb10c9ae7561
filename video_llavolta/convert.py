"""Convert the released Video-LLaVA checkpoint and its LanguageBind towers into a Hugging Face-format directory.

    python -m video_llavolta.convert --llm Video-LLaVA-7B --image-tower LanguageBind_Image \
        --video-tower LanguageBind_Video_merge --out Video-LLaVA-7B-llavolta [--dtype float16]

The release is three directories. The LLM folder (`config.json` with Llama and `mm_*` fields; weights `model.*`,
`lm_head.*`, `model.mm_projector.{0,2}.*`, in one file or shards listed by `*.index.json`, half precision) also
carries copies of both towers (`model.{image,video}_tower.{image,video}_tower.*`). LanguageBind_Image and
LanguageBind_Video_merge are fp32 CLIP checkpoints (`vision_model.*` plus a contrastive text side Video-LLaVA does
not use; `config.json` with a `vision_config`). Upstream never uses the embedded copies: it builds the towers late
and loads them from the LanguageBind folders. So do we:

- With tower folders, the towers come from them. The LLM folder's copies are compared with them after casting both
  to float32, with the tolerance torch.testing uses for the coarser dtype (bfloat16's for any 16-bit copy: a
  release stored in float16 may have been trained in bfloat16, and its frozen towers then carry bfloat16
  rounding); the largest difference of each tensor group is in `conversion_report.json`. A copy that differs
  beyond the tolerance, or in its keys or shapes, fails the conversion (`--allow-tower-difference` converts anyway).
- Without tower folders, the embedded copies are used, and the report says so. Their shape comes from the weights
  (width, depth, patch and image size, frames of the temporal embedding); what weights cannot tell (heads, activation,
  LayerNorm epsilon) is LanguageBind's ViT-L/14 (initialised from OpenCLIP's DataComp ViT-L/14: 64-dim heads,
  GELU, 1e-5), listed in the report as assumed.
- Tower weights with unmerged LoRA (peft's layout: `lora_A` / `lora_B` beside the base weight, or under
  `base_layer`, the encoder wrapped in `base_model.model.`) are merged into plain weights,
  W + (lora_alpha / lora_r) · B @ A, with alpha and r from the tower's config. Any other LoRA key fails the
  conversion, listing every one.
- Every other source key maps through `KEY_MAP`, is dropped for a reason in `DROPPED`, or is reported unused;
  every model weight nothing fills is missing; a shape that does not fit is mismatched, naming the file and key.
  Any of these fails the conversion, listing every key in the report (and nothing loadable is written).

Config: the Llama fields carry over (rope theta and scaling into `rope_parameters`), the vision config is the
towers' own (the video tower's shape, `hidden_act` and `layer_norm_eps` must equal the image tower's: Video-LLaVA
shares one vision config), `video_temporal_attention` and `num_frames` come from the video tower (LanguageBind's
defaults where its config omits a field), and the checkpoint records Video-LLaVA's inference recipe: the
`llava_v1` template, LanguageBind's image transform, linspace sampling of short clips. The tokenizer gets `<image>`
and `<video>` right after the LLM's vocabulary (32000 and 32001 for Vicuna, the ids the `-hf` port uses); the
embedding rows are padded to a multiple of 64. A tokenizer whose tokens would clash with those ids is refused.
Output tensors keep their dtypes unless `--dtype` casts them all.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from huggingface_hub import save_torch_state_dict
from transformers import CLIPVisionConfig, LlamaConfig, VideoLlavaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from image_llavolta.checkpoint import key_pattern
from image_llavolta.commands import command_main
from image_llavolta.configs import image_tokens
from image_llavolta.conversation import TEMPLATE_KEY
from image_llavolta.processing import PREPROCESSING_KEY

from .configs import DEFAULT_FRAMES, FRAMES_KEY, SHORT_CLIP_KEY, TEMPORAL_KEY, frame_tokens
from .models.video_llava import VideoLlavoltaForConditionalGeneration

TOWERS = ("image_tower", "video_tower")
# (source pattern, target) per source; the first matching pattern wins. Tower sources use LanguageBind's layout;
# the LLM folder's embedded copies are read in that layout too (`EMBEDDED` prefix -> "vision_model.").
KEY_MAP = {
    "llm": [
        (r"^model\.embed_tokens\.", "model.language_model.embed_tokens."),
        (r"^model\.layers\.", "model.language_model.layers."),
        (r"^model\.norm\.", "model.language_model.norm."),
        (r"^lm_head\.", "lm_head."),
        (r"^model\.mm_projector\.0\.", "model.multi_modal_projector.linear_1."),
        (r"^model\.mm_projector\.2\.", "model.multi_modal_projector.linear_2."),
    ],
    "image_tower": [(r"^vision_model\.", "model.image_tower.")],
    "video_tower": [(r"^vision_model\.", "model.video_tower.")],
}
EMBEDDED = {tower: f"model.{tower}.{tower}." for tower in TOWERS}
DROPPED = [
    (r"\.rotary_emb\.inv_freq$", "RoPE frequencies: a buffer transformers recomputes"),
    (r"(^|\.)position_ids$", "position-id buffer that transformers recomputes"),
    (
        r"^(text_model\.|text_projection\.|visual_projection\.|logit_scale$)",
        "LanguageBind's contrastive text side and projections: Video-LLaVA uses the vision transformer only",
    ),
]
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
PLACEHOLDERS = ("<image>", "<video>")
VOCAB_MULTIPLE = 64  # llava-hf pads the vocabulary after adding the placeholders
# Video-LLaVA's inference recipe: run_inference_video_qa.py and the CLI answer with conv_mode "llava_v1";
# LanguageBindImageProcessor's transform; processing_video.py's linspace over every clip, however short.
RELEASE_RECIPE = {TEMPLATE_KEY: "llava_v1", PREPROCESSING_KEY: "languagebind", SHORT_CLIP_KEY: "linspace"}
# LanguageBind's CLIPVisionConfig defaults, for fields a saved config omits (transformers writes only the fields
# that differ from them)
LANGUAGEBIND_VISION_DEFAULTS = dict(
    hidden_size=768,
    intermediate_size=3072,
    projection_dim=512,
    num_hidden_layers=12,
    num_attention_heads=12,
    num_channels=3,
    image_size=224,
    patch_size=32,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    attention_dropout=0.0,
    add_time_attn=False,
    num_frames=1,
    lora_r=2,
    lora_alpha=16,
)
# What a tower's weights cannot tell: LanguageBind's ViT-L/14 starts from OpenCLIP's DataComp ViT-L/14
ASSUMED_WITHOUT_FOLDER = dict(head_dim=64, hidden_act="gelu", layer_norm_eps=1e-5)
SHARED_VISION_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_channels",
    "image_size",
    "patch_size",
    "hidden_act",
    "layer_norm_eps",
)
LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<part>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")
PEFT_WRAPPER = ".base_model.model."  # peft's PeftModel + LoraModel around the wrapped encoder


@dataclass
class ConversionReport:
    """Where every source key went, what the towers were built from, and the missing or reshaped model keys."""

    converted: int = 0
    dropped: dict[str, list[str]] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    sources: dict[str, dict] = field(default_factory=dict)
    towers: dict[str, dict] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    tokenizer: dict | None = None

    @property
    def ok(self) -> bool:
        """No unused, missing or reshaped key."""
        return not (self.unused or self.missing or self.mismatched)

    def as_dict(self) -> dict:
        """JSON-ready summary with every key listed."""
        return {
            "converted": self.converted,
            "dropped": self.dropped,
            "unused": self.unused,
            "missing": self.missing,
            "mismatched": self.mismatched,
            "sources": self.sources,
            "towers": self.towers,
            "config": self.config,
            "tokenizer": self.tokenizer,
        }


# ---------------------------------------------------------------------------------------------------
# Reading


def read_json(path: str) -> dict:
    """A JSON file, with an error that names it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"missing {path}")
    with open(path) as f:
        return json.load(f)


def _load_file(path: str) -> dict[str, torch.Tensor]:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def read_weights(directory: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors of a checkpoint directory and the file each came from.

    With an index (`model.safetensors.index.json` / `pytorch_model.bin.index.json`) its shards, checked against
    it key by key; else every `*.safetensors` file, or every `*.bin` file.
    """
    index = next((os.path.join(directory, n) for n in INDEX_FILES if os.path.isfile(os.path.join(directory, n))), None)
    if index is not None:
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index}: no weight_map")
        files = sorted({os.path.join(directory, f) for f in weight_map.values()})
        for f in files:
            if not os.path.isfile(f):
                raise FileNotFoundError(f"{index} lists {os.path.basename(f)}, which is missing")
    else:
        files = sorted(glob.glob(os.path.join(directory, "*.safetensors"))) or sorted(
            glob.glob(os.path.join(directory, "*.bin"))
        )
        if not files:
            raise FileNotFoundError(f"{directory}: no *.safetensors or *.bin weight files")
    weights, origin = {}, {}
    for f in files:
        for key, value in _load_file(f).items():
            if key in weights:
                raise ValueError(f"{f}: key {key} is also in {origin[key]}")
            if index is not None and os.path.join(directory, weight_map.get(key, "")) != f:
                raise ValueError(
                    f"{f} holds {key}, which {index} puts "
                    + (f"in {weight_map[key]}" if key in weight_map else "nowhere")
                )
            weights[key], origin[key] = value, f
    if index is not None and (absent := sorted(set(weight_map) - set(weights))):
        raise ValueError(f"{index} lists keys that no shard holds: {absent}")
    return weights, origin


def tower_vision_config(directory: str) -> tuple[dict, list[str]]:
    """A LanguageBind folder's vision config, LanguageBind's defaults filled in; and the defaulted fields."""
    path = os.path.join(directory, "config.json")
    vision = read_json(path).get("vision_config")
    if not isinstance(vision, dict):
        raise ValueError(f"{path} has no vision_config: not a LanguageBind checkpoint")
    defaulted = sorted(k for k in LANGUAGEBIND_VISION_DEFAULTS if k not in vision)
    return {**LANGUAGEBIND_VISION_DEFAULTS, **vision}, defaulted


def vision_config_from_weights(weights: dict[str, torch.Tensor], where: str) -> tuple[dict, list[str]]:
    """A tower's vision config read off its weights (LanguageBind layout); and the fields assumed."""

    def get(key):
        if f"vision_model.{key}" not in weights:
            raise ValueError(f"{where}: the tower copy has no {key}")
        return weights[f"vision_model.{key}"]

    hidden = get("embeddings.class_embedding").shape[0]
    patch = get("embeddings.patch_embedding.weight").shape[-1]
    side = math.isqrt(get("embeddings.position_embedding.weight").shape[0] - 1)
    layers = {int(m.group(1)) for k in weights if (m := re.match(r"vision_model\.encoder\.layers\.(\d+)\.", k))}
    temporal = next((v for k, v in weights.items() if k.endswith(".temporal_embedding")), None)
    vision = dict(
        LANGUAGEBIND_VISION_DEFAULTS,
        hidden_size=hidden,
        patch_size=patch,
        image_size=side * patch,
        num_hidden_layers=len(layers),
        intermediate_size=get("encoder.layers.0.mlp.fc1.weight").shape[0],
        num_attention_heads=hidden // ASSUMED_WITHOUT_FOLDER["head_dim"],
        hidden_act=ASSUMED_WITHOUT_FOLDER["hidden_act"],
        layer_norm_eps=ASSUMED_WITHOUT_FOLDER["layer_norm_eps"],
        add_time_attn=temporal is not None,
        num_frames=DEFAULT_FRAMES if temporal is None else temporal.shape[1],
    )
    return vision, ["num_attention_heads", "hidden_act", "layer_norm_eps"] + (
        [] if temporal is not None else ["num_frames"]
    )


# ---------------------------------------------------------------------------------------------------
# LoRA


def is_lora_layout(key: str) -> bool:
    """Whether a key belongs to peft's unmerged LoRA layout."""
    return ".lora_" in key or ".base_layer." in key or PEFT_WRAPPER in key


def merge_lora(weights: dict[str, torch.Tensor], vision: dict, where: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Tower weights with peft-style LoRA merged into plain weights; the merge's summary (None without LoRA)."""
    if not any(is_lora_layout(k) for k in weights):
        return weights, None
    r, alpha = vision.get("lora_r"), vision.get("lora_alpha")
    if not r or alpha is None:
        raise ValueError(f"{where}: LoRA weights, but the config's lora_r={r!r}, lora_alpha={alpha!r}")
    scale = alpha / r
    plain = {k.replace(PEFT_WRAPPER, "."): v for k, v in weights.items()}
    pairs: dict[str, dict] = defaultdict(dict)
    unknown = []
    for key in plain:
        if (m := LORA_KEY.match(key)) is not None:
            pairs[m["module"]][m["part"]] = (key, m["adapter"])
        elif ".lora_" in key:
            unknown.append(key)
    out = {k: v for k, v in plain.items() if ".lora_" not in k and ".base_layer." not in k}
    for module, parts in sorted(pairs.items()):
        bases = [k for k in (f"{module}.base_layer.weight", f"{module}.weight") if k in plain]
        if set(parts) != {"A", "B"} or parts["A"][1] != parts["B"][1]:
            unknown += [k for k, _ in parts.values()] + bases
            continue
        a, b = plain[parts["A"][0]], plain[parts["B"][0]]
        if len(bases) != 1 or a.shape[0] != r or b.shape[1] != r or plain[bases[0]].shape != (b.shape[0], a.shape[1]):
            unknown += [parts["A"][0], parts["B"][0], *bases]
            continue
        base = plain[bases[0]]
        out[f"{module}.weight"] = (base.double() + scale * (b.double() @ a.double())).to(base.dtype)
        if f"{module}.base_layer.bias" in plain:
            out[f"{module}.bias"] = plain[f"{module}.base_layer.bias"]
    unknown += [k for k in plain if ".base_layer." in k and k.rsplit(".base_layer.", 1)[0] not in pairs]
    if unknown:
        raise ValueError(
            f"{where}: unrecognised LoRA layout ({len(unknown)} keys; expected peft's "
            "<module>.lora_A[.<adapter>].weight, <module>.lora_B[.<adapter>].weight of rank "
            f"lora_r={r} beside <module>[.base_layer].weight):\n  " + "\n  ".join(sorted(set(unknown)))
        )
    return out, {"merged_modules": len(pairs), "lora_r": r, "lora_alpha": alpha, "scale": scale}


# ---------------------------------------------------------------------------------------------------
# Embedded tower copies


def _tolerance(*dtypes: torch.dtype) -> dict:
    """torch.testing's tolerance for the coarser dtype; bfloat16's for any 16-bit copy."""
    if any(d.itemsize < 4 for d in dtypes):
        return {"dtype": "bfloat16", "rtol": 1.6e-2, "atol": 1e-5}
    return {"dtype": "float32", "rtol": 1.3e-6, "atol": 1e-5}


def _dtypes(weights: dict[str, torch.Tensor]) -> list[str]:
    return sorted({str(v.dtype).removeprefix("torch.") for v in weights.values() if v.is_floating_point()})


def compare_copies(embedded: dict[str, torch.Tensor], folder: dict[str, torch.Tensor]) -> dict:
    """The LLM folder's tower copy against the tower folder's weights: per key group, the largest difference."""
    floating = [v.dtype for v in (*embedded.values(), *folder.values()) if v.is_floating_point()]
    tol = _tolerance(*floating)
    groups: dict[str, dict] = {}
    only_llm = sorted(set(embedded) - set(folder))
    only_folder = sorted(set(folder) - set(embedded))
    shapes = []
    for key in sorted(set(embedded) & set(folder)):
        a, b = embedded[key], folder[key]
        if a.shape != b.shape:
            shapes.append(f"{key}: {tuple(a.shape)} in the LLM folder, {tuple(b.shape)} in the tower folder")
            continue
        a, b = a.float(), b.float()
        g = groups.setdefault(key_pattern(key), {"tensors": 0, "max_abs_diff": 0.0, "within_tolerance": True})
        g["tensors"] += 1
        g["max_abs_diff"] = max(g["max_abs_diff"], (a - b).abs().max().item() if a.numel() else 0.0)
        g["within_tolerance"] &= bool(torch.isclose(a, b, rtol=tol["rtol"], atol=tol["atol"]).all())
    agree = not (only_llm or only_folder or shapes) and all(g["within_tolerance"] for g in groups.values())
    return {
        "agree": agree,
        "tolerance": tol,
        "embedded_dtypes": _dtypes(embedded),
        "folder_dtypes": _dtypes(folder),
        "groups": groups,
        "only_in_llm_folder": only_llm,
        "only_in_tower_folder": only_folder,
        "shape_mismatch": shapes,
    }


def _drop(weights: dict[str, torch.Tensor], source: str, report: ConversionReport) -> dict[str, torch.Tensor]:
    """The weights without the DROPPED keys, which the report records with their reason."""
    kept = {}
    for key, value in weights.items():
        reason = next((r for p, r in DROPPED if re.search(p, key)), None)
        if reason is None:
            kept[key] = value
        else:
            report.dropped.setdefault(reason, []).append(f"{source}:{key}")
    return kept


# ---------------------------------------------------------------------------------------------------
# Config


def rope_parameters(llm: dict, path: str) -> dict:
    """transformers 5's `rope_parameters` from an original config's `rope_theta` and `rope_scaling`."""
    scaling = dict(llm.get("rope_scaling") or {})
    rope_type = scaling.pop("rope_type", scaling.pop("type", "default"))
    if rope_type not in ("default", *ROPE_INIT_FUNCTIONS):
        raise ValueError(
            f"{path}: rope_scaling type {rope_type!r} is not one transformers knows ({sorted(ROPE_INIT_FUNCTIONS)})"
        )
    return {**scaling, "rope_type": rope_type, "rope_theta": float(llm.get("rope_theta", 10000.0))}


def check_shared_vision(image: dict, video: dict, image_where: str, video_where: str) -> None:
    """The two towers share one vision config in Video-LLaVA: any difference is an error naming both sources."""
    differ = [f"{k}: {image[k]!r} vs {video[k]!r}" for k in SHARED_VISION_FIELDS if image[k] != video[k]]
    if differ:
        raise ValueError(
            f"the image tower ({image_where}) and the video tower ({video_where}) differ, but "
            "Video-LLaVA shares one vision config between them: " + "; ".join(differ)
        )


def build_config(llm: dict, image_vision: dict, video_vision: dict, llm_dir: str) -> tuple[VideoLlavaConfig, dict]:
    """The Hugging Face Video-LLaVA config for the original configs (placeholder ids appended to the vocabulary),
    and what the report says about it."""
    path = f"{llm_dir}/config.json"
    projector = llm.get("mm_projector_type", "linear")
    if projector != "mlp2x_gelu":
        raise ValueError(f"{path}: mm_projector_type {projector!r}; Video-LLaVA uses 'mlp2x_gelu'")
    if llm.get("mm_use_im_start_end"):
        raise ValueError(f"{path}: mm_use_im_start_end=true is not supported")
    if llm.get("image_aspect_ratio", "pad") != "pad":
        raise ValueError(
            f"{path}: image_aspect_ratio {llm['image_aspect_ratio']!r}; images are padded to a "
            "square as Video-LLaVA's 'pad' does, and nothing else is supported"
        )
    feature = llm.get("mm_vision_select_feature", "patch")
    strategies = {"patch": "default", "cls_patch": "full"}
    if feature not in strategies:
        raise ValueError(f"{path}: mm_vision_select_feature {feature!r} not in {sorted(strategies)}")
    vocab = llm["vocab_size"]
    padded = -(-(vocab + len(PLACEHOLDERS)) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    skip = {"architectures", "model_type", "transformers_version", "rope_parameters"}
    text_fields = set(LlamaConfig().to_dict()) - skip
    rope = rope_parameters(llm, path)
    text = LlamaConfig(
        **{**{k: v for k, v in llm.items() if k in text_fields}, "vocab_size": padded, "rope_parameters": rope}
    )
    vision_fields = set(CLIPVisionConfig().to_dict()) - skip
    vision = CLIPVisionConfig(**{k: v for k, v in image_vision.items() if k in vision_fields})
    config = VideoLlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=vocab,
        video_token_index=vocab + 1,
        vision_feature_layer=llm.get("mm_vision_select_layer", -2),
        vision_feature_select_strategy=strategies[feature],
        projector_hidden_act="gelu",
    )
    frames = int(video_vision["num_frames"])
    setattr(config, FRAMES_KEY, frames)
    setattr(config, TEMPORAL_KEY, bool(video_vision["add_time_attn"]))
    for key, value in RELEASE_RECIPE.items():
        setattr(config, key, value)
    config.image_seq_length = image_tokens(config)
    config.video_seq_length = frames * frame_tokens(config)
    carried = text_fields | {"rope_theta", "rope_scaling", "vocab_size"}
    not_carried = sorted(k for k in llm if k not in carried and not k.startswith("mm_") and k not in skip)
    return config, {
        "rope_parameters": rope,
        "vocab_size": {"original": vocab, "padded": padded},
        TEMPORAL_KEY: getattr(config, TEMPORAL_KEY),
        FRAMES_KEY: frames,
        **RELEASE_RECIPE,
        "llm_fields_not_carried": not_carried,
    }


def map_keys(
    sources: dict[str, tuple[dict[str, torch.Tensor], dict[str, str]]], report: ConversionReport
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Target state dict from the sources through KEY_MAP, and where each target came from; records unused keys."""
    out: dict[str, torch.Tensor] = {}
    provenance: dict[str, str] = {}
    for source, (weights, origin) in sources.items():
        for key, value in _drop(weights, source, report).items():
            target = next((re.sub(p, t, key, count=1) for p, t in KEY_MAP[source] if re.search(p, key)), None)
            if target is None:
                report.unused.append(f"{source}:{key}")
            elif target in out:
                raise ValueError(f"{target} is given twice ({provenance[target]} and {origin[key]}:{key})")
            else:
                out[target], provenance[target] = value, f"{origin[key]}:{key}"
    report.converted = len(out)
    return out, provenance


def extend_vocabulary(weights: dict[str, torch.Tensor], vocab_size: int) -> None:
    """Append rows for the placeholders and padding: the mean of the existing rows (their embedding is replaced
    by visual features anyway; a mean output row keeps them from dominating generation)."""
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        if key in weights:
            w = weights[key]
            extra = w.float().mean(0, keepdim=True).expand(vocab_size - w.shape[0], -1).to(w.dtype)
            weights[key] = torch.cat([w, extra])


# ---------------------------------------------------------------------------------------------------
# The conversion


def _tower(
    name: str,
    folder: str | None,
    embedded: dict[str, torch.Tensor],
    llm_dir: str,
    llm_files: list[str],
    embedded_origin: dict[str, str],
    allow_difference: bool,
) -> tuple[dict, dict, dict, str]:
    """(weights, origin, vision config, what the report says) of one tower, from its folder or the LLM's copy."""
    if folder is None:
        if not embedded:
            raise ValueError(
                f"no --{name.replace('_', '-')} folder given, and {llm_dir} holds no embedded copy of "
                f"it (no key {EMBEDDED[name]}* in {', '.join(map(os.path.basename, llm_files))})"
            )
        vision, assumed = vision_config_from_weights(embedded, f"{llm_dir} ({EMBEDDED[name]}*)")
        if name == "image_tower":
            assumed = [k for k in assumed if k != "num_frames"]  # frames are the video tower's
        return (
            embedded,
            embedded_origin,
            vision,
            {
                "weights_from": f"{llm_dir} (embedded copy: no tower folder given)",
                "config_from": "the weights' shapes",
                "assumed": {k: vision[k] for k in assumed},
                "dtypes": _dtypes(embedded),
            },
        )
    vision, defaulted = tower_vision_config(folder)
    weights, origin = read_weights(folder)
    weights, lora = merge_lora(weights, vision, folder)
    if lora:  # merged keys come from the file that held their base weight
        plain = {k.replace(PEFT_WRAPPER, "."): f for k, f in origin.items()}
        origin = {k: plain.get(k) or plain[re.sub(r"\.(weight|bias)$", r".base_layer.\1", k)] for k in weights}
    info = {
        "weights_from": folder,
        "config_from": f"{folder}/config.json",
        "defaulted": defaulted,
        "dtypes": _dtypes(weights),
        "lora": lora,
    }
    if embedded:
        comparison = compare_copies(_strip_buffers(embedded), _strip_buffers(weights))
        info["embedded_copy"] = {"in": llm_dir, "used": False, **comparison}
        if not comparison["agree"] and not allow_difference:
            bad = [
                f"{p} (max |diff| {g['max_abs_diff']:.3g})"
                for p, g in comparison["groups"].items()
                if not g["within_tolerance"]
            ]
            raise ValueError(
                f"the {name} copy in {llm_dir} differs from {folder} beyond the {comparison['tolerance']['dtype']} "
                f"tolerance (rtol {comparison['tolerance']['rtol']}, atol {comparison['tolerance']['atol']}): "
                + "; ".join(
                    bad
                    + comparison["shape_mismatch"]
                    + [f"only in the LLM folder: {k}" for k in comparison["only_in_llm_folder"]]
                    + [f"only in the tower folder: {k}" for k in comparison["only_in_tower_folder"]]
                )
                + ". Is it the right tower folder? --allow-tower-difference converts with the folder's weights anyway"
            )
    else:
        info["embedded_copy"] = None
    return weights, origin, vision, info


def _strip_buffers(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A tower's weights without the DROPPED keys, for comparing two copies."""
    return {k: v for k, v in weights.items() if not any(re.search(p, k) for p, _ in DROPPED)}


def convert(
    llm_dir: str,
    out_dir: str,
    image_tower_dir: str | None = None,
    video_tower_dir: str | None = None,
    dtype: torch.dtype | None = None,
    allow_tower_difference: bool = False,
) -> ConversionReport:
    """Convert the released layout into `out_dir` (config, safetensors, tokenizer with placeholders, report)."""
    llm_config = read_json(os.path.join(llm_dir, "config.json"))
    llm_weights, llm_origin = read_weights(llm_dir)
    report = ConversionReport()
    report.sources["llm"] = {
        "dir": llm_dir,
        "files": sorted(map(os.path.basename, set(llm_origin.values()))),
        "dtypes": _dtypes(llm_weights),
    }
    embedded = {
        tower: {
            "vision_model." + k[len(EMBEDDED[tower]) :]: v
            for k, v in llm_weights.items()
            if k.startswith(EMBEDDED[tower])
        }
        for tower in TOWERS
    }
    embedded_origin = {
        tower: {
            "vision_model." + k[len(EMBEDDED[tower]) :]: f
            for k, f in llm_origin.items()
            if k.startswith(EMBEDDED[tower])
        }
        for tower in TOWERS
    }
    llm_weights = {k: v for k, v in llm_weights.items() if not k.startswith(tuple(EMBEDDED.values()))}

    sources = {"llm": (llm_weights, llm_origin)}
    visions = {}
    for tower, folder in zip(TOWERS, (image_tower_dir, video_tower_dir)):
        weights, origin, visions[tower], report.towers[tower] = _tower(
            tower,
            folder,
            embedded[tower],
            llm_dir,
            sorted(set(llm_origin.values())),
            embedded_origin[tower],
            allow_tower_difference,
        )
        sources[tower] = (weights, origin)
    where = {
        t: report.towers[t]["config_from"] + ("" if f else f" of {llm_dir}")
        for t, f in zip(TOWERS, (image_tower_dir, video_tower_dir))
    }
    check_shared_vision(visions["image_tower"], visions["video_tower"], where["image_tower"], where["video_tower"])
    config, report.config = build_config(llm_config, visions["image_tower"], visions["video_tower"], llm_dir)

    weights, provenance = map_keys(sources, report)
    extend_vocabulary(weights, config.text_config.vocab_size)
    with torch.device("meta"):
        expected = VideoLlavoltaForConditionalGeneration(config).state_dict()
    report.unused += [f"(mapped from {provenance[k]}) {k}" for k in weights if k not in expected]
    report.missing = sorted(k for k in expected if k not in weights)
    report.mismatched = [
        f"{k}: {provenance[k]} has {tuple(weights[k].shape)}, the model needs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in weights and weights[k].shape != v.shape
    ]
    os.makedirs(out_dir, exist_ok=True)
    report_path = os.path.join(out_dir, "conversion_report.json")
    if not report.ok:
        _write_report(report_path, report)
        raise ValueError(
            f"cannot convert {llm_dir} (+ {image_tower_dir}, {video_tower_dir}); every key is listed in "
            f"{report_path}\n"
            + "\n".join(
                f"  {name}: {keys}"
                for name, keys in (
                    ("unused", report.unused),
                    ("missing", report.missing),
                    ("mismatched", report.mismatched),
                )
                if keys
            )
        )
    report.tokenizer = convert_tokenizer(llm_dir, config, out_dir)
    if dtype is not None:
        weights = {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()}
    config.dtype = str(dtype or getattr(torch, llm_config.get("torch_dtype") or "float32")).removeprefix("torch.")
    report.config["output_dtypes"] = _dtypes(weights)
    config.save_pretrained(out_dir)
    save_torch_state_dict(weights, out_dir)
    _write_report(report_path, report)
    return report


def _write_report(path: str, report: ConversionReport) -> None:
    with open(path, "w") as f:
        json.dump(report.as_dict(), f, indent=1)


def convert_tokenizer(llm_dir: str, config: VideoLlavaConfig, out_dir: str) -> dict | None:
    """Write the LLM folder's tokenizer with <image> and <video> at the config's ids; None if the folder has none.

    Refused, naming the tokenizer and the tokens: a tokenizer with tokens at or beyond the LLM's vocabulary (other
    than the placeholders at their ids), or whose special tokens or vocabulary already spell a placeholder
    elsewhere.
    """
    from transformers import AddedToken, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(llm_dir)
    except (OSError, ValueError):
        return None  # weights-only source: the user supplies a tokenizer
    wanted = dict(zip(PLACEHOLDERS, (config.image_token_index, config.video_token_index)))
    vocab = tokenizer.get_vocab()
    name = next(
        (
            os.path.join(llm_dir, f)
            for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
            if os.path.isfile(os.path.join(llm_dir, f))
        ),
        llm_dir,
    )
    clashes = [
        f"{t!r} has id {i}"
        for t, i in sorted(vocab.items(), key=lambda x: x[1])
        if i >= config.image_token_index and wanted.get(t) != i
    ]
    clashes += [f"{t!r} has id {vocab[t]}, not {i}" for t, i in wanted.items() if t in vocab and vocab[t] != i]
    specials = {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
    clashes += [f"its {k} is {v!r}" for k, v in specials.items() if v in PLACEHOLDERS]
    if clashes:
        raise ValueError(
            f"{name}: the tokenizer clashes with the placeholders {wanted} (right after the LLM's "
            f"{config.image_token_index}-token vocabulary): " + "; ".join(clashes)
        )
    tokenizer.add_tokens(
        [AddedToken(t, special=True, normalized=False) for t in PLACEHOLDERS if t not in vocab], special_tokens=True
    )
    ids = dict(zip(PLACEHOLDERS, tokenizer.convert_tokens_to_ids(list(PLACEHOLDERS))))
    if ids != wanted:
        raise ValueError(f"{name}: the tokenizer gives {ids}, but the config puts the placeholders at {wanted}")
    tokenizer.save_pretrained(out_dir)
    return {"from": name, "placeholders": ids, "tokens": len(tokenizer)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The converter's options."""
    parser.add_argument("--llm", required=True, help="released Video-LLaVA LLM folder (e.g. Video-LLaVA-7B)")
    parser.add_argument("--image-tower", help="LanguageBind_Image folder (default: the LLM folder's embedded copy)")
    parser.add_argument("--video-tower", help="LanguageBind_Video_merge folder (default: the LLM folder's copy)")
    parser.add_argument("--out", required=True, help="output directory (Hugging Face format)")
    parser.add_argument(
        "--dtype",
        choices=["float16", "bfloat16", "float32"],
        default=None,
        help="cast every floating tensor (default: keep each one's dtype)",
    )
    parser.add_argument(
        "--allow-tower-difference",
        action="store_true",
        help="convert even when the LLM folder's tower copies differ from the tower folders",
    )


def run(args: argparse.Namespace) -> int:
    """Convert, then print what came from where."""
    report = convert(
        args.llm,
        args.out,
        args.image_tower,
        args.video_tower,
        dtype=getattr(torch, args.dtype) if args.dtype else None,
        allow_tower_difference=args.allow_tower_difference,
    )
    print(f"converted {report.converted} tensors into {args.out} (report: {args.out}/conversion_report.json)")
    for tower, info in report.towers.items():
        copy = info.get("embedded_copy")
        compared = (
            ""
            if not copy
            else (
                " ; embedded copy "
                + ("agrees" if copy["agree"] else "DIFFERS")
                + f" within {copy['tolerance']['dtype']} tolerance, max |diff| "
                f"{max((g['max_abs_diff'] for g in copy['groups'].values()), default=0):.3g}"
            )
        )
        print(f"  {tower}: weights from {info['weights_from']}{compared}")
    for reason, keys in report.dropped.items():
        print(f"  dropped {len(keys):5d}  {reason}")
    return 0


main = command_main(add_arguments, run, "python -m video_llavolta.convert", __doc__)

if __name__ == "__main__":
    raise SystemExit(main())
