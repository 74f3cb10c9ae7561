"""`python -m image_llavolta.efficiency`: the efficiency report of LLaVA models (`llavolta efficiency`: all)."""

import sys

from .report import main

if __name__ == "__main__":
    sys.exit(main())
