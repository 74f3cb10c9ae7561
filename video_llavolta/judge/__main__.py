"""`python -m video_llavolta.judge`."""
import sys

from .cli import main

sys.exit(main())
