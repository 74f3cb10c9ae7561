"""Offline judges for CI and the quickstart: string matching, no API. Not comparable with LLM-judged numbers.

"exact": identical after stripping whitespace. "normalized" (`normalize_open_answer`): lowercase, punctuation to
spaces, articles dropped, number words up to twenty as digits. A match scores 5, anything else 0. This is looser
than the VQA normaliser of image scoring (`image_llavolta.scoring.normalize_vqa_answer`, which follows VQAv2's
rules for short answers): open-ended video answers are compared as a whole, not against ten human answers.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from .replies import Judgment

OFFLINE_NOTE = (
    "offline string match: score 5 for a match, 0 otherwise. NOT comparable with GPT-judged accuracy or score."
)
NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen twenty".split()
    )
}
ARTICLES = frozenset({"a", "an", "the"})


def normalize_open_answer(text: str) -> str:
    """Lowercase, punctuation to spaces, articles dropped, number words as digits, single spaces."""
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text.lower())
    return " ".join(NUMBER_WORDS.get(word, word) for word in text.split() if word not in ARTICLES)


class OfflineJudge:
    """String match without any API: "exact" or "normalized". Scores 5 for a match, 0 otherwise."""

    comparable_with_gpt = False

    def __init__(self, mode: str = "normalized"):
        if mode not in ("exact", "normalized"):
            raise ValueError(f"OfflineJudge mode must be 'exact' or 'normalized', got {mode!r}")
        self.mode = mode
        self.name = f"offline-{mode}"

    def describe(self) -> dict:
        """What the results JSON records about this judge."""
        return {
            "name": self.name,
            "kind": "offline",
            "mode": self.mode,
            "comparable_with_gpt_judged": False,
            "note": OFFLINE_NOTE,
        }

    def same(self, answer: str, pred: str) -> bool:
        """Whether a prediction matches the reference under this judge's mode."""
        if self.mode == "exact":
            return pred.strip() == answer.strip()
        return normalize_open_answer(pred) == normalize_open_answer(answer)

    def judge_many(self, items: Sequence[tuple[str, str, str]]) -> list[Judgment]:
        """Judge (question, answer, prediction) triples."""
        return [Judgment(m, 5 if m else 0) for m in (self.same(a, p) for _, a, p in items)]
