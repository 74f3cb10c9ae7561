"""Small helpers several test files share: JSONL files written and read plainly, and a stand-in for a kill."""
from __future__ import annotations

import json
import os


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
