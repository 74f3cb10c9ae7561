"""Small helpers several test files share: JSONL files written and read plainly, a stand-in for a kill, and the
`llavolta` console script run as a user runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Killed(BaseException):
    """Stands for a kill: nothing in the library catches it."""


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Every line of a JSONL file, parsed."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: str | os.PathLike, records) -> None:
    """One JSON object per line."""
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


def llavolta(*args, **kwargs) -> subprocess.CompletedProcess:
    """Run the installed `llavolta` console script (beside this interpreter) from the repository root."""
    script = shutil.which("llavolta", path=os.path.dirname(sys.executable))
    assert script, "no llavolta console script beside the interpreter: reinstall the package (pip install -e .)"
    return subprocess.run([script, *map(str, args)], cwd=REPO, capture_output=True, text=True, **kwargs)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a launcher's rendezvous)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
