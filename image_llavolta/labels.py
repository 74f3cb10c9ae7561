"""Training labels for LLaVA-format conversations: the model learns the assistant's replies and nothing else.

A conversation is `[{"from": "human", "value": q1}, {"from": "gpt", "value": a1}, ...]`. Its text is the
template's rendering, `SYSTEM USER: q1 ASSISTANT: a1</s>USER: q2 ASSISTANT: a2</s>`; the labels copy the ids
of each reply and of the `</s>` that closes it, and are IGNORE_INDEX (-100) everywhere else.

The ids are built piece by piece, alternating a masked prompt piece (`[SYSTEM ]USER: q ASSISTANT:`) and a
trained reply piece (` a</s>`), so every label boundary is exactly a piece boundary. LLaVA instead tokenizes the
whole text and finds the boundaries again by subtracting the lengths of separately tokenized rounds, which
silently shifts every label when the two tokenizations disagree by one token.

Each piece follows `tokenize_prompt`'s rule (placeholders expanded, text tokenized with add_special_tokens=False,
one BOS for the whole sequence). Piecewise ids equal whole-text ids when no token spans a piece boundary, which
always holds for a word-level tokenizer. For SentencePiece (Llama / Vicuna) tokenizers the pieces are cut where
LLaVA's v1 preprocessing cuts: a reply piece ` reply</s>` starts with `▁reply` (Metaspace never doubles the
space), as LLaVA's replies do (its `- 2` drops the `▁` of `ASSISTANT: `), and a later prompt piece starts right
after `</s>` with `▁USER`, as with the legacy Vicuna tokenizer LLaVA trained with (a non-legacy one gives `USER`
there when tokenizing the whole text). The first prompt piece is exactly the inference prompt for any tokenizer.
Check one encoded sample when you bring a new tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence

from .conversation import VICUNA_V1, Template, tokenize_prompt

IGNORE_INDEX = -100  # the label cross-entropy skips (PyTorch's and transformers' default ignore_index)
ROLES = ("human", "gpt")


def conversation_error(conversations) -> str | None:
    """Why `conversations` is not alternating human/gpt turns, human first and gpt last; None if it is."""
    if not isinstance(conversations, list) or not conversations:
        return "'conversations' must be a non-empty list of turns"
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict) or turn.get("from") not in ROLES or not isinstance(turn.get("value"), str):
            return f"turn {i} must be {{'from': 'human'|'gpt', 'value': str}}, got {turn!r}"
    roles = [turn["from"] for turn in conversations]
    if roles != [ROLES[i % 2] for i in range(len(roles))] or roles[-1] != "gpt":
        return f"roles {roles} must alternate human, gpt, ... and end with gpt"
    return None


def encode_conversation(
    tokenizer,
    conversations: Sequence[dict],
    placeholders: dict[str, tuple[int, int]],
    template: Template = VICUNA_V1,
    sample_id: str | None = None,
) -> tuple[list[int], list[int]]:
    """`(input_ids, labels)` of a conversation: labels are IGNORE_INDEX except on the replies and their sep2."""
    problem = conversation_error(conversations)
    if problem is None and any(tag in t["value"] for t in conversations[1::2] for tag in placeholders):
        problem = "a gpt turn contains a visual placeholder (the model cannot emit visual tokens)"
    if problem:
        raise ValueError(f"sample {sample_id!r}: {problem}")
    user, assistant = template.roles
    # tokenize_prompt's rule for each piece; only the very first piece keeps its BOS.
    skip_bos = 0 if tokenizer.bos_token_id is None else 1
    input_ids: list[int] = []
    labels: list[int] = []
    prefix = template.system + template.sep
    for human, gpt in zip(conversations[::2], conversations[1::2]):
        prompt = f"{prefix}{user}: {human['value']}{template.sep}{assistant}:"
        ids = tokenize_prompt(tokenizer, prompt, placeholders)[skip_bos if input_ids else 0 :]
        input_ids += ids
        labels += [IGNORE_INDEX] * len(ids)
        ids = tokenize_prompt(tokenizer, f" {gpt['value']}{template.sep2}", placeholders)[skip_bos:]
        input_ids += ids
        labels += ids
        prefix = ""
    return input_ids, labels
