"""The LLaVA-OneVision adapter: transformers' `LlavaOnevisionForConditionalGeneration` with the compressor.

transformers' model (SigLIP tower, 2-layer projector, Qwen2 decoder) places its visual features as follows, and
the segments follow that layout, read per item from the features themselves (so they hold for the features that
`generate()` encodes before the prefill, which come without `image_sizes`):

- a video: T frames of h·w tokens each (the model's own 2×2 bilinear pooling: 196 at 384 px) and one
  `image_newline` embedding after the last frame; one segment per frame;
- an image given alone in its sample: the base image (the whole picture at the tower's size, g·g tokens) then its
  anyres tiles, which `pack_image_features` unpads (and may resize) into one mosaic, written row by row with an
  `image_newline` after each row; one segment for the base image and one per mosaic row, since a tile is not one
  contiguous stretch of the sequence once packed;
- an image of a multi-image sample (`batch_num_images` > 1): the base image only, then one `image_newline`.

`image_newline` embeddings are never pooled and keep their places (their placeholder id is the image's or the
video's, so they are found as the features equal to the model's `image_newline`, which the model copies in).
"""

import math

import torch
from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.llava_onevision.modeling_llava_onevision import LlavaOnevisionCausalLMOutputWithPast
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
)
from image_llavolta.compression.segments import layout_from_segment_index

NEVER_POOLED = -1  # segment index of a token that keeps its place (an image_newline)


