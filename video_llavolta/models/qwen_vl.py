"""The Qwen2-VL and Qwen2.5-VL adapters: transformers' classes with the compressor, on M-RoPE positions.

Both families encode images and videos at dynamic resolution: the vision tower merges 2x2 patches and groups
frames in temporal patches of 2, and each image or video has a (t, h, w) row in `image_grid_thw` /
`video_grid_thw`, so it gives t·h·w/4 tokens in the decoder. Segments follow that layout, per sample: one per
image and one per temporal patch of a video (h·w/4 tokens each, in the tower's raster order); the vision start
and end tokens around each block are text and keep their places.

Positions are M-RoPE's three axes (temporal, height, width) from the model's own `get_rope_index`; a pooled token
takes on each axis the floor of its window's mean (`image_llavolta.compression.pooling`), and decode steps after
a compressed prefill continue from the prompt's last position (`image_llavolta.compression.cache`).
"""

from __future__ import annotations

import torch
from transformers import (
    PretrainedConfig,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPooling, CausalLMOutputWithPast
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple

from image_llavolta.compression import (
    FROM_CONFIG,
    CompressedCausalLMOutput,
    CompressedModelMixin,
    CompressionSpec,
    SpecArgument,
    enable_compression,
    placeholder_ids,
)
from image_llavolta.compression.segments import layout_from_segment_index
from image_llavolta.configs import tiny_decoder_fields

# mm_token_type_ids, as transformers' processors write them
TEXT_TYPE, IMAGE_TYPE, VIDEO_TYPE = 0, 1, 2
MROPE_AXES = 3  # temporal, height, width


def token_types(config, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, L) mm_token_type_ids of `input_ids`: 1 on image placeholders, 2 on video placeholders, 0 elsewhere."""
    types = torch.where(input_ids == config.image_token_id, IMAGE_TYPE, TEXT_TYPE)
    return torch.where(input_ids == config.video_token_id, VIDEO_TYPE, types)


def placeholder_runs(input_ids: torch.Tensor, token_id: int) -> list[tuple[int, int, int]]:
    """(row, start, length) of each maximal run of `token_id`, row by row, left to right (get_rope_index's order)."""
    hit = input_ids == token_id  # (B, L)
    starts = hit.clone()
    starts[:, 1:] &= ~hit[:, :-1]
    runs = []
    for b, i in starts.nonzero().tolist():
        n = int(hit[b, i:].long().cumprod(0).sum())
        runs.append((b, i, n))
    return runs


def grid_segment_index(
    input_ids: torch.Tensor, token_id: int, grid_thw: torch.Tensor, merge: int, kind: str, per_frame: bool
) -> torch.Tensor:
    """(B, L) segment index of one modality's placeholders (-1 elsewhere): one segment per image, or per
    temporal patch of a video when `per_frame`; each placeholder run is one `grid_thw` row, in order."""
    runs = placeholder_runs(input_ids, token_id)
    grid_key = f"{kind}_grid_thw"
    if len(runs) != grid_thw.shape[0]:
        raise ValueError(
            f"{len(runs)} runs of {kind} placeholder tokens (id {token_id}) in input_ids, but {grid_key} has "
            f"{grid_thw.shape[0]} rows: one run per {kind}, between its vision start and end tokens"
        )
    index = torch.full_like(input_ids, -1)
    next_segment = 0
    for k, ((b, start, n), (t, h, w)) in enumerate(zip(runs, grid_thw.tolist())):
        per_patch = (h // merge) * (w // merge)
        if n != t * per_patch:
            raise ValueError(
                f"sample {b}: {kind} {k} has {n} placeholder tokens at position {start}, but its {grid_key} row "
                f"({t}, {h}, {w}) gives {t}·{h}·{w}/{merge * merge} = {t * per_patch} tokens"
            )
        segment_len = per_patch if per_frame else n
        local = torch.arange(n, device=input_ids.device) // segment_len  # (n,)
        index[b, start : start + n] = next_segment + local
        next_segment += int(local[-1]) + 1
    return index


def _one_dimensional(config, input_ids, text, positions, visual) -> bool:
    """Whether M-RoPE positions (3, B, L) are just the text positions, which no block of 2+ visual tokens has."""
    visual_tokens = int(torch.isin(input_ids, torch.tensor(placeholder_ids(config), device=input_ids.device)).sum())
    blocks = sum(len(visual[k]) for k in ("image_grid_thw", "video_grid_thw") if visual.get(k) is not None)
    return visual_tokens > blocks and bool((positions == text[None]).all())


class QwenVLCompressedMixin(CompressedModelMixin):
    """The compressed forward shared by Qwen2-VL and Qwen2.5-VL (see the module note)."""

    placeholder_attrs = ("image_token_id", "video_token_id")
    pixel_inputs = ("pixel_values", "pixel_values_videos", "mm_encoder_outputs")
    rope_index_inputs: tuple[str, ...] = ()  # get_rope_index's family-specific inputs (Qwen2.5-VL's video timing)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        video_grid_thw: torch.LongTensor | None = None,
        mm_token_type_ids: torch.IntTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        second_per_grid_ts: torch.Tensor | None = None,
        compression: SpecArgument = FROM_CONFIG,
        output_compression: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | CausalLMOutputWithPast | CompressedCausalLMOutput:
        """The stock forward, with visual tokens pooled per image and per temporal patch per the config's spec.

        `compression` overrides that spec for this call (the staged trainer passes each step's);
        `output_compression=True` returns the accounting even when nothing is compressed.
        `second_per_grid_ts` is Qwen2.5-VL's (seconds per temporal patch of each video).
        """
        if second_per_grid_ts is not None and "second_per_grid_ts" not in self.rope_index_inputs:
            raise ValueError(f"second_per_grid_ts is a Qwen2.5-VL input; {type(self).__name__} does not take it")
        visual = dict(
            pixel_values=pixel_values,
            pixel_values_videos=pixel_values_videos,
            image_grid_thw=image_grid_thw,
            video_grid_thw=video_grid_thw,
            mm_token_type_ids=mm_token_type_ids,
            mm_encoder_outputs=mm_encoder_outputs,
        )
        if "second_per_grid_ts" in self.rope_index_inputs:
            visual["second_per_grid_ts"] = second_per_grid_ts
        inputs = dict(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            labels=labels,
            logits_to_keep=logits_to_keep,
        )
        return self._forward(visual, inputs, {"use_cache": use_cache, **kwargs}, compression, output_compression)

    def _prepare_multimodal_encoder_kwargs_for_generation(self, model_kwargs):
        # generate() encodes pixels before the prefill and drops the inputs of the encoders, the grids with them; the
        # compressed prefill still needs the grids for its segments (the stock forward reads them only for
        # positions, which generate() has computed by then).
        grids = {k: model_kwargs[k] for k in ("image_grid_thw", "video_grid_thw") if model_kwargs.get(k) is not None}
        return {**super()._prepare_multimodal_encoder_kwargs_for_generation(model_kwargs), **grids}

    def _compressed_forward(self, spec, visual, *args, **kwargs):
        grid = visual.get("video_grid_thw")
        if grid is not None:
            merge = self.config.vision_config.spatial_merge_size
            per_patch = grid[:, 1] * grid[:, 2] // merge**2  # (videos,) tokens per temporal patch
            short = (per_patch < spec.stride).nonzero().flatten().tolist()
            if short:
                # such a patch would pool to one token at a lower rate than the spec's, against its Eq. 3 ratio
                raise ValueError(
                    f"videos {short} have temporal patches of {int(per_patch[short[0]])} tokens, fewer than one "
                    f"window of {spec.stride}: use a smaller stride or a higher resolution"
                )
        return super()._compressed_forward(spec, visual, *args, **kwargs)

    def text_decoder(self):
        """The Qwen2 decoder (M-RoPE rotary embedding)."""
        return self.model.language_model

    def rope_positions(self, input_ids, attention_mask, position_ids, visual, decoding):
        """(3, B, L) M-RoPE positions: the given ones, else get_rope_index's (None on decode: the cache continues)."""
        has_grids = visual.get("image_grid_thw") is not None or visual.get("video_grid_thw") is not None
        if position_ids is not None:
            if position_ids.ndim == 3 and position_ids.shape[0] == MROPE_AXES + 1:
                # generate() puts text positions first, for the stock masks of packed sequences (not supported here)
                text, position_ids = position_ids[0], position_ids[1:]
                if has_grids and not decoding and _one_dimensional(self.config, input_ids, text, position_ids, visual):
                    raise ValueError(
                        "generate() made 1-D positions for the visual tokens (its M-RoPE positions need "
                        "mm_token_type_ids): pass the processor's mm_token_type_ids, or token_types(config, input_ids)"
                    )
            if position_ids.ndim == 3 and position_ids.shape[0] == MROPE_AXES:
                return position_ids
            if position_ids.ndim == 2 and not (has_grids and not decoding):
                return position_ids[None].expand(MROPE_AXES, -1, -1)  # text only: one position on every axis
            raise ValueError(
                f"position_ids of shape {tuple(position_ids.shape)} given to {type(self).__name__}, whose visual "
                "tokens need M-RoPE positions (3, batch, length) or (4, ...) with text positions first, as "
                "get_rope_index or generate() make them; pass none to have them computed"
            )
        if decoding:
            return None
        if not has_grids:  # text only: the stock decoder counts 0..L-1 on every axis
            return torch.arange(input_ids.shape[1], device=input_ids.device).expand(MROPE_AXES, *input_ids.shape)
        types = visual.get("mm_token_type_ids")
        extra = {k: visual[k] for k in self.rope_index_inputs if visual.get(k) is not None}
        positions, _ = self.model.get_rope_index(
            input_ids,
            mm_token_type_ids=token_types(self.config, input_ids) if types is None else types,
            image_grid_thw=visual.get("image_grid_thw"),
            video_grid_thw=visual.get("video_grid_thw"),
            attention_mask=attention_mask,
            **extra,
        )
        return positions

    def embed_multimodal(self, input_ids, visual):
        """Text embeddings with image and video features scattered in, and a layout of per-sample segments."""
        embeds = self.get_input_embeddings()(input_ids)
        encoded = visual.get("mm_encoder_outputs") or {}
        merge = self.config.vision_config.spatial_merge_size
        segment_index, states = torch.full_like(input_ids, -1), {}
        modalities = (
            ("image", self.config.image_token_id, "pixel_values", self.model.get_image_features),
            ("video", self.config.video_token_id, "pixel_values_videos", self.model.get_video_features),
        )
        for kind, token_id, pixel_key, encode in modalities:
            out, pixels, grid = encoded.get(kind), visual.get(pixel_key), visual.get(f"{kind}_grid_thw")
            if out is None and pixels is None:
                continue
            if grid is None:
                raise ValueError(
                    f"{pixel_key if pixels is not None else kind + ' features'} given without {kind}_grid_thw"
                )
            index = grid_segment_index(input_ids, token_id, grid, merge, kind, per_frame=kind == "video")
            if out is None:
                out = encode(pixels, grid, return_dict=True)
            features = torch.cat(list(out.pooler_output)).to(embeds.device, embeds.dtype)  # (tokens, D)
            mask = (input_ids == token_id)[..., None]  # (B, L, 1)
            if features.shape[0] != int(mask.sum()):
                raise ValueError(
                    f"{kind} features hold {features.shape[0]} tokens for {int(mask.sum())} {kind} placeholders"
                )
            embeds = embeds.masked_scatter(mask, features)
            offset = int(segment_index.max()) + 1
            segment_index = torch.where(index >= 0, index + offset, segment_index)
            states[f"{kind}_hidden_states"] = features
        return embeds, layout_from_segment_index(segment_index), states


class Qwen2VLoltaForConditionalGeneration(QwenVLCompressedMixin, Qwen2VLForConditionalGeneration):
    """transformers' Qwen2-VL with the compressor (one segment per image and per temporal patch of a video)."""

    stock_class = Qwen2VLForConditionalGeneration


class Qwen2_5_VLoltaForConditionalGeneration(QwenVLCompressedMixin, Qwen2_5_VLForConditionalGeneration):
    """transformers' Qwen2.5-VL with the compressor (one segment per image and per temporal patch of a video)."""

    stock_class = Qwen2_5_VLForConditionalGeneration
    rope_index_inputs = ("second_per_grid_ts",)


ADAPTER_OF_TYPE = {
    "qwen2_vl": Qwen2VLoltaForConditionalGeneration,
    "qwen2_5_vl": Qwen2_5_VLoltaForConditionalGeneration,
}


def build_model(config, compression: CompressionSpec | None = None, attn_implementation: str = "sdpa", seed=None):
    """A randomly initialised Qwen2-VL / Qwen2.5-VL model for `config`, compression applied."""
    if seed is not None:
        torch.manual_seed(seed)
    model = ADAPTER_OF_TYPE[config.model_type]._from_config(config, attn_implementation=attn_implementation)
    return enable_compression(model, compression)


def tiny_config(
    model_type: str = "qwen2_vl", layers: int = 4, hidden: int = 64, vocab: int = 160, **text_overrides
) -> PretrainedConfig:
    """A tiny Qwen2-VL / Qwen2.5-VL config for tests and measurements: 2-px patches, a 2-block tower, and the
    real model's merge (2x2) and temporal patch (2 frames); placeholder and vision start/end ids at the vocab's end."""
    text = tiny_decoder_fields(layers, hidden, vocab)
    text.update(text_overrides)
    # M-RoPE splits the head's rotary frequencies over (t, h, w) as the 7B models do (16, 24, 24 of 64)
    section = _mrope_section(hidden // text["num_attention_heads"])
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section}
    ids = dict(
        image_token_id=vocab - 4,
        video_token_id=vocab - 3,
        vision_start_token_id=vocab - 2,
        vision_end_token_id=vocab - 1,
    )
    tower = dict(depth=2, num_heads=2, patch_size=2, spatial_merge_size=2, temporal_patch_size=2, in_channels=3)
    if model_type == "qwen2_vl":
        vision = dict(embed_dim=32, hidden_size=hidden, mlp_ratio=2, **tower)
        return Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        out_hidden_size=hidden,
        window_size=8,
        fullatt_block_indexes=[1],
        tokens_per_second=2,
        **tower,
    )
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)


def _mrope_section(head_dim: int) -> list[int]:
    """Qwen's split of head_dim/2 rotary frequencies over (t, h, w): 1/4, 3/8, 3/8 (16, 24, 24 at head_dim 128)."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]
