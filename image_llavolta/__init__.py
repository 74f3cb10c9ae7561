"""LLaVolta for images: the shared Visual Context Compressor core and the LLaVA-1.5 pipeline."""
