"""The Video-LLaVA adapter: transformers' `VideoLlavaForConditionalGeneration` with the compressor.

One segment per image (256 tokens, CLS dropped) and per video frame (257, CLS kept). Everything but the video
tower is transformers' model (image tower, 2-layer GELU projector shared by images and frames, Llama/Vicuna
decoder); with `video_temporal_attention` in the config the video tower is LanguageBind's, whose blocks also
attend over the frames of each video (`languagebind`), and `num_frames` sets its frame count.
"""

import torch
from transformers import VideoLlavaConfig, VideoLlavaForConditionalGeneration
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.video_llava.modeling_video_llava import VideoLlavaCausalLMOutputWithPast
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple

from image_llavolta.compression import (
    FROM_CONFIG,
    CompressedCausalLMOutput,
    CompressedModelMixin,
    CompressionSpec,
    SpecArgument,
    enable_compression,
    find_segments,
)

from ..configs import num_frames, temporal_attention
from .languagebind import LanguageBindVideoTower


class VideoLlavoltaForConditionalGeneration(CompressedModelMixin, VideoLlavaForConditionalGeneration):
    """transformers' Video-LLaVA with the compressor (one segment per image or video frame), LanguageBind's
    temporal attention in the video tower when the config asks for it."""

    stock_class = VideoLlavaForConditionalGeneration
    placeholder_attrs = ("image_token_id", "video_token_id")
    pixel_inputs = ("pixel_values", "pixel_values_videos", "mm_encoder_outputs")

    def __init__(self, config: VideoLlavaConfig):
        super().__init__(config)
        if temporal_attention(config):
            self.model.video_tower = LanguageBindVideoTower(config.vision_config, num_frames(config))

    @can_return_tuple
    @deprecate_kwarg("pixel_values_images", version="v5.23", new_name="pixel_values")  # as the stock forward
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_images: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        compression: SpecArgument = FROM_CONFIG,
        output_compression: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | VideoLlavaCausalLMOutputWithPast | CompressedCausalLMOutput:
        """VideoLlavaForConditionalGeneration.forward, with visual tokens pooled per frame and per image.

        `compression` overrides the config's spec for this call (the staged trainer passes each step's);
        `output_compression=True` returns the accounting even when nothing is compressed.
        `pixel_values_images` is the old name of `pixel_values`, renamed before the body runs.
        """
        visual = dict(
            pixel_values=pixel_values,
            pixel_values_videos=pixel_values_videos,
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
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
        """The Llama/Vicuna decoder."""
        return self.model.language_model

    def embed_multimodal(self, input_ids, visual):
        """Text embeddings with image and frame features scattered in, and each segment's token count."""
        images = visual.get("pixel_values")
        videos = visual.get("pixel_values_videos")
        layer = visual.get("vision_feature_layer")
        strategy = visual.get("vision_feature_select_strategy")
        encoded = visual.get("mm_encoder_outputs") or {}
        embeds = self.get_input_embeddings()(input_ids)
        lengths, states = {}, {}

        image_out = encoded.get("image")
        if image_out is None and images is not None:
            image_out = self.model.get_image_features(
                images, vision_feature_layer=layer, vision_feature_select_strategy=strategy, return_dict=True
            )
        if image_out is not None:
            features = image_out.pooler_output.to(embeds.device, embeds.dtype)  # (images, tokens, dim)
            mask, _ = self.model.get_placeholder_mask(input_ids, inputs_embeds=embeds, image_features=features)
            embeds = embeds.masked_scatter(mask, features)
            lengths[self.config.image_token_id] = features.shape[1]
            states["image_hidden_states"] = features

        video_out = encoded.get("video")
        if video_out is None and videos is not None:
            video_out = self.model.get_video_features(
                pixel_values_videos=videos, vision_feature_layer=layer, return_dict=True
            )
        if video_out is not None:
            features = video_out.pooler_output.to(embeds.device, embeds.dtype)  # (videos·frames, tokens, dim)
            _, mask = self.model.get_placeholder_mask(input_ids, inputs_embeds=embeds, video_features=features)
            embeds = embeds.masked_scatter(mask, features)
            frame_tokens = features.shape[1]
            if videos is not None:  # whole videos must sit in each run of video tokens
                frames = videos.shape[1]
                try:
                    find_segments(input_ids, {self.config.video_token_id: frames * frame_tokens})
                except ValueError as err:
                    raise ValueError(
                        f"video tokens do not split into videos of {frames} frames × {frame_tokens} tokens: {err}"
                    ) from None
            lengths[self.config.video_token_id] = frame_tokens
            states["video_hidden_states"] = features
        return embeds, lengths, states


def build_model(
    config: VideoLlavaConfig,
    compression: CompressionSpec | None = None,
    attn_implementation: str = "sdpa",
    seed: int | None = None,
) -> VideoLlavoltaForConditionalGeneration:
    """A randomly initialised model for `config` (tiny configs for tests and the quickstart), compression applied."""
    if seed is not None:
        torch.manual_seed(seed)
    model = VideoLlavoltaForConditionalGeneration._from_config(config, attn_implementation=attn_implementation)
    return enable_compression(model, compression)
