"""Judging video QA predictions: an LLM judge over any OpenAI-compatible API, or offline string matching.

    python -m video_llavolta.judge --predictions msvd=preds/msvd.jsonl --judge openai --out results/msvd.json

One module per job:

- `prompts`: what the LLM judge is asked (the Video-ChatGPT protocol: a yes/no match and an integer score 0-5, at
  temperature 0), the rubric version and the default judge model, a pinned snapshot (`DEFAULT_JUDGE_MODEL`), never
  a moving alias;
- `replies`: a reply read as JSON or a Python dict literal (`ast.literal_eval` on the `{...}` part only, never
  `eval`), a float score rounded half up; the `Judgment` it becomes;
- `offline`: `OfflineJudge`, string matching for CI and the quickstart ("exact", or "normalized" by
  `normalize_open_answer`), 5 for a match and 0 otherwise; its numbers are NOT comparable with GPT-judged ones and
  the results say so;
- `client`: `OpenAIJudge` and its cache. Failed requests (429, 5xx, timeouts, connection errors) are retried by the
  openai client (`max_retries`, backoff with jitter, Retry-After); one that still fails is an API error (reported,
  not cached, asked again on a rerun). An unreadable reply is asked again at most `max_parse_retries` times, then
  counted as a parse failure. Every final judgment is appended to a JSONL cache keyed by (judge model, rubric
  version, question, answer, prediction), so a rerun costs nothing and a crash loses nothing. The API key is read
  from an environment variable and never written anywhere;
- `results`: `judge_predictions` (every question of a predictions file, its failures and optionally its QA file
  counted) and the metrics, per benchmark, per question type (when present) and overall: accuracy = yes / judged,
  mean score over judged, and the counts of judged questions, parse failures, API errors and missing predictions;
  the results JSON and the printed table;
- `cli`: the command line (`add_arguments`, `run`, `main`); a benchmark's video QA spec
  (`video_llavolta.benchmarks`) gives its pinned judge model and rubric.

This package imports neither torch nor transformers, so judging runs anywhere.
"""

from .cli import add_arguments, main, run
from .client import JudgeError, JudgmentCache, OpenAIJudge
from .offline import OFFLINE_NOTE, OfflineJudge, normalize_open_answer
from .prompts import DEFAULT_JUDGE_MODEL, RUBRIC_VERSION, SYSTEM_PROMPT, USER_PROMPT, judge_messages
from .replies import JudgeParseError, Judgment, parse_reply
from .results import format_results, judge_predictions, metrics, print_results

__all__ = [
    "DEFAULT_JUDGE_MODEL",
    "OFFLINE_NOTE",
    "RUBRIC_VERSION",
    "SYSTEM_PROMPT",
    "USER_PROMPT",
    "JudgeError",
    "JudgeParseError",
    "Judgment",
    "JudgmentCache",
    "OfflineJudge",
    "OpenAIJudge",
    "add_arguments",
    "format_results",
    "judge_messages",
    "judge_predictions",
    "main",
    "metrics",
    "normalize_open_answer",
    "parse_reply",
    "print_results",
    "run",
]
