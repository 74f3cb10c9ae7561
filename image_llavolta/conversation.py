"""Conversation templates (vicuna_v1) and prompt tokenization with expanded visual placeholders.

A placeholder (`<image>`, `<video>`) in the text becomes as many copies of its token id as the model has visual
tokens for it (e.g. 576 for LLaVA-1.5, 8·257 for a Video-LLaVA video), so the ids can go straight to the model.
Text between placeholders is tokenized chunk by chunk with one BOS in front, as LLaVA's `tokenizer_image_token`
does, so prompts match the original training data token for token.
"""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Template:
    """A chat template: `system + sep + ROLE: message sep ROLE: message sep2 ...`, separators alternating."""

    system: str
    roles: tuple[str, str] = ("USER", "ASSISTANT")
    sep: str = " "
    sep2: str = "</s>"

    def render(self, messages: list[str], add_generation_prompt: bool = True) -> str:
        """The prompt for alternating user / assistant messages; ends with an open assistant turn if asked."""
        out = self.system + self.sep
        for i, message in enumerate(messages):
            out += f"{self.roles[i % 2]}: {message}" + (self.sep, self.sep2)[i % 2]
        if add_generation_prompt:
            if len(messages) % 2:
                out += f"{self.roles[1]}:"
            else:
                raise ValueError("the conversation ends with an assistant message: nothing to generate")
        return out


VICUNA_V1 = Template(
    system="A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
TEMPLATES = {"vicuna_v1": VICUNA_V1}


def get_template(name: str) -> Template:
    """A template by name."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown conversation template {name!r}; known: {sorted(TEMPLATES)}")
    return TEMPLATES[name]


def tokenize_prompt(tokenizer, text: str, placeholders: dict[str, tuple[int, int]]) -> list[int]:
    """Token ids of `text`, each placeholder string replaced by `count` copies of its `token_id`.

    `placeholders` maps e.g. "<image>" to (token_id, count); see `placeholder_tokens` of each model family.
    """
    if not placeholders:
        raise ValueError("no placeholders given")
    pattern = "(" + "|".join(map(re.escape, placeholders)) + ")"
    ids = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    for piece in re.split(pattern, text):
        if piece in placeholders:
            token_id, count = placeholders[piece]
            ids += [token_id] * count
        elif piece:
            ids += tokenizer(piece, add_special_tokens=False)["input_ids"]
    return ids
