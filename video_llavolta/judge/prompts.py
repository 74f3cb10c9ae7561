"""What the LLM judge is asked: the Video-ChatGPT protocol (a yes/no match and a 0-5 score), in our own words.

The prompts ask for one JSON object at temperature 0. `RUBRIC_VERSION` names them: it is part of every cache key
and of every video QA spec's judge settings, so a change of wording must come with a new version.
"""

from __future__ import annotations

import re

DEFAULT_JUDGE_MODEL = "gpt-3.5-turbo-0125"  # a dated snapshot: "gpt-3.5-turbo" moves under you
RUBRIC_VERSION = "qa-match-v1"

SYSTEM_PROMPT = (
    "You grade answers to questions about videos. For each case you get a question, the reference answer and "
    "the answer a model gave. Decide whether the model's answer means the same as the reference answer.\n"
    "- Judge the meaning, not the wording: synonyms, paraphrases and a different phrasing of the same fact "
    "count as a match.\n"
    "- An answer that states a different fact, contradicts the reference or does not answer the question is "
    "not a match.\n"
    "- Also rate how well the model's answer agrees with the reference as a whole number from 0 (wrong or "
    "unrelated) to 5 (the same meaning in full).\n"
    'Reply with one JSON object and nothing else, for example {"pred": "yes", "score": 4}. "pred" is "yes" '
    'when the answers match and "no" when they do not; "score" is an integer from 0 to 5.'
)
USER_PROMPT = (
    "Question: {question}\n"
    "Reference answer: {answer}\n"
    "Model's answer: {pred}\n"
    'Reply with the JSON object only, e.g. {{"pred": "no", "score": 1}}.'
)

_SNAPSHOT_SUFFIX = re.compile(r"-(\d{4}(-\d{2}-\d{2})?|\d{8})$")  # -0125, -2024-05-13: a pinned snapshot


def judge_messages(question: str, answer: str, pred: str) -> list[dict]:
    """The chat messages that ask for one judgment."""
    user = USER_PROMPT.format(question=question, answer=answer, pred=pred)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def is_pinned(model: str) -> bool:
    """Whether a model name ends in a dated snapshot (`-0125`, `-2024-05-13`) rather than a moving alias."""
    return _SNAPSHOT_SUFFIX.search(model) is not None


def check_rubric(rubric: str, where: str) -> None:
    """Refuse a benchmark whose judge settings name another rubric than these prompts."""
    if rubric != RUBRIC_VERSION:
        raise ValueError(f"{where} asks for judge rubric {rubric!r}, but this judge's prompts are {RUBRIC_VERSION!r}")
