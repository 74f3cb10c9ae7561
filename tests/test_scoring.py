"""Answer scoring on hand-made examples: VQA normalisation and accuracy, yes/no parsing, option letters, metrics."""

import pytest

from image_llavolta.scoring import (
    exact_match,
    extract_choice,
    normalize_vqa_answer,
    parse_yes_no,
    summarize,
    vqa_accuracy,
)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Two dogs.", "2 dogs"),  # number word, final period
        ("The man's hat", "man's hat"),  # article dropped, possessive apostrophe kept
        ("  Yes\n", "yes"),
        ("dont", "don't"),  # contraction gets its apostrophe back
        ("black/white", "black white"),  # a mark touching no space becomes a space
        ("yes, it is", "yes it is"),  # a mark touching a space is deleted
        ("1,000", "1000"),  # digit,digit comma: deleted
        ("3.5 feet", "3.5 feet"),  # a period before a digit stays
        ("t-shirt", "t shirt"),
        ("An apple (red)", "apple red"),
        ("none", "0"),
        ("ten", "10"),
        ("eleven", "eleven"),  # only zero..ten are mapped
    ],
)
def test_vqa_normalisation(text, expected):
    assert normalize_vqa_answer(text) == expected


# 10 human answers: "2" three times, "two" once (normalises to "2" as well), "3" four times, "many" twice.
ANSWERS = ["2", "2", "2", "two", "3", "3", "3", "3", "many", "many"]


@pytest.mark.parametrize(
    "pred,expected",
    [
        # "2" matches 4 of 10: leaving out a match leaves 3 (min(3/3,1)=1), leaving out another leaves 4 -> all 1.
        ("2", 1.0),
        ("Two.", 1.0),
        # "many" matches 2: 2 subsets with 1 other match (1/3), 8 subsets with 2 (2/3): (2/3 + 16/3) / 10 = 0.6.
        ("many", 0.6),
        ("Many", 0.6),
        ("4", 0.0),
    ],
)
def test_vqa_accuracy_averages_leave_one_out_subsets(pred, expected):
    assert vqa_accuracy(pred, ANSWERS) == pytest.approx(expected)


def test_vqa_accuracy_with_one_or_three_matches():
    one = ["cat"] + ["dog"] * 9  # 1 subset with 0 matches, 9 with 1 (1/3): 3/10
    assert vqa_accuracy("cat", one) == pytest.approx(0.3)
    three = ["cat"] * 3 + ["dog"] * 7  # 3 subsets with 2 (2/3), 7 with 3 (1): (2 + 7) / 10
    assert vqa_accuracy("a cat", three) == pytest.approx(0.9)
    assert vqa_accuracy("The cat.", ["cat"]) == 1.0  # one reference: exact match after normalisation
    with pytest.raises(ValueError, match="non-empty list"):
        vqa_accuracy("cat", "cat")


def test_exact_match_normalises_both_sides():
    assert exact_match("The Table.", "table") == 1.0
    assert exact_match("tables", "table") == 0.0


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Yes", "yes"),
        ("Yes, there is a dog in the image.", "yes"),
        ("no.", "no"),
        ("No, there is not.", "no"),
        ("There is no dog in the image.", "no"),
        ("The man isn't holding an umbrella.", "no"),
        ("Yes there is. No other animals are visible.", "yes"),  # the first word decides
    ],
)
def test_yes_no_parsing(text, expected):
    assert parse_yes_no(text) == (expected, None)


@pytest.mark.parametrize(
    "text,why",
    [
        ("There is a dog in the image.", "no yes or no"),
        ("I would say yes but not sure.", "both yes and no"),
        ("", "empty"),
    ],
)
def test_yes_no_refuses_to_guess(text, why):
    parsed, reason = parse_yes_no(text)
    assert parsed is None and why in reason


OPTIONS = ["cat", "dog", "bird", "fish"]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("B", "B"),
        ("(B)", "B"),
        ("B.", "B"),
        ("b", "B"),
        ("B. dog", "B"),
        ("(C) bird", "C"),
        ("D: fish", "D"),
        ("The answer is B.", "B"),
        ("The correct option is (C).", "C"),
        ("Answer: D", "D"),
        ("dog", "B"),  # the text of exactly one option
        ("The Bird.", "C"),
    ],
)
def test_choice_letters(text, expected):
    assert extract_choice(text, OPTIONS) == (expected, None)


