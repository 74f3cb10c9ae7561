"""The compressed forward of a vision-language model, and the small interface a model family's adapter fills in.

An adapter is a subclass of one of transformers' `...ForConditionalGeneration` classes and of
`CompressedModelMixin`, with the stock weights, state-dict keys and `config` (e.g. `image_llavolta.models.llava`).
It tells the core what only the family knows:

- `stock_class`: the transformers class it compresses (the adapter registers itself for it at definition);
- `placeholder_attrs`: the config attributes holding its visual placeholder ids;
- `pixel_inputs`: the forward arguments that bring new visual tokens;
- `embed_multimodal(input_ids, visual)`: the input embeddings with the visual features scattered in, the
  segments (the segment length of each placeholder id, one image or one frame; or, for layouts that vary per
  sample, a `VisualLayout` from `layout_from_segment_index`), and the visual states to return;
- `text_decoder()`: the decoder (a Llama-style `...Model`) that the compressed pass drives;
- `rope_positions(input_ids, attention_mask, position_ids, visual, decoding)`, for families with their own
  positions (M-RoPE): the positions the compressed pass runs with, (B, L) or (A, B, L); by default the ones given.

The core finds segments from the ids and those lengths, pools them inside the decoder and computes the loss.

What the forward returns:

- compression off (no spec, a no-op spec, or `compression=None`): exactly what the stock forward returns, the
  stock output class with the stock keys. Nothing is computed on top, so static caches, compiled generation,
  prepared 4D masks and `inputs_embeds` behave as they do on the stock class.
- compression on: `CompressedCausalLMOutput`, whose `logits` cover the compressed sequence, with
  `attention_mask` (the padding mask of those logits), `compression` (the accounting, `CompressionStats`) and
  `past_key_values`, a `CompressedCache`.
- `output_compression=True` asks for `CompressedCausalLMOutput` in both cases, so a caller that switches
  compression on and off (the staged trainer, the efficiency report) reads the accounting the same way;
  uncompressed, `compression` counts the visual tokens in = out.
"""

from dataclasses import dataclass
from importlib.metadata import entry_points

import torch
from transformers.cache_utils import Cache
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
from transformers.modeling_utils import slice_logits_to_keep
from transformers.utils import ModelOutput

from .accounting import CompressionStats
from .cache import CompressedCache
from .decoder import check_decoder, compressed_decoder_forward
from .methods import fastv_query_index
from .pooling import compressed_targets
from .segments import VisualLayout, find_segments
from .spec import CONFIG_KEY, FROM_CONFIG, CompressionSpec, SpecArgument, check_spec_argument

# stock transformers class -> its compressed adapter class, filled as adapters are defined
ADAPTERS: dict[type, type] = {}
# Packages declare their adapters under this entry-point group (pyproject.toml), so that `enable_compression`
# finds every installed family without the core importing any of them.
ADAPTER_ENTRY_POINTS = "llavolta.adapters"
PLACEHOLDER_ATTRS = ("image_token_id", "video_token_id")  # transformers' names for visual placeholder ids


def placeholder_ids(config) -> list[int]:
    """The visual placeholder ids a model config declares (image, and video where the family has one)."""
    return sorted({getattr(config, a) for a in PLACEHOLDER_ATTRS if getattr(config, a, None) is not None})


@dataclass
class CompressedCausalLMOutput(ModelOutput):
    """A vision-language model's output plus the compression accounting of the forward.

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
    scale), so such a class would load differently from the stock one. A subclass whose parent's conversions
    are keyed by the parent's class name (CLIPVisionModel's older `vision_model.` prefix) names that class in
    `key_conversions_of`, and gets them registered under its own name when it is defined.
    """

    key_conversions_of: str | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "key_conversions_of" in cls.__dict__:
            mapping = get_checkpoint_conversion_mapping(cls.key_conversions_of)
            if mapping is not None:
                register_checkpoint_conversion_mapping(cls.__name__, mapping, overwrite=True)

    @classmethod
    def is_custom_code(cls) -> bool:
        """Custom code only when loaded from the Hub: these classes load and initialise as the stock ones."""
        return cls.is_remote_code()


