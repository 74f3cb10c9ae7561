"""The rules import-linter cannot state: the core names no model family, and finds adapters it never imports."""

import ast
import pathlib
import subprocess
import sys

import image_llavolta.compression

CORE = pathlib.Path(image_llavolta.compression.__file__).parent


def imported_modules(path: pathlib.Path) -> set[str]:
    """Every module a source file imports (absolute names; relative imports stay inside its package)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_the_compressor_core_imports_no_model_family():
    families = {
        f: sorted(
            m
            for m in imported_modules(f)
            if m.startswith("transformers.models")
            or m.endswith("ForConditionalGeneration")
            or m.endswith("ForCausalLM")
        )
        for f in CORE.glob("*.py")
    }
    assert {f.name: found for f, found in families.items() if found} == {}


def test_enable_compression_finds_every_declared_adapter_without_importing_it_first():
    # A fresh interpreter that imports the core only: the Video-LLaVA adapter comes from the entry points.
    code = """
import sys
from transformers import VideoLlavaConfig, VideoLlavaForConditionalGeneration
from transformers import CLIPVisionConfig, LlamaConfig
from image_llavolta.compression import CompressionSpec, enable_compression
assert "video_llavolta" not in sys.modules
config = VideoLlavaConfig(
    vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   image_size=28, patch_size=14),
    text_config=LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                            num_attention_heads=2),
    image_token_index=62, video_token_index=63)
model = enable_compression(VideoLlavaForConditionalGeneration(config), CompressionSpec(1, 2))
print(type(model).__module__, type(model).__name__)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["video_llavolta.models.video_llava", "VideoLlavoltaForConditionalGeneration"]
