"""`llavolta efficiency`: the efficiency report (FLOPs, memory, time per compression setting) for every model family.

The same options as `python -m image_llavolta.efficiency`, which knows the LLaVA family only (the image package
never imports the video one); this command passes every family of `video_llavolta.families.FAMILIES`.
"""

from __future__ import annotations

import argparse

from image_llavolta.commands import command_main
from image_llavolta.efficiency.report import add_arguments
from image_llavolta.efficiency.report import run as run_report
from video_llavolta.families import FAMILIES

__all__ = ["add_arguments", "main", "run"]


def run(args: argparse.Namespace) -> int:
    """The report over every family."""
    return run_report(args, FAMILIES)


main = command_main(add_arguments, run, "python -m llavolta.efficiency", __doc__)
