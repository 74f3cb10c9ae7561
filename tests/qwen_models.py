"""Tiny Qwen2-VL / Qwen2.5-VL batches and an independent compressed reference for the tests (no downloads)."""

from __future__ import annotations

import torch
from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration

from video_llavolta.models.qwen_vl import build_model, tiny_config

STOCK = {"qwen2_vl": Qwen2VLForConditionalGeneration, "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration}
PATCH_VALUES = 3 * 2 * 2 * 2  # channels x temporal patch x 2x2 px: one row of pixel_values per patch
MERGE = 2


def tiny_qwen(model_type="qwen2_vl", attn="sdpa", seed=0, **text_overrides):
    """A stock-behaving tiny model (the adapter class with compression off)."""
    return build_model(tiny_config(model_type, **text_overrides), attn_implementation=attn, seed=seed).eval()


def sample(config, *parts, seed=0):
    """(ids, image grids, video grids) of one sample from parts: an int n = n random text tokens, ('image', h, w)
    or ('video', t, h, w) in patches = one visual block between vision start and end tokens."""
    g = torch.Generator().manual_seed(seed)
    ids, images, videos = [], [], []
    for part in parts:
        if isinstance(part, int):
            ids += torch.randint(3, 100, (part,), generator=g).tolist()
            continue
        kind, *thw = part
        t, h, w = (1, *thw) if kind == "image" else thw
        token = config.image_token_id if kind == "image" else config.video_token_id
        ids += [config.vision_start_token_id] + [token] * (t * h * w // MERGE**2) + [config.vision_end_token_id]
        (images if kind == "image" else videos).append([t, h, w])
    return ids, images, videos


def visual_inputs(images, videos, seed=0):
    """pixel values and grids for lists of image / video grids (None where there are none)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for kind, grids in (("image", images), ("video", videos)):
        if grids:
            rows = sum(t * h * w for t, h, w in grids)
            key = "pixel_values" if kind == "image" else "pixel_values_videos"
            out[key] = torch.randn(rows, PATCH_VALUES, generator=g)
            out[f"{kind}_grid_thw"] = torch.tensor(grids)
    return out


def batch_inputs(samples, side, seed=0):
    """A padded batch of samples (from `sample`) with its pixels, and each sample's own unpadded inputs."""
    n = max(len(s[0]) for s in samples)
    ids = torch.zeros(len(samples), n, dtype=torch.long)
    mask = torch.zeros_like(ids)
    per_sample, all_images, all_videos = [], [], []
    for b, (s, images, videos) in enumerate(samples):
        sl = slice(n - len(s), n) if side == "left" else slice(0, len(s))
        ids[b, sl], mask[b, sl] = torch.tensor(s), 1
        all_images += images
        all_videos += videos
    batch = dict(input_ids=ids, attention_mask=mask, **visual_inputs(all_images, all_videos, seed))
    # each sample's pixels: the batch's rows of its images and videos, in order
    rows = {"image": 0, "video": 0}
    for s, images, videos in samples:
        own = {}
        for kind, grids in (("image", images), ("video", videos)):
            if grids:
                key = "pixel_values" if kind == "image" else "pixel_values_videos"
                count = sum(t * h * w for t, h, w in grids)
                own[key] = batch[key][rows[kind] : rows[kind] + count]
                own[f"{kind}_grid_thw"] = torch.tensor(grids)
                rows[kind] += count
        per_sample.append((s, own))
    return batch, per_sample


def type_ids(config, ids: torch.Tensor) -> torch.Tensor:
    """mm_token_type_ids written out: 1 image, 2 video, 0 text."""
    return (ids == config.image_token_id).long() + 2 * (ids == config.video_token_id).long()


def segments_of(config, ids: list[int], images, videos) -> list[list[int]]:
    """Token indices of each segment of one sample, in order: each image whole, each video's temporal patches."""
    grids = {config.image_token_id: iter(images), config.video_token_id: iter(videos)}
    segments, i = [], 0
    while i < len(ids):
        if ids[i] not in grids:
            i += 1
            continue
        t, h, w = next(grids[ids[i]])
        per = h * w // MERGE**2 if ids[i] == config.video_token_id else t * h * w // MERGE**2
        for start in range(i, i + t * h * w // MERGE**2, per):
            segments.append(list(range(start, start + per)))
        i += t * h * w // MERGE**2
    return segments


def windows(segment, stride, **_):
    """Average pooling's groups: S consecutive tokens (the last may be shorter)."""
    return [segment[w : w + stride] for w in range(0, len(segment), stride)]


@torch.no_grad()
def reference_logits(model, ids, layer, stride, groups=windows, **visual):
    """Compressed logits of ONE unpadded sample, written independently of the library: the stock forward's
    hidden_states[K] and its get_rope_index positions, pooling in Python loops (per axis floor of the mean
    position), then a separately built stock text model holding layers K+1..N."""
    config = model.config
    stock = STOCK[config.model_type]
    input_ids = torch.tensor([ids])
    types = type_ids(config, input_ids)
    out = stock.forward(
        model, input_ids=input_ids, mm_token_type_ids=types, output_hidden_states=True, use_cache=False, **visual
    )
    hidden = out.hidden_states[layer][0]
    grids = {k: visual.get(f"{k}_grid_thw") for k in ("image", "video")}
    if grids["image"] is None and grids["video"] is None:
        positions = torch.arange(len(ids)).expand(3, len(ids))
    else:
        positions, _ = model.model.get_rope_index(
            input_ids, mm_token_type_ids=types, image_grid_thw=grids["image"], video_grid_thw=grids["video"]
        )
        positions = positions[:, 0]  # (3, L)
    to_list = lambda g: [] if g is None else g.tolist()  # noqa: E731
    segments = segments_of(config, ids, to_list(grids["image"]), to_list(grids["video"]))
    starts = {s[0]: s for s in segments}
    pooled, pooled_pos, i = [], [], 0
    while i < len(ids):
        if i not in starts:
            pooled.append(hidden[i])
            pooled_pos.append(positions[:, i].tolist())
            i += 1
            continue
        for window in groups(starts[i], stride, hidden=hidden):
            pooled.append(sum(hidden[j] for j in window) / len(window))
            pooled_pos.append([sum(int(positions[a, j]) for j in window) // len(window) for a in range(3)])
        i = starts[i][-1] + 1
    text = model.model.language_model
    n = text.config.num_hidden_layers
    tail_cfg = text.config.__class__(
        **{**text.config.to_dict(), "num_hidden_layers": n - layer, "layer_types": text.config.layer_types[layer:]}
    )
    tail_cfg._attn_implementation = "eager"
    tail = type(text)(tail_cfg).eval()
    for j in range(n - layer):
        tail.layers[j].load_state_dict(text.layers[layer + j].state_dict())
    tail.norm.load_state_dict(text.norm.state_dict())
    h = tail(
        inputs_embeds=torch.stack(pooled)[None],
        position_ids=torch.tensor(pooled_pos).T[:, None],  # (3, 1, Lc)
        attention_mask=torch.ones(1, len(pooled), dtype=torch.long),
    ).last_hidden_state
    return model.lm_head(h)[0]
