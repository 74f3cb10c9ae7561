"""Efficiency report (tokens, CR, FLOPs, TTFT, decode tokens/s, peak memory): a thin entry to `image_llavolta.efficiency`.

With no arguments: the paper's Table 5 settings on a tiny model of the paper's shape (32 layers, 576 image tokens,
hidden 64), plus the analytic TFLOPs of the real LLaVA-1.5-7B shape against the paper's column. Any arguments
go to `python -m image_llavolta.efficiency` unchanged (see its --help), e.g.
`--checkpoint /models/llava-1.5-7b-hf --dtype bfloat16 --out runs/efficiency.json`.
"""
from __future__ import annotations

import sys

from image_llavolta.efficiency import main

if __name__ == "__main__":
    main(sys.argv[1:] or ["--tiny", "--paper-7b"])
