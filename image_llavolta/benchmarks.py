"""Image benchmarks as data: a small spec (YAML under configs/benchmarks/) plus a local question JSONL.

A spec names the benchmark, its answer type, the prompt suffix LLaVA-1.5 uses for it and the metric::

    kind: image                        # the default; video QA specs say `kind: video_qa`
    name: gqa
    answer_type: short_answer          # short_answer | yes_no | multiple_choice
    metric: exact_match                # see METRICS_BY_TYPE
    prompt_suffix: Answer the question using a single word or phrase.
    answer_field: answer               # "answers" for the 10 human answers of VQAv2 / TextVQA
    category_field: null               # a field to break results down by (POPE, MME, MMBench, SEED)
    hint_prefix: ""                    # multiple choice: put before a record's "hint" line (ScienceQA: "Context: ")
    max_new_tokens: 128
    template: null                     # a conversation template by name; null: the checkpoint's

Question files are JSONL, one question a line; every record has
`question_id` (string or integer, unique), `image` (a path relative to the image root) and `question` (text), and

- short_answer: `answer` (a string) or `answers` (a non-empty list of strings), as `answer_field` says;
- yes_no: `answer`, "yes" or "no" (any case);
- multiple_choice: `options` (a list of 2-26 strings, shown as A., B., ...), `answer` (the right letter) and an
  optional `hint` (context shown above the question);
- `category` (or the spec's `category_field`) when the spec breaks results down by it; MME needs it (subtask).

`load_spec` reads every kind of spec (the class says which kind it expects), from a path or from the name of a
shipped spec in configs/benchmarks/ (`gqa` -> configs/benchmarks/gqa.yaml).

Prompt (the user turn of the spec's template): "<image>\\n" + [hint_prefix + hint + "\\n"] + question +
["\\nA. option\\nB. option ..."] + "\\n" + prompt_suffix, as LLaVA-1.5's evaluation builds it.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import MISSING, asdict, dataclass, fields
from typing import ClassVar

import yaml

from .conversation import TEMPLATES
from .scoring import LETTERS

SHORT_ANSWER_SUFFIX = "Answer the question using a single word or phrase."
MULTIPLE_CHOICE_SUFFIX = "Answer with the option's letter from the given choices directly."
ANSWER_TYPES = ("short_answer", "yes_no", "multiple_choice")
METRICS_BY_TYPE = {
    "short_answer": ("vqa_accuracy", "exact_match"),
    "yes_no": ("accuracy", "pope", "mme"),
    "multiple_choice": ("accuracy",),
}
DEFAULT_SUFFIX = {
    "short_answer": SHORT_ANSWER_SUFFIX,
    "yes_no": SHORT_ANSWER_SUFFIX,
    "multiple_choice": MULTIPLE_CHOICE_SUFFIX,
}


@dataclass(frozen=True)
class BenchmarkSpec:
    """One image benchmark: answer type, prompt suffix, metric and the layout of its question file."""

    kind: ClassVar[str] = "image"
    name: str
    answer_type: str
    metric: str
    prompt_suffix: str | None = None  # None: LLaVA-1.5's suffix for the answer type; "" for none
    answer_field: str = "answer"
    category_field: str | None = None
    hint_prefix: str = ""
    max_new_tokens: int = 128
    template: str | None = None  # None: the checkpoint's (`llavolta_template`, else vicuna_v1)
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or os.sep in self.name:
            raise ValueError(f"benchmark name must be a non-empty string without {os.sep!r}, got {self.name!r}")
        if self.answer_type not in ANSWER_TYPES:
            raise ValueError(f"answer_type must be one of {ANSWER_TYPES}, got {self.answer_type!r}")
        if self.metric not in METRICS_BY_TYPE[self.answer_type]:
            raise ValueError(
                f"metric {self.metric!r} does not fit answer_type {self.answer_type!r}; "
                f"use one of {METRICS_BY_TYPE[self.answer_type]}"
            )
        if self.answer_field not in ("answer", "answers"):
            raise ValueError(f"answer_field must be 'answer' or 'answers', got {self.answer_field!r}")
        if self.answer_field == "answers" and self.answer_type != "short_answer":
            raise ValueError("answer_field 'answers' (several references) is for short_answer benchmarks only")
        if self.metric == "mme" and not self.category_field:
            raise ValueError("metric 'mme' sums per-subtask scores: set category_field (e.g. category)")
        if self.prompt_suffix is None:
            object.__setattr__(self, "prompt_suffix", DEFAULT_SUFFIX[self.answer_type])
        if not isinstance(self.prompt_suffix, str):
            raise ValueError(f"prompt_suffix must be a string, got {self.prompt_suffix!r}")
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if self.template is not None and self.template not in TEMPLATES:
            raise ValueError(f"unknown template {self.template!r}; known: {sorted(TEMPLATES)}")

    def to_dict(self) -> dict:
        """Plain dict for settings and results files."""
        return asdict(self)

    @property
    def reference_fields(self) -> tuple[str, ...]:
        """The fields a prediction line carries from its question and that must match the question file."""
        extra = ("options", "hint") if self.answer_type == "multiple_choice" else ()
        return ("question", self.answer_field, *extra)


# ---------------------------------------------------------------------------------------------------
# Spec files: one loader for every kind of benchmark (image specs here, video QA specs in video_llavolta)

# The shipped specs, found from the source tree (a checkout or an editable install); other specs are given by path.
BENCHMARK_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "benchmarks")
DEFAULT_KIND = "image"  # a spec file without a `kind` field is an image benchmark (the format's first kind)


def _read_yaml(path: str) -> dict:
    """A spec file's mapping, with errors that name the file."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such benchmark spec") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of spec fields, got {type(data).__name__}")
    return data


