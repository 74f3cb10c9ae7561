"""The LLaVA adapter: transformers' `LlavaForConditionalGeneration` with the Visual Context Compressor.

One segment per image (LLaVA-1.5: 576 tokens); every image of a batch must give the same token count.
"""

import torch
from transformers import LlavaForConditionalGeneration
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.llava.modeling_llava import LlavaCausalLMOutputWithPast
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple

from ..compression import FROM_CONFIG, CompressedCausalLMOutput, CompressedModelMixin, SpecArgument


class LlavoltaForConditionalGeneration(CompressedModelMixin, LlavaForConditionalGeneration):
    """transformers' LLaVA with the Visual Context Compressor (one segment per image)."""

    stock_class = LlavaForConditionalGeneration
    placeholder_attrs = ("image_token_id",)
    pixel_inputs = ("pixel_values", "mm_encoder_outputs")

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
        compression: SpecArgument = FROM_CONFIG,
        output_compression: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | LlavaCausalLMOutputWithPast | CompressedCausalLMOutput:
        """LlavaForConditionalGeneration.forward, with visual tokens pooled per the config's compression spec.

        `compression` overrides that spec for this call (the staged trainer passes each step's);
        `output_compression=True` returns the accounting even when nothing is compressed.
        """
        visual = dict(
            pixel_values=pixel_values,
            vision_feature_layer=vision_feature_layer,
            image_sizes=image_sizes,
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
        return self._forward(visual, inputs, kwargs, compression, output_compression)

    def text_decoder(self):
        """The Llama/Vicuna decoder."""
        return self.model.language_model

    def embed_multimodal(self, input_ids, visual):
        """Text embeddings with image features scattered in, and each image's token count."""
        pixel_values = visual.get("pixel_values")
        encoded = (visual.get("mm_encoder_outputs") or {}).get("image")
        image_kwargs = {
            k: visual[k]
            for k in ("vision_feature_layer", "vision_feature_select_strategy", "image_sizes")
            if k in visual
        }
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
