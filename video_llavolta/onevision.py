"""The LLaVA-OneVision family: configs (the real 7B shape of llava-onevision-qwen2-7b-ov-hf, tiny ones), the
loader of local checkpoints in that layout, frame preprocessing, prompts and its `ModelFamily` record.

Frames are processed as transformers' LLaVA-OneVision processors do (a plain resize to the tower's square size,
PIL bicubic on the uint8 frame, /255, OpenAI CLIP mean/std), without torchvision; prompts come from the
tokenizer's own chat template, a `<video>` expanding to frames × (tokens per frame) + 1 (the newline) ids.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch
from PIL import Image
from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig
from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

from image_llavolta.checkpoint import load_model, read_config, stored_compression
from image_llavolta.compression import FROM_CONFIG, SpecArgument, check_spec_argument, enable_compression
from image_llavolta.configs import tiny_decoder_fields
from image_llavolta.conversation import tokenize_prompt
from image_llavolta.family import ModelFamily, synthetic_ids
from image_llavolta.processing import normalize

from .configs import DEFAULT_FRAMES, FRAMES_KEY, num_frames
from .models.llava_onevision import LlavaOnevisionLlavoltaForConditionalGeneration, build_model, frame_tokens

# Qwen2-7B-Instruct as the llava-hf port ships it (151646 <image>, 151647 <video>)
QWEN2_7B = dict(
    vocab_size=152128,
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    max_position_embeddings=32768,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    bos_token_id=151643,
    eos_token_id=151645,
    tie_word_embeddings=False,
)
# SigLIP so400m/14 at 384 px without its pooling head: 27 × 27 = 729 tokens per image or tile
SIGLIP_SO400M = dict(
    hidden_size=1152,
    intermediate_size=4304,
    num_hidden_layers=26,
    num_attention_heads=16,
    image_size=384,
    patch_size=14,
    vision_use_head=False,
)


def onevision_7b_config() -> LlavaOnevisionConfig:
    """LLaVA-OneVision-7B: SigLIP at 384 px (729 tokens per tile, 196 per frame), Qwen2-7B, anyres_max_9."""
    return LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**SIGLIP_SO400M),
        text_config=Qwen2Config(**QWEN2_7B),
        image_token_index=151646,
        video_token_index=151647,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )


def tiny_onevision_config(
    layers: int = 4,
    hidden: int = 64,
    vocab_size: int = 96,
    image_size: int = 28,
    patch_size: int = 4,
    aspect_ratio: str = "anyres_max_9",
) -> LlavaOnevisionConfig:
    """A tiny LLaVA-OneVision: a 7×7-patch SigLIP tower (16 tokens per frame), a Qwen2 decoder, 1×1..2×2 tiles.

    <image> and <video> are the last two vocabulary ids; pads with 0, BOS 1, EOS 2.
    """
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        vision_use_head=False,
    )
    text = Qwen2Config(**tiny_decoder_fields(layers, hidden, vocab_size), tie_word_embeddings=False)
    tiles = [[image_size * h, image_size * w] for h in (1, 2) for w in (1, 2)]
    return LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=vocab_size - 2,
        video_token_index=vocab_size - 1,
        image_grid_pinpoints=tiles,
        vision_aspect_ratio=aspect_ratio,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )


def video_placeholder(config: LlavaOnevisionConfig, frames: int) -> dict[str, tuple[int, int]]:
    """`<video>` → (token id, ids one video of `frames` frames takes: its frames' tokens and one newline)."""
    return {"<video>": (config.video_token_id, frames * frame_tokens(config) + 1)}


def process_frames(frames: np.ndarray, size: int = 384) -> torch.Tensor:
    """Video frames (T x H x W x 3 uint8) to (T, 3, size, size): PIL bicubic resize, /255, CLIP normalization."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"frames must be uint8 T x H x W x 3, got {frames.dtype} {frames.shape}")
    resized = [np.asarray(Image.fromarray(f).resize((size, size), Image.Resampling.BICUBIC)) for f in frames]
    video = torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).float() / 255.0  # (T, 3, size, size)
    return normalize(video)


def user_message(text: str) -> dict:
    """A user turn in the chat-template form: one video part per `<video>` in the text, then the text."""
    parts = [{"type": "video"}] * text.count("<video>")
    return {"role": "user", "content": [*parts, {"type": "text", "text": text.replace("<video>", "").strip()}]}


def video_prompt(tokenizer, question: str) -> str:
    """A one-turn prompt with one video before `question`, through the tokenizer's chat template, ready for the
    answer; a `question` holding `<video>` itself (a benchmark's prompt) places it instead."""
    text = question if "<video>" in question else "<video>\n" + question
    return tokenizer.apply_chat_template([user_message(text)], add_generation_prompt=True, tokenize=False)


def encode_video_sample(tokenizer, config: LlavaOnevisionConfig, prompt: str, frames: np.ndarray) -> dict:
    """One sample of a prompt holding one `<video>`: `input_ids` (list) with its placeholders, and its pixels
    `pixel_values_videos` (1, T, 3, S, S), as `video_llavolta.inputs.encode_sample` gives them."""
    if prompt.count("<video>") != 1:
        raise ValueError(f"the prompt has {prompt.count('<video>')} <video> placeholders; one video is given")
    pixels = process_frames(frames, size=config.vision_config.image_size)
    ids = tokenize_prompt(tokenizer, prompt, video_placeholder(config, len(pixels)))
    return {"input_ids": ids, "pixel_values_videos": pixels[None]}


def load_pretrained(
    path: str | os.PathLike, compression: SpecArgument = FROM_CONFIG, **kwargs
) -> LlavaOnevisionLlavoltaForConditionalGeneration:
    """Load a local LLaVA-OneVision directory (the llava-hf layout or the toolkit's own), strictly, compressed."""
    config = read_config(path)
    if config.model_type != "llava_onevision":
        raise ValueError(f"{path}: model_type {config.model_type!r} is not 'llava_onevision'")
    if check_spec_argument(compression) is FROM_CONFIG:
        compression = stored_compression(path, config)
    model, _, _ = load_model(LlavaOnevisionLlavoltaForConditionalGeneration, path, config, **kwargs)
    return enable_compression(model, compression)


def _inputs(config, batch: int = 1, text_tokens: int = 64, seed: int = 0) -> dict:
    """Text, one video of the configured frame count, text per sample."""
    g = torch.Generator().manual_seed(seed)
    frames = num_frames(config)
    ids = synthetic_ids(config, batch, text_tokens, *video_placeholder(config, frames)["<video>"], g)
    size = config.vision_config.image_size
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values_videos": torch.randn(batch, frames, 3, size, size, generator=g),
    }


def siglip_tower_flops(vision_config, images: int) -> int:
    """FLOPs of a SigLIP tower without its pooling head on `images` images (patch tokens only, no CLS)."""
    d = vision_config.hidden_size
    tokens = (vision_config.image_size // vision_config.patch_size) ** 2
    channels = getattr(vision_config, "num_channels", 3)
    patch_embedding = 2 * images * tokens * channels * vision_config.patch_size**2 * d
    per_layer = (
        2 * images * tokens * 4 * d * d  # q, k, v, out
        + 2 * 2 * images * tokens * tokens * d  # QKᵀ, AV
        + 2 * images * tokens * 2 * d * vision_config.intermediate_size  # fc1, fc2
    )
    return patch_embedding + vision_config.num_hidden_layers * per_layer


def tower_images(config, inputs: Mapping) -> int:
    """Images the SigLIP tower encodes: every video frame, and per image its base and used tiles (as
    `get_image_features` counts them: tiles only for an image alone in its sample)."""
    count = 0
    if (videos := inputs.get("pixel_values_videos")) is not None:
        count += videos.shape[0] * videos.shape[1]
    if inputs.get("pixel_values") is not None:
        sizes, per_sample = inputs.get("image_sizes"), inputs.get("batch_num_images")
        alone = [True] * len(sizes) if per_sample is None else [n == 1 for n in per_sample.tolist() for _ in range(n)]
        tile = config.vision_config.image_size
        count += sum(
            image_size_to_num_patches(s, config.image_grid_pinpoints, tile) if a else 1 for s, a in zip(sizes, alone)
        )
    return count


def _vision_flops(config, inputs: Mapping) -> int:
    """The SigLIP tower on every image tile and every video frame."""
    return siglip_tower_flops(config.vision_config, tower_images(config, inputs))


def _projector_rows(config, inputs: Mapping) -> int:
    """The projector runs on every patch of every tower image, before the frames' 2×2 pooling."""
    grid = config.vision_config.image_size // config.vision_config.patch_size
    return tower_images(config, inputs) * grid * grid


def _tiny(layers: int, hidden: int, image_size: int, patch_size: int, seed: int = 0, num_frames: int = DEFAULT_FRAMES):
    config = tiny_onevision_config(layers=layers, hidden=hidden, image_size=image_size, patch_size=patch_size)
    setattr(config, FRAMES_KEY, num_frames)
    return build_model(config, seed=seed)


LLAVA_ONEVISION = ModelFamily(
    name="LLaVA-OneVision",
    model_type="llava_onevision",
    load_pretrained=load_pretrained,
    tiny_model=_tiny,
    synthetic_inputs=_inputs,
    vision_flops=_vision_flops,
    image_size=384,  # SigLIP so400m/14 at 384 px: 729 tokens per tile, 196 per frame after the 2×2 pooling
    tiny_options=("num_frames",),
    projector_rows=_projector_rows,
)
