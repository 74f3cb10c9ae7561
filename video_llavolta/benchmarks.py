"""Video QA benchmarks as data: a spec (configs/benchmarks/*_qa.yaml) and the unified QA JSONL it converts to.

A spec says where a benchmark in Video-ChatGPT's layout keeps its questions and answers, how a question finds its
video, how the model is asked and how the answers are judged::

    kind: video_qa
    name: activitynet                   # --benchmark activitynet resolves to this file
    split: test                         # the split the papers report (the files below hold it)
    questions_file: test_q.json         # [{"video_name", "question_id", "question"}, ...]
    answers_file: test_a.json           # [{"question_id", "answer", "type"}, ...]
    id_field: question_id               # questions and answers are joined by it (as strings), never by position
    video_field: video_name
    question_field: question
    answer_field: answer
    type_field: type                    # optional, in the answers file: the question type, named by type_names
    type_names: {0: motion, 1: spatial_relation, ...}
    video_prefix: v_                    # file name = prefix + video name + extension
    video_extensions: [.mp4, .avi, .mov, .mkv, .webm]   # tried in this order
    prompt: "<video>\\n{question}"       # the user turn; the conversation template wraps it
    max_new_tokens: 1024
    template: null                      # a conversation template by name; null: the checkpoint's
    judge: {model: gpt-3.5-turbo-0125, rubric: qa-match-v1}

`data_prep convert-qa`, `video_llavolta.qa_inference` and `video_llavolta.judge` read it. The unified QA JSONL
that convert-qa writes (and the synthetic set's test split) has one question a line::

    {"question_id": str | int, "video": <path relative to the video root>, "question": str, "answer": str}

plus "type" when the benchmark names question types. This module imports neither torch nor transformers, so data
preparation can read specs without the model code.
"""

from __future__ import annotations

import os
import string
from dataclasses import asdict, dataclass, field
from typing import ClassVar

from image_llavolta.benchmarks import load_spec, spec_files
from image_llavolta.conversation import TEMPLATES
from image_llavolta.jsonio import read_jsonl

from .frames import VIDEO_EXTENSIONS

KIND = "video_qa"
DEFAULT_PROMPT = "<video>\n{question}"  # Video-LLaVA's video QA prompt: the frames, a newline, the question
QA_FIELDS = ("question_id", "video", "question", "answer")  # every unified QA record has these


@dataclass(frozen=True)
class JudgeSettings:
    """How a benchmark's answers are judged: a pinned judge model and the rubric (prompts) version."""

    model: str
    rubric: str

    def __post_init__(self):
        for name in ("model", "rubric"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"judge.{name} must be a non-empty string, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class VideoQASpec:
    """One open-ended video QA benchmark in Video-ChatGPT's layout (see the module docstring)."""

    kind: ClassVar[str] = KIND
    name: str
    split: str = "test"
    questions_file: str = "test_q.json"
    answers_file: str = "test_a.json"
    id_field: str = "question_id"
    video_field: str = "video_name"
    question_field: str = "question"
    answer_field: str = "answer"
    type_field: str | None = None
    type_names: dict = field(default_factory=dict)
    video_prefix: str = ""
    video_extensions: tuple[str, ...] = VIDEO_EXTENSIONS
    prompt: str = DEFAULT_PROMPT
    max_new_tokens: int = 1024
    template: str | None = None
    judge: JudgeSettings | None = None  # None: the judge's own defaults
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or os.sep in self.name:
            raise ValueError(f"benchmark name must be a non-empty string without {os.sep!r}, got {self.name!r}")
        names = ("split", "questions_file", "answers_file", "id_field", "video_field", "question_field", "answer_field")
        for name in names:
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        if self.type_field is not None and (not isinstance(self.type_field, str) or not self.type_field):
            raise ValueError(f"type_field must be a field name or null, got {self.type_field!r}")
        if not isinstance(self.type_names, dict) or not all(
            isinstance(k, (int, str)) and not isinstance(k, bool) and isinstance(v, str) and v
            for k, v in self.type_names.items()
        ):
            raise ValueError(f"type_names must map type values to non-empty names, got {self.type_names!r}")
        if self.type_names and self.type_field is None:
            raise ValueError("type_names needs a type_field to read the types from")
        if not isinstance(self.video_prefix, str):
            raise ValueError(f"video_prefix must be a string, got {self.video_prefix!r}")
        extensions = self.video_extensions
        if (
            isinstance(extensions, str)
            or not extensions
            or not all(isinstance(e, str) and e.startswith(".") and len(e) > 1 for e in extensions)
        ):
            raise ValueError(f"video_extensions must be a list of extensions like .mp4, got {extensions!r}")
        object.__setattr__(self, "video_extensions", tuple(e.lower() for e in extensions))
        fields_used = (
            [f for _, f, _, _ in string.Formatter().parse(self.prompt)] if isinstance(self.prompt, str) else None
        )
        if (
            fields_used is None
            or [f for f in fields_used if f is not None] != ["question"]
            or "<video>" not in self.prompt
        ):
            raise ValueError(
                f"prompt must hold <video> and {{question}} once (and no other {{field}}), got {self.prompt!r}"
            )
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if self.template is not None and self.template not in TEMPLATES:
            raise ValueError(f"unknown template {self.template!r}; known: {sorted(TEMPLATES)}")
        if isinstance(self.judge, dict):
            if unknown := sorted(set(self.judge) - {"model", "rubric"}):
                raise ValueError(f"judge: unknown field(s) {unknown}; known: ['model', 'rubric']")
            object.__setattr__(self, "judge", JudgeSettings(**self.judge))
        elif self.judge is not None and not isinstance(self.judge, JudgeSettings):
            raise ValueError(f"judge must be a mapping with model and rubric, got {self.judge!r}")

    def to_dict(self) -> dict:
        """Plain dict for settings and results files."""
        return asdict(self)

    def video_file_stem(self, video_name: str) -> str:
        """The file name (without extension) a question's video name stands for."""
        return self.video_prefix + video_name

    def type_name(self, value):
        """A question type's name (its value when the spec does not name it)."""
        return self.type_names.get(value, value)

    def render(self, question: str) -> str:
        """The user turn for one question."""
        return self.prompt.format(question=question)


def qa_spec_files() -> dict[str, str]:
    """{benchmark name: spec file} of the shipped video QA specs."""
    return spec_files(KIND)


def load_qa_spec(name_or_path: str | os.PathLike) -> VideoQASpec:
    """A video QA spec from its YAML file or a shipped spec's name (`msvd`, `msrvtt`, `activitynet`)."""
    return load_spec(name_or_path, VideoQASpec)


def read_qa(path: str | os.PathLike, limit: int | None = None) -> list[dict]:
    """The records of a unified QA JSONL (the first `limit` if given), checked: fields present, ids unique."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    records, seen = read_jsonl(path), set()
    for number, r in enumerate(records, 1):
        missing = [k for k in QA_FIELDS if k not in r]
        if missing:
            raise ValueError(f"{path}: record {number} lacks {missing}")
        if str(r["question_id"]) in seen:
            raise ValueError(f"{path}: question id {r['question_id']!r} appears more than once")
        seen.add(str(r["question_id"]))
    if not records:
        raise ValueError(f"{path}: no questions")
    return records[:limit]
