"""Open-ended video QA as lmms-eval tasks: MSVD-QA, MSRVTT-QA and ActivityNet-QA, judged by the toolkit's judge.

The task folders are configs/lmms_tasks/ (`--include_path configs/lmms_tasks`); each YAML names this module's
`VideoQATask` as its class and a shipped video QA spec (configs/benchmarks/*_qa.yaml), which gives the prompt, the
token limit and the judge settings, as `qa_inference` and `video_llavolta.judge` read them. Docs come from the
unified QA JSONL of `data_prep convert-qa` (`read_qa`: every field checked, ids unique), never from the Hub::

    dataset_kwargs:
      benchmark: msvd                     # the video QA spec
      qa_file: ${LLAVOLTA_MSVD_QA}        # the unified QA JSONL; environment variables are expanded
      video_root: ${LLAVOLTA_MSVD_VIDEOS} # the folder its "video" paths are relative to
      frames_root: ${LLAVOLTA_MSVD_FRAMES} # optional: extract-frames output, used where a video has one

A variable that is not set leaves its setting unset (a clear error for `qa_file` and `video_root`).

Scoring: each doc's prediction is judged by `video_llavolta.judge` (the Video-ChatGPT yes/no and 0-5 protocol) with
the spec's pinned judge model and rubric, its judgment cache and its bounded retries. The metrics are `accuracy`
(yes / judged, 0-1) and `score` (mean 0-5 over judged questions), and the counts `judged`, `parse_failures` and
`api_errors`: an unparseable reply or a failed request is counted as such, never folded into "no". The judge is
configured by environment variables: LLAVOLTA_JUDGE_BASE_URL (an OpenAI-compatible server; default OpenAI's),
LLAVOLTA_JUDGE_API_KEY_ENV (the variable holding the key; default OPENAI_API_KEY), LLAVOLTA_JUDGE_MODEL (default:
the spec's pinned snapshot), LLAVOLTA_JUDGE_CACHE (default ~/.cache/llavolta/judge_cache.jsonl),
LLAVOLTA_JUDGE_MAX_RETRIES (5), LLAVOLTA_JUDGE_MAX_PARSE_RETRIES (2), LLAVOLTA_JUDGE_CONCURRENCY (4) and
LLAVOLTA_JUDGE_TIMEOUT (30 s). Every metric of a run is computed from one judging pass (the metrics are aggregated
one by one, so the pass is memoised), so the counts always add up to the number of docs.
"""

from __future__ import annotations

import logging
import os
import re

from .benchmarks import load_qa_spec, read_qa
from .frames import video_source
from .judge.cli import judge_model
from .judge.client import OpenAIJudge
from .judge.results import metrics

try:  # the optional `eval` extra
    import datasets
    from lmms_eval.api.task import ConfigurableTask
except ImportError:
    ConfigurableTask = object

logger = logging.getLogger(__name__)

METRICS = ("accuracy", "score", "judged", "parse_failures", "api_errors")
UNSET = re.compile(r"\$\{?\w+\}?")  # an environment variable expandvars left as it was: not set


def setting(value, default=None):
    """A task setting with environment variables expanded; one that names an unset variable is `default`."""
    if value is None:
        return default
    value = os.path.expandvars(str(value))
    return default if UNSET.search(value) or not value else value


def _env(name: str, default):
    value = os.environ.get(name)
    try:
        return type(default)(value) if value else default
    except ValueError:
        raise ValueError(f"${name} must be a {type(default).__name__}, got {value!r}") from None