def _is_path(name_or_path: str) -> bool:
    return name_or_path.endswith((".yaml", ".yml")) or os.sep in name_or_path or "/" in name_or_path


def spec_files(kind: str, folder: str | os.PathLike = BENCHMARK_DIR) -> dict[str, str]:
    """{benchmark name: spec file} of the specs of one kind in `folder` (the shipped ones by default)."""
    found = {}
    for path in sorted(glob.glob(os.path.join(os.fspath(folder), "*.yaml"))):
        data = _read_yaml(path)
        if data.get("kind", DEFAULT_KIND) == kind and isinstance(data.get("name"), str):
            found.setdefault(data["name"], path)
    return found


def find_spec(name_or_path: str | os.PathLike, kind: str, folder: str | os.PathLike = BENCHMARK_DIR) -> str:
    """The spec file for a benchmark name (a shipped spec's `name`) or a path to a spec file."""
    name_or_path = os.fspath(name_or_path)
    if _is_path(name_or_path) or os.path.isfile(name_or_path):
        return name_or_path
    known = spec_files(kind, folder)
    if name_or_path not in known:
        raise ValueError(
            f"no {kind} benchmark named {name_or_path!r} in {os.fspath(folder)}; known: "
            f"{', '.join(sorted(known)) or 'none'} (or give the path of a spec file)"
        )
    return known[name_or_path]


def load_spec(name_or_path: str | os.PathLike, spec_class: type | None = None):
    """A benchmark spec (`spec_class`, default `BenchmarkSpec`) from its YAML file or a shipped spec's name.

    The file's `kind` must be the class's (`spec_class.kind`); the other fields are the dataclass's, those without a
    default required. Every error names the file and the field.
    """
    spec_class = spec_class or BenchmarkSpec
    path = find_spec(name_or_path, spec_class.kind)
    data = _read_yaml(path)
    kind = data.pop("kind", DEFAULT_KIND)
    if kind != spec_class.kind:
        raise ValueError(f"{path}: a benchmark spec of kind {kind!r}, expected kind {spec_class.kind!r}")
    known = {f.name for f in fields(spec_class)}
    if unknown := sorted(set(data) - known):
        raise ValueError(f"{path}: unknown field(s) {unknown}; known: {sorted(known | {'kind'})}")
    required = [f.name for f in fields(spec_class) if f.default is MISSING and f.default_factory is MISSING]
    if missing := sorted(k for k in required if k not in data):
        raise ValueError(f"{path}: missing field(s) {missing}")
    try:
        return spec_class(**data)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None


