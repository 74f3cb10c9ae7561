"""Visual compression on transformers' LLaVA and Video-LLaVA: `enable_compression` and the compressed forward.

`enable_compression` turns a stock model into its compressed subclass in place (same modules, same
weights, same state-dict keys) and stores the spec in `model.config`, so `save_pretrained` checkpoints
carry it and stock transformers can still load them.

What the forward returns:

- compression off (no spec, a no-op spec, or `compression=None`): exactly what the stock forward returns,
  the stock output class with the stock keys. Nothing is computed on top, so static caches, compiled
  generation, prepared 4D masks and `inputs_embeds` behave as they do on the stock class.
- compression on: `CompressedCausalLMOutput`, whose `logits` cover the compressed sequence, with
  `attention_mask` (the padding mask of those logits) and `compression` (the accounting, `CompressionStats`).
- `output_compression=True` asks for `CompressedCausalLMOutput` in both cases, so a caller that switches
  compression on and off (the staged trainer, the efficiency report) reads the accounting the same way;
  uncompressed, `compression` counts the visual tokens in = out.
"""
from dataclasses import dataclass

import torch
from transformers import LlavaForConditionalGeneration, VideoLlavaForConditionalGeneration
from transformers.cache_utils import Cache
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import slice_logits_to_keep
from transformers.models.llava.modeling_llava import LlavaCausalLMOutputWithPast
from transformers.models.video_llava.modeling_video_llava import VideoLlavaCausalLMOutputWithPast
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple

from .decoder import CACHE_STATE_ATTR, check_decoder, compressed_decoder_forward
from .methods import fastv_query_index
from .pooling import compressed_targets
from .segments import find_segments
from .spec import CONFIG_KEY, CompressionSpec, CompressionStats


FROM_CONFIG = "from_config"  # forward(compression=...) default: the spec stored in the config
PIXEL_INPUTS = ("pixel_values", "pixel_values_videos", "mm_encoder_outputs")  # what brings new visual tokens


