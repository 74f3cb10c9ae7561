"""Scoring image-benchmark answers: VQA-style short answers, yes/no and multiple choice, and their metrics.

Normalisation (`normalize_vqa_answer`) follows the standard VQAv2 evaluation, re-implemented: newlines and tabs to
spaces, lowercase; each punctuation mark in `PUNCTUATION` is deleted when it touches a space (or when the text
holds a digit,digit comma, so "1,000" -> "1000"), else replaced by a space ("black/white" -> "black white"); a
period is deleted unless a digit follows it ("3.5" stays); number words zero..ten become digits; the articles
a / an / the are dropped; apostrophe-less contractions get their apostrophe back ("dont" -> "don't").

Short answers:
- `vqa_accuracy` (VQAv2, TextVQA): with n > 1 reference answers, min(#other references equal to the prediction / 3,
  1), averaged over the n leave-one-out subsets (the official script's average over the 10 choose 9 subsets).
  Unlike the official script, both sides are always normalised (it skips normalisation when all 10 references
  agree, so there a raw "Yes." would not match "yes"). With one reference it is exact match.
- `exact_match` (GQA): the normalised prediction equals the normalised reference.

Yes/no (`parse_yes_no`): "yes" or "no" as the first word ("Yes, there is a dog." -> yes); otherwise the first
sentence decides if it holds only affirmative ("yes") or only negative words ("no", "not", "...n't"); anything
else is unparsed and scored wrong, never guessed.

Multiple choice (`extract_choice`): a bare letter ("B", "(B)", "B."), a leading letter with a delimiter
("B. cat", "(B) cat", "B: cat") or a letter named by "answer is / answer: / option / choice" or in parentheses
("The answer is B"), when the output names no other letter; else the text of exactly one option ("cat"). A letter
outside the options, several different letters, or none is unparsed and scored wrong, with the reason recorded.
An "A" starting a sentence is never read as a letter unless a delimiter follows it.

Metrics (every question counts; a missing or unparsed prediction scores 0):
- `exact_match`, `vqa_accuracy`, `accuracy`: the mean score.
- `pope`: accuracy, and precision / recall / F1 with "yes" as the positive class, and the share of "yes" answers.
  With categories (POPE's adversarial / popular / random) each is reported per category and as their mean.
- `mme`: per category (subtask) accuracy, accuracy+ (the share of images whose questions are all right) and
  score = 100 * (accuracy + accuracy+); perception and cognition are the sums of their subtasks' scores.

This module imports neither torch nor transformers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# ---------------------------------------------------------------------------------------------------
# VQA normalisation

PUNCTUATION = ';/[]"{}()=+\\_-><@`,?!'
_DIGIT_COMMA = re.compile(r"\d,\d")
_PERIOD = re.compile(r"\.(?!\d)")
NUMBER_WORDS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}
NUMBER_WORDS["none"] = "0"  # as the VQA evaluation does
ARTICLES = frozenset({"a", "an", "the"})
# Contractions written without their apostrophe map back to the apostrophe form (a few double ones too).
_CONTRACTED = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't he'd "
    "he'd've he's how'd how'll how's i'd i'd've i'm i've isn't it'd it'd've it'll let's ma'am mightn't mightn't've "
    "might've mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd she'd've she's should've "
    "shouldn't shouldn't've somebody'd somebody'd've somebody'll somebody's someone'd someone'd've someone'll "
    "someone's something'd something'd've something'll that's there'd there'd've there're there's they'd "
    "they'd've they'll they're they've 'twas wasn't we'd've we've weren't what'll what're what's what've when's "
    "where'd where's where've who'd who'd've who'll who's who've why'll why're why's won't would've wouldn't "
    "wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're you've"
).split()
CONTRACTIONS = {w.replace("'", ""): w for w in _CONTRACTED}


def _punctuation(text: str) -> str:
    """Delete a punctuation mark that touches a space (or any, beside a digit,digit comma), else space it out."""
    delete_all = _DIGIT_COMMA.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        if mark not in text:
            continue
        touches_space = f"{mark} " in text or f" {mark}" in text
        out = out.replace(mark, "" if touches_space or delete_all else " ")
    return _PERIOD.sub("", out)


def normalize_vqa_answer(text: str) -> str:
    """VQA-style normalisation: lowercase, punctuation, number words as digits, no articles, contractions."""
    text = text.replace("\n", " ").replace("\t", " ").strip().lower()
    words = (NUMBER_WORDS.get(w, w) for w in _punctuation(text).split())
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def vqa_accuracy(pred: str, answers: Sequence[str]) -> float:
    """VQA accuracy of a prediction against n human answers (exact match when n == 1); see the module doc."""
    if isinstance(answers, str) or not answers:
        raise ValueError(f"answers must be a non-empty list of strings, got {answers!r}")
    guess = normalize_vqa_answer(pred)
    refs = [normalize_vqa_answer(a) for a in answers]
    if len(refs) == 1:
        return float(guess == refs[0])
    matches = [ref == guess for ref in refs]
    hits = sum(matches)
    # Leaving out a matching answer leaves hits - 1 matches among the others, leaving out another one leaves hits.
    return sum(min(1.0, (hits - m) / 3) for m in matches) / len(refs)


def exact_match(pred: str, answer: str) -> float:
    """1.0 if the normalised prediction equals the normalised reference, else 0.0."""
    return float(normalize_vqa_answer(pred) == normalize_vqa_answer(answer))


# ---------------------------------------------------------------------------------------------------
# Yes / no

_SENTENCE_END = re.compile(r"[.!?\n;]")
NEGATIONS = frozenset({"no", "not", "never", "none", "nothing"})


def parse_yes_no(text: str) -> tuple[str | None, str | None]:
    """("yes" | "no", None), or (None, why) when the output says neither or both; see the module doc."""
    words = normalize_vqa_answer(text).split()
    if not words:
        return None, "empty output"
    if words[0] in ("yes", "no"):
        return words[0], None
    first = next((s for s in _SENTENCE_END.split(text) if s.strip()), "")
    words = [w for w in re.split(r"[^a-z']+", first.lower()) if w]
    affirmative = "yes" in words
    negative = any(w in NEGATIONS or w.endswith("n't") for w in words)
    if affirmative and not negative:
        return "yes", None
    if negative and not affirmative:
        return "no", None
    return None, ("both yes and no in the first sentence" if affirmative else "no yes or no in the first sentence")


# ---------------------------------------------------------------------------------------------------
# Multiple choice

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_BARE = re.compile(r"\(?([A-Za-z])\)?[.:)]?")
_LEADING = re.compile(r"\(?([A-Z])(?:[.:)]|\)[.:]?)(?:\s|$)")
_NAMED = re.compile(
    r"(?i:\b(?:answer|option|choice)\b)(?:\s+(?i:is|would\s+be|should\s+be))?\s*:?\s*"
    r"(?i:option\s+)?\(?([A-Z])\b(?!['’])"
)
_PARENTHESISED = re.compile(r"\(([A-Z])\)")


def extract_choice(text: str, options: Sequence[str]) -> tuple[str | None, str | None]:
    """(letter, None) for the option an output names, or (None, why) when it names none, a wrong one or several."""
    valid = LETTERS[: len(options)]
    out = text.strip()

    def checked(letter: str) -> tuple[str | None, str | None]:
        return (letter, None) if letter in valid else (None, f"letter {letter} is not one of the options {valid}")

    if m := _BARE.fullmatch(out):
        return checked(m.group(1).upper())
    leading = _LEADING.match(out)
    named = [leading.group(1)] if leading else []
    named = list(dict.fromkeys(named + [m.group(1) for r in (_NAMED, _PARENTHESISED) for m in r.finditer(out)]))
    if len(named) == 1:
        return checked(named[0])
    if len(named) > 1:
        return None, f"ambiguous: names {', '.join(named)}"
    said = normalize_vqa_answer(out)
    same = [letter for letter, option in zip(valid, options) if said and normalize_vqa_answer(option) == said]
    if len(same) == 1:
        return same[0], None
    if len(same) > 1:
        return None, f"ambiguous: the text of options {', '.join(same)}"
    return None, "no option letter or option text found"


# ---------------------------------------------------------------------------------------------------
# Metrics

MME_PERCEPTION = (
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "OCR",
)
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def mean_score(rows: Sequence[dict]) -> dict:
    """{"accuracy": the mean score over all rows} (missing and unparsed rows score 0)."""
    return {"accuracy": _ratio(sum(r["score"] for r in rows), len(rows))}


def pope_metrics(rows: Sequence[dict]) -> dict:
    """Accuracy, precision / recall / F1 of "yes", and the share of "yes" answers over all rows."""
    said_yes = [r["parsed"] == "yes" for r in rows]
    is_yes = [r["answer"] == "yes" for r in rows]
    tp = sum(s and y for s, y in zip(said_yes, is_yes))
    precision, recall = _ratio(tp, sum(said_yes)), _ratio(tp, sum(is_yes))
    if precision is None or recall is None:
        f1 = None
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": mean_score(rows)["accuracy"],
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": _ratio(sum(said_yes), len(rows)),
    }


def mme_metrics(rows: Sequence[dict]) -> dict:
    """Accuracy, accuracy+ (all questions of an image right) and score = 100 * (accuracy + accuracy+)."""
    images: dict[str, list[float]] = {}
    for r in rows:
        images.setdefault(r["image"], []).append(r["score"])
    accuracy = _ratio(sum(r["score"] for r in rows), len(rows))
    accuracy_plus = _ratio(sum(all(s == 1 for s in scores) for scores in images.values()), len(images))
    score = None if accuracy is None else 100 * (accuracy + accuracy_plus)
    return {"accuracy": accuracy, "accuracy_plus": accuracy_plus, "score": score}


METRICS = {
    "exact_match": mean_score,
    "vqa_accuracy": mean_score,
    "accuracy": mean_score,
    "pope": pope_metrics,
    "mme": mme_metrics,
}


def summarize(metric: str, rows: Sequence[dict], by_category: bool) -> dict:
    """Overall metrics, per-category metrics when asked, and the metric's aggregates over categories."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {sorted(METRICS)}")
    fn = METRICS[metric]
    out = {"overall": fn(rows), "by_category": {}, "aggregate": {}}
    if not by_category:
        return out
    categories = sorted({r["category"] for r in rows}, key=str)
    out["by_category"] = {c: fn([r for r in rows if r["category"] == c]) for c in categories}
    per = out["by_category"].values()
    if metric == "mme":

        def total(names) -> float | None:
            scores = [out["by_category"][c]["score"] for c in names if c in out["by_category"]]
            return sum(scores) if scores else None

        out["aggregate"] = {
            "perception": total(MME_PERCEPTION),
            "cognition": total(MME_COGNITION),
            "total": total(out["by_category"]),
        }
        out["overall"]["score"] = None  # MME's score is per subtask and summed (aggregate), never pooled
    elif per:
        keys = next(iter(per)).keys()
        out["aggregate"] = {f"{k}_mean_over_categories": _mean([m[k] for m in per]) for k in keys}
    return out


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None
