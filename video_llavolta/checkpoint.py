"""Loading Video-LLaVA checkpoints (Hugging Face layout) with the toolkit's towers and compression setting."""

from __future__ import annotations

import logging
import os

from image_llavolta.checkpoint import CheckpointMismatchError, load_model, read_config, stored_compression
from image_llavolta.compression import FROM_CONFIG, SpecArgument, check_spec_argument, enable_compression

from .configs import TEMPORAL_KEY, temporal_attention
from .models.languagebind import TemporalCLIPEncoderLayer, is_temporal_key
from .models.video_llava import VideoLlavoltaForConditionalGeneration

logger = logging.getLogger(__name__)


def load_pretrained(
    path: str | os.PathLike,
    compression: SpecArgument = FROM_CONFIG,
    temporal: bool | None = None,
    ignore_temporal_mismatch: bool = False,
    **kwargs,
) -> VideoLlavoltaForConditionalGeneration:
    """Load a Video-LLaVA directory (`Video-LLaVA-7B-hf` layout or the toolkit's own) from a local path.

    `temporal` overrides the config's `video_temporal_attention`. A checkpoint whose temporal-attention weights
    do not match the tower (present but unused, or needed but absent) is an error unless
    `ignore_temporal_mismatch`: then unused weights are dropped, and absent ones start as an identity branch
    (zero time embedding and output projection), which leaves the video features unchanged until trained.
    """
    config = read_config(path)
    if config.model_type != "video_llava":
        raise ValueError(f"{path}: model_type {config.model_type!r} is not 'video_llava'")
    if check_spec_argument(compression) is FROM_CONFIG:
        compression = stored_compression(path, config)
    if temporal is not None:
        setattr(config, TEMPORAL_KEY, temporal)
    try:
        model, missing, unexpected = load_model(
            VideoLlavoltaForConditionalGeneration,
            path,
            config,
            allow=is_temporal_key if ignore_temporal_mismatch else lambda key: False,
            **kwargs,
        )
    except CheckpointMismatchError as err:
        if "temporal_" not in str(err):
            raise
        has = "has no" if temporal_attention(config) else "has"
        raise CheckpointMismatchError(
            f"{err}\nThe checkpoint {has} temporal-attention weights but the video tower is configured with "
            f"{TEMPORAL_KEY}={temporal_attention(config)}. Pass temporal=... to match the checkpoint, or "
            "ignore_temporal_mismatch=True to drop unused weights / start absent ones as an identity branch."
        ) from None
    if missing:
        for layer in model.model.video_tower.encoder.layers:
            if isinstance(layer, TemporalCLIPEncoderLayer):
                layer.make_identity()
        logger.warning("%s has no temporal-attention weights: the temporal branch starts as identity", path)
    if unexpected:
        logger.warning(
            "%s: dropped %d temporal-attention weights (tower without temporal attention)", path, len(unexpected)
        )
    return enable_compression(model, compression)