@dataclass
class CompressedCausalLMOutput(ModelOutput):
    """LLaVA / Video-LLaVA output plus the compression accounting of the forward.

    With compression active, `logits` cover the compressed sequence: one position per text token and one
    per pooled window, in order, re-padded on the batch's padding side as `attention_mask` shows.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    past_key_values: Cache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    image_hidden_states: torch.Tensor | None = None
    video_hidden_states: torch.Tensor | None = None
    compression: CompressionStats | None = None  # None when the visual tokens cannot be counted (no input_ids)
    attention_mask: torch.Tensor | None = None  # (B, Lc) padding mask matching `logits` (1 = real position)


class StockModelingMixin:
    """For subclasses of transformers' models built from transformers' modules and initialisers.

    transformers treats every class defined outside `transformers.*` as custom code: it skips the model
    type's checkpoint key conversions and initialises weights missing from a checkpoint by a shortcut that
    passes over modules without parameters of their own (CLIP's attention blocks set their projections'
    scale), so such a class would load differently from the stock one.
    """

    @classmethod
    def is_custom_code(cls) -> bool:
        """Custom code only when loaded from the Hub: these classes load and initialise as the stock ones."""
        return cls.is_remote_code()


class _CompressedMixin(StockModelingMixin):
    """Forward shared by the compressed LLaVA and Video-LLaVA classes."""

    _visual_token_attrs: tuple[str, ...] = ()

    @property
    def compression_spec(self) -> CompressionSpec | None:
        """The spec stored in the config (None = no compression), parsed once per value of that entry."""
        data = getattr(self.config, CONFIG_KEY, None)
        if data is None:
            return None
        source, spec = getattr(self, "_parsed_compression", (None, None))
        if source != data:
            spec = CompressionSpec.from_dict(dict(data))
            self._parsed_compression = (dict(data), spec)
        return spec

    def _visual_token_ids(self) -> list[int]:
        return [getattr(self.config, a) for a in self._visual_token_attrs]

    def _is_visual(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) bool: which tokens are image or video placeholders."""
        return torch.isin(input_ids, torch.tensor(self._visual_token_ids(), device=input_ids.device))

    def _stats(self, spec: CompressionSpec | None, visual_in: torch.Tensor, visual_out: torch.Tensor):
        layer, stride = (spec.layer, spec.stride) if spec else (0, 1)
        return CompressionStats(self.config.text_config.num_hidden_layers, layer, stride, visual_in, visual_out)

    def _forward(self, visual: dict, inputs: dict, kwargs: dict, compression, output_compression: bool):
        """The stock forward when compression is off or a no-op, the compressed pass otherwise (see the module note)."""
        spec = self.compression_spec if isinstance(compression, str) and compression == FROM_CONFIG else compression
        if spec is not None and not isinstance(spec, CompressionSpec):
            raise ValueError(f"compression must be a CompressionSpec, None or {FROM_CONFIG!r}, got {spec!r}")
        num_layers = self.config.text_config.num_hidden_layers
        if spec is not None:
            spec.check_fits(num_layers)
        if spec is not None and not spec.is_noop(num_layers):
            # generate() passes an empty `mm_encoder_outputs` when nothing was encoded
            given = {k: v for k, v in visual.items() if v is not None and not (isinstance(v, dict) and not v)}
            return self._compressed_forward(spec, given, **inputs, **kwargs)
        if not output_compression:
            return super().forward(**inputs, **visual, **kwargs)
        out = super().forward(**inputs, **visual, **kwargs, return_dict=True)
        input_ids, mask = inputs["input_ids"], inputs["attention_mask"]
        mask = mask if mask is not None and mask.ndim == 2 else None  # a prepared 4D mask says nothing of padding
        stats = None
        if input_ids is not None:
            visual_tokens = self._is_visual(input_ids)
            if mask is not None:
                visual_tokens &= mask[:, -input_ids.shape[1] :].bool()  # decode: the mask spans the past too
            n = visual_tokens.sum(1)
            stats = self._stats(spec, n, n)
        return CompressedCausalLMOutput(**out, compression=stats, attention_mask=mask)

    def _compressed_forward(
        self, spec, visual, input_ids, attention_mask, position_ids, past_key_values, inputs_embeds, labels,
        logits_to_keep, use_cache=None, **kwargs,
    ):
        for flag in ("output_attentions", "output_hidden_states"):
            asked = kwargs.pop(flag, None)
            if asked if asked is not None else getattr(self.config, flag, False):
                raise ValueError(f"{flag}=True is not supported with visual compression (sequence lengths change)")
        if input_ids is None or inputs_embeds is not None:
            raise ValueError("visual compression finds the visual segments from input_ids: pass input_ids only")
        if labels is not None and kwargs.get("shift_labels") is not None:
            raise ValueError(
                "shift_labels (targets aligned with the full sequence, for sequence-parallel training) cannot be "
                "used with visual compression, which shortens the sequence inside the model: pass labels only"
            )
        if use_cache is None:
            use_cache = bool(self.config.text_config.use_cache) and not self.training

        if getattr(past_key_values, CACHE_STATE_ATTR, None) is not None:
            given = [k for k in PIXEL_INPUTS if k in visual]
            if given:
                raise ValueError(
                    f"{given} given with a compressed KV cache, which already holds the prompt's visual tokens: pass "
                    "only the new tokens (to continue generate() from a returned cache, pass the ids and attention "
                    "mask without pixel values, as the stock class needs too)"
                )
        # Placeholder ids without their pixel inputs are text, as in the stock forward: so is every id appended to
        # a compressed prefill, including a placeholder id that a model generates.
        inputs_embeds, segment_lengths, visual_states = self._embed_multimodal(input_ids, visual)
        layout = find_segments(input_ids, segment_lengths)

        query_index = None
        if spec.method == "fastv" and labels is not None:
            query_index = fastv_query_index(*input_ids.shape, attention_mask, labels)
        outputs, plan = compressed_decoder_forward(
            self.model.language_model, inputs_embeds, layout, spec, attention_mask=attention_mask,
            position_ids=position_ids, past_key_values=past_key_values, use_cache=use_cache,
            query_index=query_index, **kwargs,
        )
        logits = self.lm_head(slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep))
        loss = None
        if labels is not None:
            shift_labels = compressed_targets(labels, layout.is_visual, plan) if plan is not None else None
            loss = self.loss_function(
                logits=logits, labels=labels, shift_labels=shift_labels,
                vocab_size=self.config.text_config.vocab_size, **kwargs,
            )
        if plan is not None:
            stats, mask = self._stats(spec, plan.visual_in, plan.visual_out), plan.attention_mask
        else:  # a decode step: text only, appended after the compressed prefill
            zeros = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
            stats, mask = self._stats(spec, zeros, zeros), None
        return CompressedCausalLMOutput(
            loss=loss, logits=logits, past_key_values=outputs.past_key_values, compression=stats,
            attention_mask=mask, **visual_states,
        )


