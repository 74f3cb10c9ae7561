"""A judge's verdict and how an LLM reply becomes one: JSON or a Python dict literal, never `eval`."""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Judgment:
    """The verdict on one prediction. `status`: "judged", "parse_failure" or "api_error"."""

    match: bool | None
    score: int | None
    status: str = "judged"
    reply: str | None = None  # the judge's raw reply (LLM judges)
    error: str | None = None


class JudgeParseError(ValueError):
    """A judge reply without a usable yes/no and 0-5 score."""


def _reply_dict(text: str) -> dict | None:
    """The dict in a reply: its `{...}` part as JSON or a Python literal, else `pred: yes ... score: 4` text."""
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        snippet = text[start : end + 1]
        for load in (json.loads, ast.literal_eval):  # literal_eval evaluates literals only, never code
            try:
                value = load(snippet)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            if isinstance(value, dict):
                return value
    pred = re.search(r"""\bpred\b['"]?\s*[:=]\s*['"]?(yes|no)\b""", text, re.IGNORECASE)
    score = re.search(r"""\bscore\b['"]?\s*[:=]\s*['"]?(\d+(?:\.\d+)?)""", text, re.IGNORECASE)
    return {"pred": pred.group(1), "score": score.group(1)} if pred and score else None


def parse_reply(text: str) -> tuple[bool, int]:
    """(match, score) from a judge reply such as `{"pred": "yes", "score": 4}`; JudgeParseError if unusable."""
    data = _reply_dict(text or "")
    if data is None:
        raise JudgeParseError(f"no {{'pred': ..., 'score': ...}} in the reply {text[:200]!r}")
    data = {str(k).strip().lower(): v for k, v in data.items()}
    pred, score = data.get("pred"), data.get("score")
    if isinstance(pred, bool):
        match = pred
    elif isinstance(pred, str) and pred.strip().lower() in ("yes", "no"):
        match = pred.strip().lower() == "yes"
    else:
        raise JudgeParseError(f"'pred' must be 'yes' or 'no', got {pred!r}")
    if isinstance(score, str):
        try:
            score = float(score.strip())
        except ValueError:
            raise JudgeParseError(f"'score' is not a number: {score!r}") from None
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise JudgeParseError(f"'score' must be a number from 0 to 5, got {score!r}")
    rounded = math.floor(score + 0.5)  # half up (4.5 -> 5), not Python's round-half-even
    if not 0 <= rounded <= 5:
        raise JudgeParseError(f"'score' must be from 0 to 5, got {score!r}")
    return match, rounded