class VideoQATask(ConfigurableTask):
    """An lmms-eval task over a unified QA JSONL, its prompt and generation settings from a video QA spec."""

    def __init__(self, config: dict, **kwargs):
        config = {k: v for k, v in config.items() if k != "class"}
        options = dict(config.get("dataset_kwargs") or {})
        if "benchmark" not in options:
            raise ValueError(f"task {config.get('task')!r}: dataset_kwargs needs the benchmark (msvd, msrvtt, ...)")
        self.spec = load_qa_spec(options["benchmark"])
        # The spec's limit, greedy, no stop string: the same generation as qa_inference's.
        generation = {"max_new_tokens": self.spec.max_new_tokens, "until": [], "do_sample": False, "temperature": 0}
        config["generation_kwargs"] = {**generation, **(config.get("generation_kwargs") or {})}
        config.setdefault("test_split", self.spec.split)
        super().__init__(config=config, **kwargs)

    def download(self, dataset_kwargs=None) -> None:
        """The docs of the QA JSONL, each with the path of its video (a frame directory where there is one)."""
        options = dict(dataset_kwargs or {})
        qa_file, video_root = setting(options.get("qa_file")), setting(options.get("video_root"))
        for name, value in (("qa_file", qa_file), ("video_root", video_root)):
            if value is None:
                raise ValueError(
                    f"task {self.config.task!r}: dataset_kwargs.{name} is not set ({options.get(name)!r}); "
                    "set the environment variable it names"
                )
        frames_root = setting(options.get("frames_root"))
        docs = []
        for record in read_qa(qa_file):
            docs.append(
                {
                    "benchmark": self.spec.name,
                    "question_id": str(record["question_id"]),  # one type per column: ids may mix ints and strings
                    "question": record["question"],
                    "answer": record["answer"],
                    "type": None if record.get("type") is None else str(record["type"]),
                    "video": record["video"],
                    "video_path": video_source(record["video"], video_root, frames_root),
                    # the spec's prompt; a leading "<video>\n" is left to the model, which puts its video there
                    "prompt": self.spec.render(record["question"]).removeprefix("<video>\n"),
                }
            )
        self.dataset = datasets.DatasetDict({self.config.test_split: datasets.Dataset.from_list(docs)})
        self.dataset_no_image = self.dataset


def doc_to_visual(doc: dict) -> list[str]:
    """The doc's video, as a path (the model samples its frames)."""
    return [doc["video_path"]]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs=None) -> str:
    """The question as the spec asks it (with a task's pre_prompt / post_prompt, if any)."""
    kwargs = lmms_eval_specific_kwargs or {}
    return kwargs.get("pre_prompt", "") + doc["prompt"] + kwargs.get("post_prompt", "")


def doc_to_target(doc: dict) -> str:
    """The reference answer."""
    return doc["answer"]


def process_results(doc: dict, results: list[str]) -> dict:
    """The doc's question, answer and prediction under every metric; the judging happens in the aggregation."""
    item = {k: doc[k] for k in ("benchmark", "question_id", "question", "answer", "type")}
    item["pred"] = results[0] if results else ""
    return {name: item for name in METRICS}


def make_judge(benchmark: str) -> OpenAIJudge:
    """The judge of a benchmark's spec, configured by the LLAVOLTA_JUDGE_* environment variables."""
    spec = load_qa_spec(benchmark)
    return OpenAIJudge(
        _env("LLAVOLTA_JUDGE_MODEL", "") or judge_model({spec.name: spec}),
        _env("LLAVOLTA_JUDGE_BASE_URL", "") or None,
        _env("LLAVOLTA_JUDGE_API_KEY_ENV", "OPENAI_API_KEY"),
        _env("LLAVOLTA_JUDGE_CONCURRENCY", 4),
        _env("LLAVOLTA_JUDGE_MAX_RETRIES", 5),
        _env("LLAVOLTA_JUDGE_MAX_PARSE_RETRIES", 2),
        _env("LLAVOLTA_JUDGE_TIMEOUT", 30.0),
        cache_path=_env("LLAVOLTA_JUDGE_CACHE", os.path.expanduser("~/.cache/llavolta/judge_cache.jsonl")),
    )


_judged: dict[tuple, dict] = {}  # one judging pass per (judge, items): every metric of a run reads the same one


def judged_metrics(items: list[dict]) -> dict:
    """`video_llavolta.judge.results.metrics` of one benchmark's items, judged once per judge and set of items."""
    benchmarks = {i["benchmark"] for i in items}
    if len(benchmarks) != 1:
        raise ValueError(f"one benchmark's items at a time, got {sorted(benchmarks)}")
    judge = make_judge(benchmarks.pop())
    key = (judge.model, judge.base_url, judge.cache.path) + tuple(
        (i["question_id"], i["question"], i["answer"], i["pred"]) for i in items
    )
    if key not in _judged:
        judgments = judge.judge_many([(i["question"], i["answer"], i["pred"]) for i in items])
        _judged[key] = metrics([{"status": j.status, "match": j.match, "score": j.score} for j in judgments])
        logger.info("judged by %s: %s", judge.describe(), _judged[key])
    return _judged[key]


def _metric(name: str):
    value = name

    def aggregate(items: list[dict]) -> float:
        result = judged_metrics(items)[value]
        return float("nan") if result is None else result  # no judged question: no accuracy, no score

    aggregate.__name__ = name
    aggregate.__doc__ = f"The judged items' {name} (`video_llavolta.judge.results.metrics`)."
    return aggregate


# The aggregations the task YAMLs name, e.g. `!function video_llavolta.lmms_tasks.accuracy`.
accuracy, score, judged, parse_failures, api_errors = (_metric(name) for name in METRICS)