class CompressedModelMixin(StockModelingMixin):
    """The compressed forward shared by every adapter (see the module docstring for the interface)."""

    stock_class: type | None = None
    placeholder_attrs: tuple[str, ...] = ()
    pixel_inputs: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "stock_class" in cls.__dict__:  # an adapter; its own subclasses (other towers) keep its registration
            ADAPTERS[cls.stock_class] = cls

    def embed_multimodal(
        self, input_ids: torch.Tensor, visual: dict
    ) -> tuple[torch.Tensor, dict[int, int] | VisualLayout, dict]:
        """(embeddings (B, L, D), {placeholder id: segment length} or a VisualLayout, visual states to return)."""
        raise NotImplementedError

    def text_decoder(self):
        """The decoder that the compressed pass drives (embed_tokens, layers, rotary_emb, norm)."""
        raise NotImplementedError

    def rope_positions(self, input_ids, attention_mask, position_ids, visual: dict, decoding: bool):
        """The positions of the compressed pass (None: the decoder's default, continuing a compressed cache)."""
        return position_ids

    @property
    def num_decoder_layers(self) -> int:
        """N, the decoder's layer count, against which specs are checked."""
        return self.config.get_text_config(decoder=True).num_hidden_layers

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

    def resolve_compression(self, compression: SpecArgument) -> CompressionSpec | None:
        """The spec a call runs with: the config's for FROM_CONFIG, else the one given, checked against the model."""
        spec = self.compression_spec if check_spec_argument(compression) is FROM_CONFIG else compression
        if spec is not None:
            spec.check_fits(self.num_decoder_layers)
        return spec

    def _stats(self, spec: CompressionSpec | None, visual_in: torch.Tensor, visual_out: torch.Tensor):
        layer, stride = (spec.layer, spec.stride) if spec else (0, 1)
        return CompressionStats(self.num_decoder_layers, layer, stride, visual_in, visual_out)

    def _forward(self, visual: dict, inputs: dict, kwargs: dict, compression, output_compression: bool):
        """The stock forward when compression is off or a no-op, the compressed pass otherwise (see the module note)."""
        spec = self.resolve_compression(compression)
        if spec is not None and not spec.is_noop(self.num_decoder_layers):
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
            visual_tokens = torch.isin(input_ids, torch.tensor(placeholder_ids(self.config), device=input_ids.device))
            if mask is not None:
                visual_tokens &= mask[:, -input_ids.shape[1] :].bool()  # decode: the mask spans the past too
            n = visual_tokens.sum(1) - self.kept_placeholders(input_ids, out)
            stats = self._stats(spec, n, n)
        return CompressedCausalLMOutput(**out, compression=stats, attention_mask=mask)

    def kept_placeholders(self, input_ids: torch.Tensor, out) -> torch.Tensor | int:
        """(B,) placeholder tokens of a stock forward's output that compression would keep in place (not visual).

        For families whose placeholder runs hold such tokens (newline embeddings), so that the stock accounting
        counts the visual tokens the compressed one does; 0 by default.
        """
        return 0

    def _compressed_forward(
        self,
        spec,
        visual,
        input_ids,
        attention_mask,
        position_ids,
        past_key_values,
        inputs_embeds,
        labels,
        logits_to_keep,
        use_cache=None,
        **kwargs,
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
            use_cache = bool(self.config.get_text_config(decoder=True).use_cache) and not self.training

        if isinstance(past_key_values, CompressedCache) and past_key_values.prefill is not None:
            given = [k for k in self.pixel_inputs if k in visual]
            if given:
                raise ValueError(
                    f"{given} given with a compressed KV cache, which already holds the prompt's visual tokens: pass "
                    "only the new tokens (to continue generate() from a returned cache, pass the ids and attention "
                    "mask without pixel values, as the stock class needs too)"
                )
        # Placeholder ids without their pixel inputs are text, as in the stock forward: so is every id appended to
        # a compressed prefill, including a placeholder id that a model generates.
        inputs_embeds, segments, visual_states = self.embed_multimodal(input_ids, visual)
        decoding = isinstance(past_key_values, CompressedCache) and past_key_values.prefill is not None
        position_ids = self.rope_positions(input_ids, attention_mask, position_ids, visual, decoding)
        layout = segments if isinstance(segments, VisualLayout) else find_segments(input_ids, segments)

        query_index = None
        if spec.method == "fastv" and labels is not None:
            query_index = fastv_query_index(*input_ids.shape, attention_mask, labels)
        outputs, plan = compressed_decoder_forward(
            self.text_decoder(),
            inputs_embeds,
            layout,
            spec,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
            query_index=query_index,
            **kwargs,
        )
        logits = self.lm_head(slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep))
        loss = None
        if labels is not None:
            shift_labels = compressed_targets(labels, layout.is_visual, plan) if plan is not None else None
            loss = self.loss_function(
                logits=logits,
                labels=labels,
                shift_labels=shift_labels,
                vocab_size=self.config.get_text_config(decoder=True).vocab_size,
                **kwargs,
            )
        if plan is not None:
            stats, mask = self._stats(spec, plan.visual_in, plan.visual_out), plan.attention_mask
        else:  # a decode step: text only, appended after the compressed prefill
            zeros = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
            stats, mask = self._stats(spec, zeros, zeros), None
        return CompressedCausalLMOutput(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            compression=stats,
            attention_mask=mask,
            **visual_states,
        )


def enable_compression(model, spec: CompressionSpec | None):
    """Compress `model`'s visual tokens per `spec` from its next forward on; `None` restores stock behaviour.

    `model` is a stock transformers model whose class has a registered adapter (LLaVA, Video-LLaVA, ...) or an
    adapter instance already. It is changed in place and returned: its class becomes the adapter registered for
    its stock class (an adapter adds methods only, no modules, parameters or buffers, so weights and state-dict
    keys stay), and the spec is stored in `model.config` under `llavolta_compression`, so `save_pretrained`
    checkpoints carry it and stock transformers still loads them. Adapters register when they are defined;
    the installed ones are found through the `llavolta.adapters` entry points.
    """
    if isinstance(model, CompressedModelMixin):
        compressed = type(model)  # already compressed (or a subclass, e.g. with other towers): keep its class
    else:
        compressed = adapter_for(type(model))
    if spec is not None and not isinstance(spec, CompressionSpec):
        raise ValueError(f"spec must be a CompressionSpec or None, got {type(spec).__name__}")
    check_decoder(compressed.text_decoder(model))
    if spec is not None:
        spec.check_fits(model.config.get_text_config(decoder=True).num_hidden_layers)
    model.__class__ = compressed
    setattr(model.config, CONFIG_KEY, None if spec is None else spec.to_dict())
    return model


def adapter_for(stock_class: type) -> type:
    """The adapter class registered for a stock transformers class, loading the declared adapters if need be."""
    if stock_class not in ADAPTERS:
        for entry in entry_points(group=ADAPTER_ENTRY_POINTS):
            entry.load()  # defining the class registers it
    if stock_class not in ADAPTERS:
        raise ValueError(
            f"no compression adapter is registered for {stock_class.__name__}; registered: "
            f"{sorted(c.__name__ for c in ADAPTERS)} (a family's adapter is declared under the "
            f"{ADAPTER_ENTRY_POINTS!r} entry points, or registers when its module is imported)"
        )
    return ADAPTERS[stock_class]