class LlavoltaForConditionalGeneration(_CompressedMixin, LlavaForConditionalGeneration):
    """transformers' LLaVA with the Visual Context Compressor (one segment per image)."""

    _visual_token_attrs = ("image_token_id",)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        image_sizes: torch.Tensor | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        compression: CompressionSpec | None | str = FROM_CONFIG,
        output_compression: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | LlavaCausalLMOutputWithPast | CompressedCausalLMOutput:
        """LlavaForConditionalGeneration.forward, with visual tokens pooled per the config's compression spec.

        `compression` overrides that spec for this call (the staged trainer passes each step's);
        `output_compression=True` returns the accounting even when nothing is compressed (see the module note).
        """
        visual = dict(pixel_values=pixel_values, vision_feature_layer=vision_feature_layer, image_sizes=image_sizes,
                      vision_feature_select_strategy=vision_feature_select_strategy,
                      mm_encoder_outputs=mm_encoder_outputs)
        inputs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      past_key_values=past_key_values, inputs_embeds=inputs_embeds, labels=labels,
                      logits_to_keep=logits_to_keep)
        return self._forward(visual, inputs, kwargs, compression, output_compression)

    def _embed_multimodal(self, input_ids, visual):
        """Text embeddings with image features scattered in, and each image's token count."""
        pixel_values = visual.get("pixel_values")
        encoded = (visual.get("mm_encoder_outputs") or {}).get("image")
        image_kwargs = {k: visual[k] for k in ("vision_feature_layer", "vision_feature_select_strategy",
                                               "image_sizes") if k in visual}
        embeds = self.get_input_embeddings()(input_ids)
        if encoded is None and pixel_values is None:
            return embeds, {}, {}
        if encoded is None:
            encoded = self.model.get_image_features(pixel_values=pixel_values, return_dict=True, **image_kwargs)
        features = list(encoded.pooler_output)
        sizes = {f.shape[0] for f in features}
        if len(sizes) != 1:
            raise ValueError(f"images give different token counts {sorted(sizes)}; compression needs equal-size images")
        features = torch.cat(features).to(embeds.device, embeds.dtype)
        mask = self.model.get_placeholder_mask(input_ids, inputs_embeds=embeds, image_features=features)
        embeds = embeds.masked_scatter(mask, features)
        return embeds, {self.config.image_token_id: sizes.pop()}, {"image_hidden_states": features}


class VideoLlavoltaForConditionalGeneration(_CompressedMixin, VideoLlavaForConditionalGeneration):
    """transformers' Video-LLaVA with the Visual Context Compressor (one segment per image or video frame)."""

    _visual_token_attrs = ("image_token_id", "video_token_id")

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
        compression: CompressionSpec | None | str = FROM_CONFIG,
        output_compression: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | VideoLlavaCausalLMOutputWithPast | CompressedCausalLMOutput:
        """VideoLlavaForConditionalGeneration.forward, with visual tokens pooled per frame and per image.

        `compression` overrides the config's spec for this call (the staged trainer passes each step's);
        `output_compression=True` returns the accounting even when nothing is compressed (see the module note).
        `pixel_values_images` is the old name of `pixel_values`, renamed before the body runs.
        """
        visual = dict(pixel_values=pixel_values, pixel_values_videos=pixel_values_videos,
                      vision_feature_layer=vision_feature_layer,
                      vision_feature_select_strategy=vision_feature_select_strategy,
                      mm_encoder_outputs=mm_encoder_outputs)
        inputs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                      past_key_values=past_key_values, inputs_embeds=inputs_embeds, labels=labels,
                      logits_to_keep=logits_to_keep)
        return self._forward(visual, inputs, {"use_cache": use_cache, **kwargs}, compression, output_compression)

    def _embed_multimodal(self, input_ids, visual):
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


_COMPRESSED = {
    LlavaForConditionalGeneration: LlavoltaForConditionalGeneration,
    VideoLlavaForConditionalGeneration: VideoLlavoltaForConditionalGeneration,
}


def share_key_conversions(cls, like: str) -> None:
    """Give `cls` transformers' checkpoint key conversions of the class named `like`.

    transformers looks conversions up by class name, then by model type. A subclass that keeps its parent's
    weight names and has a model type with conversions (LLaVA, Video-LLaVA) gets them through
    `StockModelingMixin`; one whose conversions are keyed by its parent's class name (CLIPVisionModel's older
    `vision_model.` prefix) needs them registered under its own name.
    """
    mapping = get_checkpoint_conversion_mapping(like)
    if mapping is not None:
        register_checkpoint_conversion_mapping(cls.__name__, mapping, overwrite=True)


def enable_compression(model, spec: CompressionSpec | None):
    """Compress `model`'s visual tokens per `spec` from its next forward on; `None` restores stock behaviour.

    `model` is a transformers `LlavaForConditionalGeneration` or `VideoLlavaForConditionalGeneration`
    (or one of their compressed subclasses); it is changed in place and returned.
    """
    if isinstance(model, tuple(_COMPRESSED.values())):
        compressed = type(model)  # already compressed (or a subclass, e.g. with other towers): keep its class
    else:
        compressed = _COMPRESSED.get(type(model))
        if compressed is None:
            raise ValueError(
                f"visual compression supports {[c.__name__ for c in _COMPRESSED]}, not {type(model).__name__}"
            )
    if spec is not None and not isinstance(spec, CompressionSpec):
        raise ValueError(f"spec must be a CompressionSpec or None, got {type(spec).__name__}")
    check_decoder(model.model.language_model)
    if spec is not None:
        spec.check_fits(model.config.text_config.num_hidden_layers)
    model.__class__ = compressed  # adds methods only: no new modules, parameters or buffers
    setattr(model.config, CONFIG_KEY, None if spec is None else spec.to_dict())
    return model
