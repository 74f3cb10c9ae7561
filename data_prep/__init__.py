"""Data preparation for LLaVolta: `python -m data_prep <sub-command>`.

- ``extract-frames``  sample T frames of every video into frame directories (resumable, parallel)
- ``convert-qa``      MSVD-QA / MSRVTT-QA / ActivityNet-QA to one unified QA JSONL, with a report
- ``validate``        check LLaVA / Video-LLaVA instruction JSON (placeholders, roles, media, ids)
- ``make-synthetic``  the built-in moving-shapes video QA data set, deterministic from a seed

Builds on `video_llavolta.frames` only; nothing here imports training or evaluation code.
"""