@pytest.mark.parametrize(
    "text,why",
    [
        ("E", "not one of the options ABCD"),
        ("The answer is E", "not one of the options"),
        ("Either (A) or (C)", "ambiguous: names A, C"),
        ("The answer is B, or the answer is C", "ambiguous"),
        ("A. I think the answer is B", "ambiguous: names A, B"),  # a leading letter contradicted later
        ("(A) or (B)", "ambiguous: names A, B"),
        ("A dog and a cat", "no option letter"),  # a sentence-initial "A" is not a letter
        ("I am not sure", "no option letter"),
        ("", "no option letter"),
    ],
)
def test_choice_refuses_to_guess(text, why):
    letter, reason = extract_choice(text, OPTIONS)
    assert letter is None and why in reason


def test_choice_refuses_when_option_texts_repeat():
    assert extract_choice("cat", ["cat", "dog", "cat"]) == (None, "ambiguous: the text of options A, C")


def rows(*items):
    """(answer, parsed, score, category, image) tuples as scored rows."""
    return [{"answer": a, "parsed": p, "score": s, "category": c, "image": i} for a, p, s, c, i in items]


def test_pope_metrics_by_hand():
    # answers yes,yes,yes,no,no,no ; said yes,yes,no,yes,no,unparsed
    data = rows(
        ("yes", "yes", 1.0, "random", "1"),
        ("yes", "yes", 1.0, "random", "2"),
        ("yes", "no", 0.0, "random", "3"),
        ("no", "yes", 0.0, "adversarial", "4"),
        ("no", "no", 1.0, "adversarial", "5"),
        ("no", None, 0.0, "adversarial", "6"),
    )
    out = summarize("pope", data, by_category=True)
    # TP=2 FP=1 FN=1: precision 2/3, recall 2/3, F1 2/3; accuracy 3/6; yes ratio 3/6
    assert out["overall"] == pytest.approx(
        {"accuracy": 0.5, "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "yes_ratio": 0.5}
    )
    # random: TP=2 FP=0 FN=1 -> P 1, R 2/3, F1 0.8 ; adversarial: no "yes" answer -> recall undefined
    assert out["by_category"]["random"] == pytest.approx(
        {"accuracy": 2 / 3, "precision": 1.0, "recall": 2 / 3, "f1": 0.8, "yes_ratio": 2 / 3}
    )
    adversarial = out["by_category"]["adversarial"]
    assert adversarial["precision"] == 0.0 and adversarial["recall"] is None and adversarial["f1"] is None
    assert out["aggregate"]["f1_mean_over_categories"] == pytest.approx(0.8)  # the undefined F1 is left out
    assert out["aggregate"]["accuracy_mean_over_categories"] == pytest.approx((2 / 3 + 1 / 3) / 2)


def test_mme_accuracy_plus_and_scores_by_hand():
    # existence: image a both right, image b one right -> acc 3/4, acc+ 1/2, score 125
    # count: image c both right -> acc 1, acc+ 1, score 200 ; code_reasoning: image d both wrong -> 0
    data = rows(
        ("yes", "yes", 1.0, "existence", "a"),
        ("no", "no", 1.0, "existence", "a"),
        ("yes", "yes", 1.0, "existence", "b"),
        ("no", "yes", 0.0, "existence", "b"),
        ("yes", "yes", 1.0, "count", "c"),
        ("no", "no", 1.0, "count", "c"),
        ("yes", "no", 0.0, "code_reasoning", "d"),
        ("no", None, 0.0, "code_reasoning", "d"),
    )
    out = summarize("mme", data, by_category=True)
    assert out["by_category"]["existence"] == pytest.approx({"accuracy": 0.75, "accuracy_plus": 0.5, "score": 125})
    assert out["by_category"]["count"] == pytest.approx({"accuracy": 1.0, "accuracy_plus": 1.0, "score": 200})
    assert out["by_category"]["code_reasoning"] == pytest.approx({"accuracy": 0, "accuracy_plus": 0, "score": 0})
    assert out["aggregate"] == pytest.approx({"perception": 325, "cognition": 0, "total": 325})
    assert out["overall"] == pytest.approx({"accuracy": 5 / 8, "accuracy_plus": 2 / 4, "score": None})


def test_mean_score_counts_every_row():
    out = summarize(
        "vqa_accuracy",
        rows(
            ("x", "x", 1.0, None, "a"),
            ("x", "y", 0.3, None, "b"),
            ("x", None, 0.0, None, "c"),
            ("x", None, 0.0, None, "d"),
        ),
        False,
    )
    assert out == {"overall": {"accuracy": pytest.approx(1.3 / 4)}, "by_category": {}, "aggregate": {}}
    with pytest.raises(ValueError, match="unknown metric 'bleu'"):
        summarize("bleu", [], False)
