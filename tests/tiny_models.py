"""Tiny random-initialised LLaVA / Video-LLaVA models and inputs for the tests (no downloads)."""

from __future__ import annotations

import torch
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlamaModel,
    LlavaConfig,
    LlavaForConditionalGeneration,
    VideoLlavaConfig,
    VideoLlavaForConditionalGeneration,
)

IMAGE, VIDEO, PAD = 90, 91, 0
PATCHES = 16  # 28 px / 7 px patches → 4×4; an image gives 16 tokens (CLS dropped), a frame 17 (CLS kept)
FRAMES = 8


def text_config(**overrides) -> LlamaConfig:
    cfg = dict(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=PAD,
        bos_token_id=1,
        eos_token_id=2,
    )
    cfg.update(overrides)
    return LlamaConfig(**cfg)


def vision_config() -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=28,
        patch_size=7,
        projection_dim=32,
    )


def tiny_llava(attn="sdpa", seed=0, **text_overrides) -> LlavaForConditionalGeneration:
    torch.manual_seed(seed)
    cfg = LlavaConfig(
        vision_config=vision_config(),
        text_config=text_config(**text_overrides),
        image_token_index=IMAGE,
        image_seq_length=PATCHES,
    )
    return LlavaForConditionalGeneration._from_config(cfg, attn_implementation=attn).eval()


def tiny_video_llava(attn="sdpa", seed=0, **text_overrides) -> VideoLlavaForConditionalGeneration:
    torch.manual_seed(seed)
    cfg = VideoLlavaConfig(
        vision_config=vision_config(),
        text_config=text_config(**text_overrides),
        image_token_index=IMAGE,
        video_token_index=VIDEO,
        image_seq_length=PATCHES,
        video_seq_length=FRAMES * (PATCHES + 1),
    )
    return VideoLlavaForConditionalGeneration._from_config(cfg, attn_implementation=attn).eval()


def sequence(*parts, seed=0) -> list[int]:
    """Token ids from parts: an int n = n random text tokens, 'image' or 'video' = one placeholder block."""
    g = torch.Generator().manual_seed(seed)
    ids = []
    for part in parts:
        if part == "image":
            ids += [IMAGE] * PATCHES
        elif part == "video":
            ids += [VIDEO] * (FRAMES * (PATCHES + 1))
        else:
            ids += torch.randint(3, 80, (part,), generator=g).tolist()
    return ids


def pad_batch(seqs: list[list[int]], side: str):
    """input_ids, attention_mask and generate-style position ids (cumsum of the mask) for a padded batch."""
    n = max(map(len, seqs))
    ids = torch.full((len(seqs), n), PAD)
    mask = torch.zeros(len(seqs), n, dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(n - len(s), n) if side == "left" else slice(0, len(s))
        ids[i, sl] = torch.tensor(s)
        mask[i, sl] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    return ids, mask, positions


def pixels(n, frames=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (n, 3, 28, 28) if frames is None else (n, frames, 3, 28, 28)
    return torch.randn(shape, generator=g)


def segment_lengths(model) -> dict[int, int]:
    """Tokens per segment, stated independently of the code under test: image 16, video frame 17."""
    return {IMAGE: PATCHES, VIDEO: PATCHES + 1}


def windows(segment: list[int], stride: int, **_) -> list[list[int]]:
    """Average pooling's groups: S consecutive tokens of the segment (the last window may be shorter)."""
    return [segment[w : w + stride] for w in range(0, len(segment), stride)]


@torch.no_grad()
def reference_logits(
    model, ids: list[int], layer: int, stride: int, groups=windows, attentions=False, **pixel_inputs
) -> torch.Tensor:
    """Compressed logits of ONE unpadded sample, written independently of the library.

    Stock forward up to layer K (its hidden_states[K]), pooling in plain Python loops, then a separately
    built stock LlamaModel holding layers K+1..N and the final norm, fed the pooled positions.
    `groups(segment, stride, hidden=, out=, ordinal=)` lists the token indices averaged into each slot of one
    segment, in slot order (default: average pooling's windows); `attentions` asks the stock pass for its
    attention maps (eager models only), which `groups` can read from `out`.
    """
    from transformers import LlavaForConditionalGeneration as Stock

    text = model.model.language_model
    input_ids = torch.tensor([ids])
    stock = Stock if isinstance(model, Stock) else VideoLlavaForConditionalGeneration
    out = stock.forward(
        model,
        input_ids=input_ids,
        output_hidden_states=True,
        output_attentions=attentions,
        use_cache=False,
        **pixel_inputs,
    )
    hidden = out.hidden_states[layer][0]
    lengths = segment_lengths(model)
    pooled, positions, i, ordinal = [], [], 0, 0
    while i < len(ids):
        if ids[i] not in lengths:
            pooled.append(hidden[i])
            positions.append(i)
            i += 1
            continue
        run_end = i
        while run_end < len(ids) and ids[run_end] == ids[i]:
            run_end += 1
        for seg_start in range(i, run_end, lengths[ids[i]]):
            segment = list(range(seg_start, seg_start + lengths[ids[i]]))
            for window in groups(segment, stride, hidden=hidden, out=out, ordinal=ordinal):
                pooled.append(sum(hidden[j] for j in window) / len(window))
                positions.append(sum(window) // len(window))
            ordinal += 1
        i = run_end
    n = text.config.num_hidden_layers
    tail_cfg = text.config.__class__(**{**text.config.to_dict(), "num_hidden_layers": n - layer})
    tail_cfg._attn_implementation = "eager"
    tail = LlamaModel(tail_cfg).eval()
    for j in range(n - layer):
        tail.layers[j].load_state_dict(text.layers[layer + j].state_dict())
    tail.norm.load_state_dict(text.norm.state_dict())
    h = tail(
        inputs_embeds=torch.stack(pooled)[None],
        position_ids=torch.tensor([positions]),
        attention_mask=torch.ones(1, len(pooled), dtype=torch.long),
    ).last_hidden_state
    return model.lm_head(h)[0]
