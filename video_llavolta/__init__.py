"""LLaVolta for video: Video-LLaVA-style models, frame sampling, staged video training and video QA evaluation.

Import what you need from the module that holds it (the package itself imports nothing, so that
`frames` stays usable without loading torch or transformers):

- `frames`: uniform frame sampling (decord, PyAV, frame directories) and its typed errors
- `processing`: frame preprocessing (images: `image_llavolta.processing`)
- `models`: the model adapters (`video_llava`, `qwen_vl`) and LanguageBind's video tower (`languagebind`)
- `configs`: the fields the toolkit adds to Video-LLaVA configs, real and tiny configs, visual token counts
- `families`: the Video-LLaVA model family and `FAMILIES`, every family of the toolkit (`family_for`)
- `checkpoint`, `convert`: strict loading of HF-format directories; the original-layout converter
- `inputs`: prompt + media → model inputs, batching
- `qwen`: the Qwen2-VL / Qwen2.5-VL families: loading, frames to patches, chat-template prompts, tower FLOPs

The Visual Context Compressor itself lives in `image_llavolta.compression` (one pooling segment per frame).
"""
