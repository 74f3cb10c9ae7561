"""Efficiency report (tokens, CR, FLOPs, TTFT, decode tokens/s, peak memory): a thin entry to its command line.

With no arguments: the paper's Table 5 settings on a tiny model of the paper's shape (32 layers, 576 image tokens,
hidden 64), plus the analytic TFLOPs of the real LLaVA-1.5-7B shape against the paper's column. Arguments are
those of `llavolta efficiency` (every model family; see `python -m image_llavolta.efficiency --help`), e.g.
`--checkpoint /models/llava-1.5-7b-hf --dtype bfloat16 --out runs/efficiency.json`.
"""

from __future__ import annotations

import sys

from image_llavolta.efficiency.report import main
from video_llavolta.families import FAMILIES

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["--tiny", "--paper-7b"], FAMILIES))