class LlavaOnevisionLlavoltaForConditionalGeneration(CompressedModelMixin, LlavaOnevisionForConditionalGeneration):
    """transformers' LLaVA-OneVision with the compressor (one segment per frame, base image and mosaic row)."""

    stock_class = LlavaOnevisionForConditionalGeneration
    placeholder_attrs = ("image_token_id", "video_token_id")
    pixel_inputs = ("pixel_values", "pixel_values_videos", "mm_encoder_outputs")

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.LongTensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        image_sizes_videos: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        vision_aspect_ratio: str | None = None,
        batch_num_images: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        compression: SpecArgument = FROM_CONFIG,
        output_compression: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | LlavaOnevisionCausalLMOutputWithPast | CompressedCausalLMOutput:
        """LlavaOnevisionForConditionalGeneration.forward, with visual tokens pooled per frame, image and row.

        `compression` overrides the config's spec for this call (the staged trainer passes each step's);
        `output_compression=True` returns the accounting even when nothing is compressed.
        """
        visual = dict(
            pixel_values=pixel_values,
            image_sizes=image_sizes,
            pixel_values_videos=pixel_values_videos,
            image_sizes_videos=image_sizes_videos,
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
            vision_aspect_ratio=vision_aspect_ratio,
            batch_num_images=batch_num_images,
            mm_encoder_outputs=mm_encoder_outputs,
        )
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

    def text_decoder(self):
        """The Qwen2 decoder."""
        return self.model.language_model

    def embed_multimodal(self, input_ids, visual):
        """Text embeddings with image and video features scattered in, and the per-token segment layout."""
        encoded = visual.get("mm_encoder_outputs") or {}
        embeds = self.get_input_embeddings()(input_ids)
        segment_index = torch.full_like(input_ids, NEVER_POOLED)  # (B, L)
        states, next_segment = {}, 0

        image_out = encoded.get("image")
        if image_out is None and visual.get("pixel_values") is not None:
            image_out = self.model.get_image_features(
                visual["pixel_values"],
                visual.get("image_sizes"),
                vision_feature_layer=visual.get("vision_feature_layer"),
                vision_feature_select_strategy=visual.get("vision_feature_select_strategy"),
                vision_aspect_ratio=visual.get("vision_aspect_ratio"),
                batch_num_images=visual.get("batch_num_images"),
                return_dict=True,
            )
        if image_out is not None:
            items = [f.to(embeds.device, embeds.dtype) for f in image_out.pooler_output]  # each (tokens, D)
            index, next_segment = self._image_segments(items, next_segment)
            embeds, segment_index = self._scatter(
                input_ids, embeds, segment_index, self.config.image_token_id, items, index, "image"
            )
            states["image_hidden_states"] = torch.cat(items)

        video_out = encoded.get("video")
        videos = visual.get("pixel_values_videos")
        if video_out is None and videos is not None:
            video_out = self.model.get_video_features(
                pixel_values_videos=videos,
                vision_feature_layer=visual.get("vision_feature_layer"),
                vision_feature_select_strategy=visual.get("vision_feature_select_strategy"),
                return_dict=True,
            )
        if video_out is not None:
            features = video_out.pooler_output.to(embeds.device, embeds.dtype)  # (videos, frames·h·w + 1, D)
            frames = None if videos is None else videos.shape[1]
            index, next_segment = self._video_segments(features, frames, next_segment)
            embeds, segment_index = self._scatter(
                input_ids, embeds, segment_index, self.config.video_token_id, list(features), index, "video"
            )
            states["video_hidden_states"] = features.flatten(0, 1)
        return embeds, layout_from_segment_index(segment_index), states

    def kept_placeholders(self, input_ids, out):
        """(B,) image_newline embeddings among each sample's placeholders, read from the stock output's features."""
        kept = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
        for token_id, features in (
            (self.config.image_token_id, out.image_hidden_states),
            (self.config.video_token_id, out.video_hidden_states),
        ):
            is_placeholder = input_ids == token_id  # (B, L)
            if features is None or int(is_placeholder.sum()) != len(features):
                continue  # a decode step, or features the stock forward already refused
            newline = self._is_newline(features).to(input_ids.device)
            kept += torch.zeros_like(is_placeholder).masked_scatter(is_placeholder, newline).sum(1)
        return kept

    def _is_newline(self, features: torch.Tensor) -> torch.Tensor:
        """(tokens,) bool: the features that are the model's `image_newline` embedding, copied in by the model."""
        return (features == self.model.image_newline.to(features.device, features.dtype)).all(-1)

    def _image_segments(self, items: list[torch.Tensor], first: int) -> tuple[list[torch.Tensor], int]:
        """Per image, (tokens,) segment ids: the base image, then each row of the tile mosaic; newlines -1."""
        grid = self.config.vision_config.image_size // self.config.vision_config.patch_size
        base = grid * grid
        out = []
        for n, features in enumerate(items):
            newline = self._is_newline(features)
            newline[:base] = False  # the base image holds no newline
            if len(features) <= base or not bool(newline[-1]):
                raise ValueError(
                    f"image {n}: {len(features)} features do not hold a base image of {base} tokens followed by "
                    "rows ending with image_newline (features not packed by LlavaOnevisionModel.get_image_features)"
                )
            # a segment starts at the base image and after every newline; the base image and row 0 are adjacent
            starts = torch.zeros_like(newline)
            starts[0] = True
            starts[base] = True
            starts[1:] |= newline[:-1]
            starts &= ~newline
            ids = first + starts.long().cumsum(0) - 1
            out.append(torch.where(newline, NEVER_POOLED, ids))
            first = int(ids.max()) + 1
        return out, first

    def _video_segments(self, features: torch.Tensor, frames: int | None, first: int) -> tuple[list[torch.Tensor], int]:
        """Per video, (tokens,) segment ids: one per frame, the trailing newline -1."""
        per_frame = frame_tokens(self.config)
        videos, tokens, _ = features.shape
        count, rest = divmod(tokens - 1, per_frame)
        if rest or (frames is not None and count != frames) or not bool(self._is_newline(features[:, -1]).all()):
            raise ValueError(
                f"video features of {tokens} tokens do not split into {frames or 'whole'} frames of {per_frame} "
                "tokens and one image_newline (features not made by LlavaOnevisionModel.get_video_features)"
            )
        frame = torch.arange(count, device=features.device).repeat_interleave(per_frame)  # (frames·h·w,)
        out = []
        for _ in range(videos):
            out.append(torch.cat([first + frame, frame.new_full((1,), NEVER_POOLED)]))
            first += count
        return out, first

    def _scatter(self, input_ids, embeds, segment_index, token_id, items, index, kind):
        """Write the items' features and segment ids over the `token_id` placeholders, in order, checked per sample."""
        is_placeholder = input_ids == token_id  # (B, L)
        per_sample = is_placeholder.sum(1).tolist()
        bounds = torch.tensor([len(f) for f in items]).cumsum(0).tolist()
        total, done = sum(per_sample), 0
        for b, count in enumerate(per_sample):
            done += count
            if done > (bounds[-1] if bounds else 0) or (count and done not in bounds):
                raise ValueError(
                    f"sample {b}: {count} {kind} placeholder tokens do not hold whole {kind}s (the batch's {kind}s "
                    f"give {[len(f) for f in items]} tokens in order, {bounds[-1] if bounds else 0} in all, for "
                    f"{total} placeholders); the prompt's placeholders do not match the {kind} inputs"
                )
        if total != (bounds[-1] if bounds else 0):
            raise ValueError(
                f"{total} {kind} placeholder tokens in the batch but its {kind}s give {bounds[-1]} features; the "
                f"prompt's placeholders do not match the {kind} inputs"
            )
        mask = is_placeholder[..., None].expand_as(embeds)
        embeds = embeds.masked_scatter(mask, torch.cat(items))
        segment_index = segment_index.masked_scatter(is_placeholder, torch.cat(index).to(segment_index.device))
        return embeds, segment_index


def frame_tokens(config: LlavaOnevisionConfig) -> int:
    """Tokens per video frame: the tower's g × g patch grid after `apply_pooling`'s bilinear resize to ceil(g/2)²."""
    grid = config.vision_config.image_size // config.vision_config.patch_size
    return math.ceil(grid / 2) ** 2


def build_model(
    config: LlavaOnevisionConfig,
    compression: CompressionSpec | None = None,
    attn_implementation: str = "sdpa",
    seed: int | None = None,
) -> LlavaOnevisionLlavoltaForConditionalGeneration:
    """A randomly initialised model for `config` (tiny configs for tests), compression applied."""
    if seed is not None:
        torch.manual_seed(seed)
    model = LlavaOnevisionLlavoltaForConditionalGeneration._from_config(config, attn_implementation=attn_implementation)
    return enable_compression(model, compression)
