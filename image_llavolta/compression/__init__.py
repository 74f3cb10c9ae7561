"""Visual Context Compressor: average pooling of visual tokens inside the LLM after layer K with stride S."""
from .models import (
    CompressedCausalLMOutput,
    LlavoltaForConditionalGeneration,
    VideoLlavoltaForConditionalGeneration,
    enable_compression,
)
from .spec import CONFIG_KEY, CompressionSpec, CompressionStats, compression_ratio, pooled_length

__all__ = [
    "CONFIG_KEY",
    "CompressedCausalLMOutput",
    "CompressionSpec",
    "CompressionStats",
    "LlavoltaForConditionalGeneration",
    "VideoLlavoltaForConditionalGeneration",
    "compression_ratio",
    "enable_compression",
    "pooled_length",
]
