"""LLaVolta for video: Video-LLaVA-style models, staged video training and video QA evaluation.

The Visual Context Compressor itself lives in `image_llavolta.compression` and already handles
transformers' `VideoLlavaForConditionalGeneration` (one pooling segment per frame).
"""
