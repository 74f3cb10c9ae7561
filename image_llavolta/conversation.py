"""Conversation templates (vicuna_v1, llava_v1) and prompt tokenization with expanded visual placeholders.

Video-LLaVA trains with `vicuna_v1` ("a curious user ... the user's questions") but its video-QA script and CLI
answer with `llava_v1` ("a curious human ... the human's questions"); the two differ only in the system message.
A checkpoint records the template it was trained or released with in its config (`llavolta_template`), and that
is the default at inference (`checkpoint_template`); a checkpoint that records none gets `vicuna_v1`, the
template LLaVA-1.5 and Video-LLaVA train and LLaVA-1.5 evaluates with.

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
    name: str = "custom"

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

    def to_dict(self) -> dict:
        """The template's fields, for settings files."""
        return {"name": self.name, "system": self.system, "roles": list(self.roles), "sep": self.sep, "sep2": self.sep2}


VICUNA_V1 = Template(
    name="vicuna_v1",
    system="A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
)
LLAVA_V1 = Template(
    name="llava_v1",
    system="A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
)
TEMPLATES = {t.name: t for t in (VICUNA_V1, LLAVA_V1)}
TEMPLATE_KEY = "llavolta_template"  # config.json field: the template a checkpoint was trained or released with
DEFAULT_TEMPLATE = "vicuna_v1"


def get_template(name: str) -> Template:
    """A template by name."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown conversation template {name!r}; known: {sorted(TEMPLATES)}")
    return TEMPLATES[name]


def checkpoint_template(config) -> Template:
    """The template a model config records (`llavolta_template`), else vicuna_v1."""
    name = getattr(config, TEMPLATE_KEY, None) or DEFAULT_TEMPLATE
    try:
        return get_template(name)
    except ValueError as err:
        raise ValueError(f"the model config's {TEMPLATE_KEY}: {err}") from None


def record_template(config, name: str) -> None:
    """Store the template a model is trained with in its config, so checkpoints carry it to inference."""
    setattr(config, TEMPLATE_KEY, get_template(name).name)


def resolve_template(config, template: Template | str | None = None) -> Template:
    """The template a run uses: the one given (a Template or a name), else the checkpoint's."""
    if template is None:
        return checkpoint_template(config)
    return template if isinstance(template, Template) else get_template(template)


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
