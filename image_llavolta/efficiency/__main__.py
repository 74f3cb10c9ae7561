"""`python -m image_llavolta.efficiency`: the efficiency report of LLaVA models (`llavolta efficiency`: all)."""
import sys

from .report import main

sys.exit(main())
