"""Visual Context Compressor: average pooling of visual tokens inside the LLM after layer K with stride S.

The core of the toolkit. It knows token ids, segment lengths, positions and hidden states, and no model family:
families plug in through adapters (`adapter.CompressedModelMixin`), e.g. `image_llavolta.models.llava`.
"""

from .accounting import CompressionStats, compression_ratio, pooled_length, ratio_over_layers, tokens_over_layers
from .adapter import (
    ADAPTERS,
    CompressedCausalLMOutput,
    CompressedModelMixin,
    StockModelingMixin,
    adapter_for,
    enable_compression,
    placeholder_ids,
)
from .cache import CompressedCache
from .segments import VisualLayout, find_segments, layout_from_segment_index
from .spec import (
    CONFIG_KEY,
    FROM_CONFIG,
    GRAMMAR,
    CompressionSpec,
    FromConfig,
    SpecArgument,
    check_spec_argument,
    parse_spec,
    spec_label,
)

__all__ = [
    "ADAPTERS",
    "CONFIG_KEY",
    "FROM_CONFIG",
    "GRAMMAR",
    "CompressedCache",
    "CompressedCausalLMOutput",
    "CompressedModelMixin",
    "CompressionSpec",
    "CompressionStats",
    "FromConfig",
    "SpecArgument",
    "StockModelingMixin",
    "adapter_for",
    "check_spec_argument",
    "compression_ratio",
    "enable_compression",
    "VisualLayout",
    "find_segments",
    "layout_from_segment_index",
    "parse_spec",
    "placeholder_ids",
    "pooled_length",
    "ratio_over_layers",
    "spec_label",
    "tokens_over_layers",
]
