"""LanguageBind's video tower: a CLIP vision transformer whose blocks may attend over the frame axis.

LanguageBind_Video (the video encoder of Video-LLaVA) puts a temporal branch in front of every CLIP encoder
block: a learned per-frame embedding is added, then each patch position attends over the T frames of its
video (pre-norm, residual), then the usual spatial block runs per frame. transformers' Video-LLaVA port uses a
plain CLIP tower, which silently drops these weights; here the branch is kept, and the parameter names match
LanguageBind's (`temporal_embedding`, `temporal_layer_norm1`, `temporal_attn`) so checkpoints map one to one.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel
from transformers import initialization as init
from transformers.models.clip.modeling_clip import CLIPAttention, CLIPEncoderLayer

from image_llavolta.compression import StockModelingMixin

TEMPORAL_KEYS = ("temporal_embedding", "temporal_layer_norm1.", "temporal_attn.")


def is_temporal_key(key: str) -> bool:
    """Whether a state-dict key belongs to a temporal-attention branch."""
    return any(f".{k}" in key or key.startswith(k) for k in TEMPORAL_KEYS)


class TemporalCLIPEncoderLayer(CLIPEncoderLayer):
    """A CLIP encoder block preceded by attention over the frames of each video (input rows are (video, frame))."""

    def __init__(self, config: CLIPVisionConfig, num_frames: int):
        super().__init__(config)
        self.num_frames = num_frames
        self.temporal_embedding = nn.Parameter(torch.zeros(1, num_frames, config.hidden_size))
        self.temporal_layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.temporal_attn = CLIPAttention(config)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, **kwargs) -> torch.Tensor:
        rows, tokens, dim = hidden_states.shape
        t = self.num_frames
        if rows % t:
            raise ValueError(
                f"the video tower has temporal attention over {t} frames, but got {rows} frames in the batch: "
                f"every video must have exactly {t} frames"
            )
        x = hidden_states.view(rows // t, t, tokens, dim)
        if t > 1:  # LanguageBind adds no time embedding to single-frame inputs
            x = x + self.temporal_embedding[0, :, None, :]
        per_position = self.temporal_layer_norm1(x).transpose(1, 2).reshape(-1, t, dim)  # (video·token, frame, dim)
        attended, _ = self.temporal_attn(per_position, None, **kwargs)
        x = x + attended.view(rows // t, tokens, t, dim).transpose(1, 2)
        return super().forward(x.reshape(rows, tokens, dim), attention_mask, **kwargs)

    def make_identity(self) -> None:
        """Zero the time embedding and the attention output, so the temporal branch passes its input through."""
        with torch.no_grad():
            self.temporal_embedding.zero_()
            self.temporal_attn.out_proj.weight.zero_()
            self.temporal_attn.out_proj.bias.zero_()


class LanguageBindVideoTower(StockModelingMixin, CLIPVisionModel):
    """CLIP vision model with LanguageBind's temporal attention in every encoder block (T frames per video)."""

    key_conversions_of = "CLIPVisionModel"  # the older `vision_model.` prefix

    def __init__(self, config: CLIPVisionConfig, num_frames: int):
        super().__init__(config)
        self.num_frames = num_frames
        self.encoder.layers = nn.ModuleList(
            TemporalCLIPEncoderLayer(config, num_frames) for _ in range(config.num_hidden_layers)
        )
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        """CLIP's initialisation, plus LanguageBind's normal(std=hidden**-0.5) time embedding."""
        super()._init_weights(module)
        if isinstance(module, TemporalCLIPEncoderLayer):
            init.normal_(module.temporal_embedding, std=module.embed_dim**-0.5)