# ---------------------------------------------------------------------------------------------------
# Question files and prompts


def _check(record, spec: BenchmarkSpec) -> str | None:
    """Why a question record does not fit the spec's layout, or None."""
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    qid = record.get("question_id")
    if isinstance(qid, bool) or not isinstance(qid, (str, int)) or qid == "":
        return f"'question_id' must be a non-empty string or an integer, got {qid!r}"
    for key in ("image", "question"):
        if not isinstance(record.get(key), str) or not record[key]:
            return f"'{key}' must be a non-empty string, got {record.get(key)!r}"
    answer = record.get(spec.answer_field)
    if spec.answer_field == "answers":
        if not isinstance(answer, list) or not answer or not all(isinstance(a, str) for a in answer):
            return f"'answers' must be a non-empty list of strings, got {answer!r}"
    elif not isinstance(answer, str):
        return f"'answer' must be a string, got {answer!r}"
    if spec.answer_type == "yes_no" and answer.strip().lower() not in ("yes", "no"):
        return f"'answer' must be yes or no, got {answer!r}"
    if spec.answer_type == "multiple_choice":
        options = record.get("options")
        if (
            not isinstance(options, list)
            or not 2 <= len(options) <= len(LETTERS)
            or not all(isinstance(o, str) and o.strip() for o in options)
        ):
            return f"'options' must be a list of 2 to {len(LETTERS)} non-empty strings, got {options!r}"
        valid = LETTERS[: len(options)]
        if answer not in valid:
            return f"'answer' must be one of the option letters {', '.join(valid)}, got {answer!r}"
        if record.get("hint") is not None and not isinstance(record["hint"], str):
            return f"'hint' must be a string or null, got {record['hint']!r}"
    if spec.category_field:
        category = record.get(spec.category_field)
        if not isinstance(category, str) or not category:
            return f"'{spec.category_field}' (the spec's category_field) must be a non-empty string, got {category!r}"
    return None


def read_questions(path: str | os.PathLike, spec: BenchmarkSpec, limit: int | None = None) -> list[dict]:
    """The question records of a benchmark JSONL, checked against the spec; the first `limit` only if given."""
    path = os.fspath(path)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    records, seen = [], {}
    try:
        f = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such question file") from None
    with f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not valid JSON ({err})") from None
            if problem := _check(record, spec):
                qid = record.get("question_id") if isinstance(record, dict) else None
                raise ValueError(
                    f"{path}:{number}: "
                    + (f"question {qid!r}: " if qid is not None else "")
                    + f"{problem} (benchmark {spec.name}, {spec.answer_type})"
                )
            key = str(record["question_id"])
            if key in seen:
                raise ValueError(f"{path}:{number}: question id {record['question_id']!r} already on line {seen[key]}")
            seen[key] = number
            records.append(record)
            if limit is not None and len(records) == limit:
                break
    if not records:
        raise ValueError(f"{path}: no questions")
    return records


def build_prompt(spec: BenchmarkSpec, record: dict) -> str:
    """The user turn for one question: "<image>\\n", hint, question, lettered options and the suffix, by line."""
    lines = []
    if spec.answer_type == "multiple_choice" and record.get("hint"):
        lines.append(spec.hint_prefix + record["hint"])
    lines.append(record["question"])
    if spec.answer_type == "multiple_choice":
        lines += [f"{letter}. {option}" for letter, option in zip(LETTERS, record["options"])]
    if spec.prompt_suffix:
        lines.append(spec.prompt_suffix)
    return "<image>\n" + "\n".join(lines)
