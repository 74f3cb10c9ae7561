"""The process group of a multi-rank run: started with the run's collective timeout.

On CPU, transformers and accelerate start the (gloo) group without the configured `ddp_timeout`, so gloo's own
default, 30 minutes, would apply to a dead or stuck peer; the group is started here first, with the timeout. On
GPUs they pass the timeout on to NCCL themselves. docs/distributed.md says how a hang shows itself.
"""

from __future__ import annotations

import datetime
import os

import torch


def init_process_group(timeout_seconds: int) -> bool:
    """Join the launcher's CPU process group (gloo) with `timeout_seconds` per collective; True if started here."""
    dist = torch.distributed
    if torch.cuda.is_available() or int(os.environ.get("WORLD_SIZE", "1")) < 2 or dist.is_initialized():
        return False
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout_seconds))
    return True
