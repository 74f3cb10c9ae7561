"""Judging video QA predictions: an LLM judge over any OpenAI-compatible API, or offline string matching.

    python -m video_llavolta.judge --predictions preds.jsonl --judge openai --out results.json
    python -m video_llavolta.judge --predictions msvd=msvd.jsonl msrvtt=msrvtt.jsonl --judge offline-normalized \
        --out results.json

Input: the predictions JSONL of `video_llavolta.qa_inference` (`{"question_id", "question", "answer", "pred"}`,
optionally "type"), and the failures JSONL beside it (`<name>.failures.jsonl`): a question whose video failed to
load is counted as missing. With a QA file (`qa_path` / `--qa`), reference answers are checked against it by
question id and every question without a prediction is counted as missing too.

Judges. `OpenAIJudge` asks a chat model, at temperature 0, whether the prediction means the same as the reference
(the Video-ChatGPT protocol: a yes/no plus an integer score 0-5). The default judge is a pinned snapshot
(`DEFAULT_JUDGE_MODEL`), never a moving alias. Replies are read as JSON or a Python dict literal
(`ast.literal_eval` on the `{...}` part only, never `eval`); a float score is rounded. An unreadable reply is
asked again at most `max_parse_retries` times, then counted as a parse failure. Rate limits (429, honouring
Retry-After), 5xx, timeouts and connection errors are retried at most `max_retries` times with exponential
backoff and jitter; then the question counts as an API error (reported, not cached, asked again on a rerun).
Every final judgment is appended to a JSONL cache keyed by (judge model, rubric version, question, answer,
prediction), so a rerun costs nothing and a crash loses nothing. The API key is read from an environment
variable and never written anywhere.

`OfflineJudge` matches strings, for CI and the quickstart: "exact" (identical after stripping whitespace) or
"normalized" (lowercase, no punctuation, no articles, number words as digits). It scores 5 for a match and 0
otherwise. Its numbers are NOT comparable with GPT-judged ones; the results say so.

Metrics, per benchmark, per question type (when present) and overall: accuracy = yes / judged, mean score over
judged, and the counts of judged questions, parse failures, API errors and missing predictions.

This module imports neither torch nor transformers, so judging runs anywhere.
"""
from __future__ import annotations

import argparse
import ast
import email.utils
import hashlib
import json
import logging
import math
import os
import random
import re
import sys
import threading
import time
import unicodedata
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import openai
from tqdm import tqdm

from image_llavolta.jsonio import read_failures, read_jsonl, sidecar_path, write_json, write_jsonl

logger = logging.getLogger(__name__)

DEFAULT_JUDGE_MODEL = "gpt-3.5-turbo-0125"  # a dated snapshot: "gpt-3.5-turbo" moves under you
RUBRIC_VERSION = "qa-match-v1"  # part of the cache key: change it whenever the prompts change

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

OFFLINE_NOTE = (
    "offline string match: score 5 for a match, 0 otherwise. NOT comparable with GPT-judged accuracy or score."
)
_ALIAS_SUFFIX = re.compile(r"-(\d{4}(-\d{2}-\d{2})?|\d{8})$")  # -0125, -2024-05-13: a pinned snapshot


# ---------------------------------------------------------------------------------------------------
# Prediction files (shared with qa_inference, which writes them)


# ---------------------------------------------------------------------------------------------------
# Judgments and reply parsing


@dataclass(frozen=True)
class Judgment:
    """The verdict on one prediction. `status`: "judged", "parse_failure" or "api_error"."""

    match: bool | None
    score: int | None
    status: str = "judged"
    reply: str | None = None  # the judge's raw reply (LLM judges)
    error: str | None = None


class JudgeParseError(ValueError):
    """A judge reply without a usable yes/no and 0-5 score."""


class JudgeError(RuntimeError):
    """A problem no retry can fix (bad API key, unknown model): the run stops."""


def _reply_dict(text: str) -> dict | None:
    """The dict in a reply: its `{...}` part as JSON or a Python literal, else `pred: yes ... score: 4` text."""
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        snippet = text[start : end + 1]
        for load in (json.loads, ast.literal_eval):  # literal_eval evaluates literals only, never code
            try:
                value = load(snippet)
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                continue
            if isinstance(value, dict):
                return value
    pred = re.search(r"""\bpred\b['"]?\s*[:=]\s*['"]?(yes|no)\b""", text, re.IGNORECASE)
    score = re.search(r"""\bscore\b['"]?\s*[:=]\s*['"]?(\d+(?:\.\d+)?)""", text, re.IGNORECASE)
    return {"pred": pred.group(1), "score": score.group(1)} if pred and score else None


def parse_reply(text: str) -> tuple[bool, int]:
    """(match, score) from a judge reply such as `{"pred": "yes", "score": 4}`; JudgeParseError if unusable."""
    data = _reply_dict(text or "")
    if data is None:
        raise JudgeParseError(f"no {{'pred': ..., 'score': ...}} in the reply {text[:200]!r}")
    data = {str(k).strip().lower(): v for k, v in data.items()}
    pred, score = data.get("pred"), data.get("score")
    if isinstance(pred, bool):
        match = pred
    elif isinstance(pred, str) and pred.strip().lower() in ("yes", "no"):
        match = pred.strip().lower() == "yes"
    else:
        raise JudgeParseError(f"'pred' must be 'yes' or 'no', got {pred!r}")
    if isinstance(score, str):
        try:
            score = float(score.strip())
        except ValueError:
            raise JudgeParseError(f"'score' is not a number: {score!r}") from None
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise JudgeParseError(f"'score' must be a number from 0 to 5, got {score!r}")
    rounded = math.floor(score + 0.5)  # half up (4.5 -> 5), not Python's round-half-even
    if not 0 <= rounded <= 5:
        raise JudgeParseError(f"'score' must be from 0 to 5, got {score!r}")
    return match, rounded


# ---------------------------------------------------------------------------------------------------
# Offline judges

NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
ARTICLES = frozenset({"a", "an", "the"})


def normalize_answer(text: str) -> str:
    """Lowercase, punctuation to spaces, articles dropped, number words as digits, single spaces."""
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text.lower())
    return " ".join(NUMBER_WORDS.get(word, word) for word in text.split() if word not in ARTICLES)


class OfflineJudge:
    """String match without any API: "exact" or "normalized". Scores 5 for a match, 0 otherwise."""

    comparable_with_gpt = False

    def __init__(self, mode: str = "normalized"):
        if mode not in ("exact", "normalized"):
            raise ValueError(f"OfflineJudge mode must be 'exact' or 'normalized', got {mode!r}")
        self.mode = mode
        self.name = f"offline-{mode}"

    def describe(self) -> dict:
        """What the results JSON records about this judge."""
        return {"name": self.name, "kind": "offline", "mode": self.mode, "comparable_with_gpt_judged": False,
                "note": OFFLINE_NOTE}

    def same(self, answer: str, pred: str) -> bool:
        """Whether a prediction matches the reference under this judge's mode."""
        if self.mode == "exact":
            return pred.strip() == answer.strip()
        return normalize_answer(pred) == normalize_answer(answer)

    def judge_many(self, items: Sequence[tuple[str, str, str]]) -> list[Judgment]:
        """Judge (question, answer, prediction) triples."""
        return [Judgment(m, 5 if m else 0) for m in (self.same(a, p) for _, a, p in items)]


# ---------------------------------------------------------------------------------------------------
# The LLM judge


class _GaveUp(Exception):
    """A request failed after every retry (or with a status no retry fixes)."""


def retry_after_seconds(headers) -> float | None:
    """Seconds a response asks to wait: `retry-after-ms`, or `retry-after` as seconds or an HTTP date."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
        return max(0.0, when.timestamp() - time.time())
    return None


class OpenAIJudge:
    """The Video-ChatGPT-style judge on an OpenAI-compatible chat API, at temperature 0, cached and retried."""

    comparable_with_gpt = True
    name = "openai"

    def __init__(
        self,
        model: str = DEFAULT_JUDGE_MODEL,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 4,
        max_retries: int = 5,
        max_parse_retries: int = 2,
        timeout: float = 30.0,
        *,
        cache_path: str | os.PathLike,
        backoff: float = 1.0,
        max_wait: float = 60.0,
        max_tokens: int = 64,
        seed: int | None = None,
    ):
        if concurrency < 1 or max_retries < 0 or max_parse_retries < 0:
            raise ValueError("need concurrency >= 1, max_retries >= 0 and max_parse_retries >= 0")
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise ValueError(f"the judge's API key is read from ${api_key_env}, which is not set "
                             "(for a server that needs no key, set it to any non-empty value)")
        if base_url is None and not _ALIAS_SUFFIX.search(model):
            logger.warning("judge model %r looks like a moving alias: pin a dated snapshot (e.g. %r) so that "
                           "scores stay comparable", model, DEFAULT_JUDGE_MODEL)
        self.model, self.base_url, self.api_key_env = model, base_url, api_key_env
        self.concurrency, self.max_retries, self.max_parse_retries = concurrency, max_retries, max_parse_retries
        self.timeout, self.backoff, self.max_wait, self.max_tokens = timeout, backoff, max_wait, max_tokens
        self.cache_path = os.fspath(cache_path)
        self._api_key = api_key  # in memory only, to scrub error messages; never written or logged
        # Our own retry loop (backoff, jitter, Retry-After, bounded): the client's is switched off.
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._cache = {r["key"]: r for r in read_jsonl(self.cache_path, missing_ok=True) if "key" in r}
        self.stats = {"requests": 0, "retries": 0, "cache_hits": 0, "new_judgments": 0}
        self.reported_models: set[str] = set()

    def describe(self) -> dict:
        """What the results JSON records about this judge (never the key itself)."""
        return {
            "name": self.name, "kind": "llm", "model": self.model, "reported_models": sorted(self.reported_models),
            "base_url": self.base_url or "https://api.openai.com/v1 (default)", "temperature": 0,
            "rubric_version": RUBRIC_VERSION, "api_key_env": self.api_key_env, "cache": self.cache_path,
            "max_retries": self.max_retries, "max_parse_retries": self.max_parse_retries, **self.stats,
            "comparable_with_gpt_judged": True,
        }

    def cache_key(self, question: str, answer: str, pred: str) -> str:
        """The cache key of one judgment: a hash of (judge model, rubric version, question, answer, prediction)."""
        blob = json.dumps([self.model, RUBRIC_VERSION, question, answer, pred], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def messages(self, question: str, answer: str, pred: str) -> list[dict]:
        """The chat messages that ask for one judgment."""
        user = USER_PROMPT.format(question=question, answer=answer, pred=pred)
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]

    def judge_many(self, items: Sequence[tuple[str, str, str]]) -> list[Judgment]:
        """Judge (question, answer, prediction) triples: cached ones from the cache, each distinct new one once."""
        results: list[Judgment | None] = [None] * len(items)
        todo: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            key = self.cache_key(*item)
            if key in self._cache:
                results[i] = _from_cache(self._cache[key])
                self.stats["cache_hits"] += 1
            else:
                todo.setdefault(key, []).append(i)
        stop = threading.Event()  # set by a fatal error: queued questions then return without a request

        def task(key: str, item: tuple[str, str, str]) -> Judgment | None:
            if stop.is_set():
                return None
            try:
                return self._judge_one(key, *item)
            except JudgeError:
                stop.set()
                raise

        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        try:
            futures = {pool.submit(task, key, items[rows[0]]): key for key, rows in todo.items()}
            for future in tqdm(as_completed(futures), total=len(futures), desc=f"judge {self.model}",
                               disable=not futures):
                judgment = future.result()
                for i in todo[futures[future]]:
                    results[i] = judgment
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # on a fatal error, don't start what is queued
        return results

    def _judge_one(self, key: str, question: str, answer: str, pred: str) -> Judgment:
        messages = self.messages(question, answer, pred)
        reply, problem = "", ""
        for _ in range(1 + self.max_parse_retries):
            try:
                reply = self._request(messages)
            except _GaveUp as err:
                logger.warning("judge: giving up on one question: %s", err)
                return Judgment(None, None, "api_error", error=str(err))
            try:
                match, score = parse_reply(reply)
            except JudgeParseError as err:
                problem = str(err)
                continue
            return self._store(key, question, answer, pred, Judgment(match, score, "judged", reply))
        failure = Judgment(None, None, "parse_failure", reply, f"{1 + self.max_parse_retries} replies unreadable: "
                           f"{problem}")
        return self._store(key, question, answer, pred, failure)

    def _request(self, messages: list[dict]) -> str:
        """One chat completion's text, retried on 429 / 5xx / timeouts / connection errors; _GaveUp after that."""
        for attempt in range(self.max_retries + 1):
            wait = None
            with self._lock:
                self.stats["requests"] += 1
            try:
                response = self._client.chat.completions.create(
                    model=self.model, messages=messages, temperature=0, max_tokens=self.max_tokens)
                with self._lock:
                    self.reported_models.add(str(response.model))
                return response.choices[0].message.content or ""
            except openai.AuthenticationError:
                raise JudgeError(f"the judge server rejected the API key from ${self.api_key_env} (HTTP 401)") from None
            except (openai.PermissionDeniedError, openai.NotFoundError) as err:
                raise JudgeError(f"judge model {self.model!r}: HTTP {err.status_code}: {self._scrub(err)}") from None
            except openai.APIStatusError as err:
                status = err.status_code
                problem = f"HTTP {status}: {self._scrub(err)}"
                if status not in (408, 409, 429) and status < 500:
                    raise _GaveUp(problem) from None  # a bad request stays bad: no retry
                wait = retry_after_seconds(err.response.headers)
            except (openai.APITimeoutError, openai.APIConnectionError) as err:  # timeout is a connection error
                problem = f"{type(err).__name__}: {self._scrub(err)}"
            if attempt == self.max_retries:
                raise _GaveUp(f"{self.max_retries + 1} attempts, last: {problem}")
            if wait is None:  # exponential backoff with jitter, so parallel workers don't retry in step
                wait = min(self.max_wait, self.backoff * 2**attempt) * self._rng.uniform(0.5, 1.0)
            else:  # honour Retry-After (capped), plus a little jitter
                wait = min(self.max_wait, wait) * (1 + 0.1 * self._rng.random())
            with self._lock:
                self.stats["retries"] += 1
            logger.info("judge: %s; retrying in %.2f s", problem, wait)
            time.sleep(wait)
        raise AssertionError("unreachable")

    def _scrub(self, err: Exception) -> str:
        """An error message with the API key removed (some servers echo it)."""
        return str(err).replace(self._api_key, "***")[:300]

    def _store(self, key: str, question: str, answer: str, pred: str, judgment: Judgment) -> Judgment:
        """Append a final judgment to the cache at once (a crash loses nothing already judged)."""
        record = {"key": key, "judge_model": self.model, "rubric": RUBRIC_VERSION, "question": question,
                  "answer": answer, "pred": pred, "match": judgment.match, "score": judgment.score,
                  "status": judgment.status, "reply": judgment.reply, "error": judgment.error}
        with self._lock:
            folder = os.path.dirname(os.path.abspath(self.cache_path))
            os.makedirs(folder, exist_ok=True)
            with open(self.cache_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                f.flush()
            self._cache[key] = record
            self.stats["new_judgments"] += 1
        return judgment


def _from_cache(record: dict) -> Judgment:
    return Judgment(record["match"], record["score"], record["status"], record.get("reply"), record.get("error"))


# ---------------------------------------------------------------------------------------------------
# Scoring a predictions file

STATUSES = ("judged", "parse_failure", "api_error", "missing")


def metrics(rows: Sequence[dict]) -> dict:
    """accuracy = yes / judged, mean score over judged, and the count of each outcome."""
    judged = [r for r in rows if r["status"] == "judged"]
    yes = sum(bool(r["match"]) for r in judged)
    return {
        "questions": len(rows),
        "judged": len(judged),
        "yes": yes,
        "accuracy": yes / len(judged) if judged else None,
        "score": sum(r["score"] for r in judged) / len(judged) if judged else None,
        "parse_failures": sum(r["status"] == "parse_failure" for r in rows),
        "api_errors": sum(r["status"] == "api_error" for r in rows),
        "missing": sum(r["status"] == "missing" for r in rows),
    }


def _by_type(rows: Sequence[dict]) -> dict:
    types = sorted({r["type"] for r in rows if r.get("type") is not None})
    return {t: metrics([r for r in rows if r.get("type") == t]) for t in types}


def _named(paths, default_name: str | None) -> dict[str, str]:
    """{benchmark: path} from one path or a mapping; one path is named `default_name` or its file name."""
    if isinstance(paths, Mapping):
        return {str(k): os.fspath(v) for k, v in paths.items()}
    path = os.fspath(paths)
    return {default_name or os.path.splitext(os.path.basename(path))[0]: path}


def _load_rows(name: str, pred_path: str, qa_path: str | None) -> list[dict]:
    """One row per question (predicted or missing) of one benchmark, references checked against the QA file."""
    rows, seen = [], set()
    for number, p in enumerate(read_jsonl(pred_path), 1):
        missing = [k for k in ("question_id", "question", "answer", "pred") if k not in p]
        if missing or not isinstance(p["pred"], str):
            raise ValueError(f"{pred_path}: prediction {number} lacks {missing or ['a string pred']}")
        key = str(p["question_id"])
        if key in seen:
            raise ValueError(f"{pred_path}: question id {p['question_id']!r} has more than one prediction")
        seen.add(key)
        rows.append({"benchmark": name, "question_id": p["question_id"], "type": p.get("type"),
                     "question": p["question"], "answer": p["answer"], "pred": p["pred"]})
    failures = read_failures(pred_path, seen)
    for key, f in failures.items():
        seen.add(key)
        rows.append({"benchmark": name, "question_id": f["question_id"], "type": f.get("type"),
                     "question": f.get("question"), "answer": f.get("answer"), "pred": None, "status": "missing",
                     "error": f.get("reason", "failed")})
    if qa_path is not None:
        qa = {str(r["question_id"]): r for r in read_jsonl(qa_path)}
        for row in rows:
            ref = qa.get(str(row["question_id"]))
            if ref is None:
                raise ValueError(f"{pred_path}: question id {row['question_id']!r} is not in {qa_path}")
            if row["answer"] is not None and row["answer"] != ref["answer"]:
                raise ValueError(f"{pred_path}: question id {row['question_id']!r} has answer {row['answer']!r} "
                                 f"but {qa_path} says {ref['answer']!r}: predictions from another QA file?")
            row["question"], row["answer"] = ref["question"], ref["answer"]  # a failure record may lack them
        for key, ref in qa.items():
            if key not in seen:
                rows.append({"benchmark": name, "question_id": ref["question_id"], "type": ref.get("type"),
                             "question": ref["question"], "answer": ref["answer"], "pred": None,
                             "status": "missing", "error": "no prediction"})
    return rows


def judge_predictions(pred_path, judge, out_path: str | os.PathLike, benchmark: str | None = None,
                      qa_path=None) -> dict:
    """Judge one predictions file (or {benchmark: file}); write the results JSON and per-question judgments."""
    preds = _named(pred_path, benchmark)
    if qa_path is None or isinstance(qa_path, Mapping):
        qas = _named(qa_path, None) if qa_path is not None else {}
    elif len(preds) == 1:
        qas = {next(iter(preds)): os.fspath(qa_path)}
    else:
        raise ValueError("several predictions files need their QA files as {benchmark: path}")
    if qas and set(qas) != set(preds):
        raise ValueError(f"QA files {sorted(qas)} do not match the predictions' benchmarks {sorted(preds)}")
    rows = [row for name, path in preds.items() for row in _load_rows(name, path, qas.get(name))]

    pending = [r for r in rows if "status" not in r]
    for row, j in zip(pending, judge.judge_many([(r["question"], r["answer"], r["pred"]) for r in pending])):
        row.update(status=j.status, match=j.match, score=j.score, reply=j.reply, error=j.error)

    described = judge.describe()  # after judging: LLM judges report request counts and server-side model names
    results = {
        "judge": described,
        "comparable_with_gpt_judged": judge.comparable_with_gpt,
        "note": "accuracy = yes / judged; score = mean over judged (0-5); parse failures, API errors and "
                "missing predictions are counted, not judged" + ("" if judge.comparable_with_gpt else
                                                                  ". " + OFFLINE_NOTE),
        "predictions": preds,
        "overall": metrics(rows),
        "by_type": _by_type(rows),
        "by_benchmark": {name: {**metrics(sub), "by_type": _by_type(sub)}
                         for name in preds for sub in [[r for r in rows if r["benchmark"] == name]]},
        "problems": {
            status: [{"benchmark": r["benchmark"], "question_id": r["question_id"], "error": r.get("error"),
                      **({"reply": r["reply"]} if r.get("reply") is not None else {})}
                     for r in rows if r["status"] == status]
            for status in ("parse_failure", "api_error", "missing")
        },
        "judgments": sidecar_path(out_path, ".judgments.jsonl"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_jsonl(results["judgments"], rows)
    write_json(out_path, results)
    return results


def _fmt(value, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}%" if percent else f"{value:.2f}"


def print_results(results: dict, file=None) -> None:
    """Print the results as a table: per benchmark, per question type and overall."""
    file = file or sys.stdout
    judge = results["judge"]
    print(f"\njudge: {judge['name']}" + (f" ({judge['model']})" if judge.get("model") else ""), file=file)
    if not results["comparable_with_gpt_judged"]:
        print(f"NOTE: {OFFLINE_NOTE}", file=file)
    header = ("", "questions", "judged", "accuracy", "score", "parse fail", "api errors", "missing")
    lines = []

    def add(label: str, m: dict):
        lines.append((label, m["questions"], m["judged"], _fmt(m["accuracy"], True), _fmt(m["score"]),
                      m["parse_failures"], m["api_errors"], m["missing"]))

    for name, m in results["by_benchmark"].items():
        add(name, m)
        for t, mt in m["by_type"].items():
            add(f"  {t}", mt)
    if len(results["by_benchmark"]) > 1:
        add("overall", results["overall"])
    width = max(len(str(row[0])) for row in [header, *lines])
    for row in [header, *lines]:
        print(f"{row[0]:<{width}}" + "".join(f"  {str(v):>10}" for v in row[1:]), file=file)
    for status, items in results["problems"].items():
        if items:
            ids = ", ".join(str(i["question_id"]) for i in items[:5]) + (" ..." if len(items) > 5 else "")
            print(f"{status.replace('_', ' ')}: {len(items)} ({ids})", file=file)


# ---------------------------------------------------------------------------------------------------
# Command line

JUDGES = ("offline-exact", "offline-normalized", "openai")


def _pairs(values: list[str] | None) -> dict[str, str] | str | None:
    """`[NAME=]FILE ...` -> {name: file}; a single unnamed file stays a path."""
    if not values:
        return None
    if len(values) == 1 and "=" not in values[0]:
        return values[0]
    out = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            name, path = os.path.splitext(os.path.basename(value))[0], value
        if name in out:
            raise ValueError(f"benchmark {name!r} given twice")
        out[name] = path
    return out


def build_parser() -> argparse.ArgumentParser:
    """The judge's command-line arguments."""
    p = argparse.ArgumentParser(prog="python -m video_llavolta.judge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--predictions", nargs="+", required=True, metavar="[NAME=]FILE",
                   help="predictions JSONL, one per benchmark (NAME defaults to the file name)")
    p.add_argument("--qa", nargs="+", metavar="[NAME=]FILE",
                   help="QA JSONL per benchmark: check references by id and count absent predictions as missing")
    p.add_argument("--judge", choices=JUDGES, required=True)
    p.add_argument("--out", required=True, help="results JSON (judgments go to <out>.judgments.jsonl)")
    p.add_argument("--benchmark", help="name of a single predictions file's benchmark")
    g = p.add_argument_group("openai judge")
    g.add_argument("--model", default=DEFAULT_JUDGE_MODEL, help=f"judge model (default: {DEFAULT_JUDGE_MODEL})")
    g.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://localhost:8000/v1 (default: OpenAI)")
    g.add_argument("--api-key-env", default="OPENAI_API_KEY", help="variable holding the API key")
    g.add_argument("--cache", help="judgment cache JSONL (default: <out>.judge_cache.jsonl)")
    g.add_argument("--concurrency", type=int, default=4)
    g.add_argument("--max-retries", type=int, default=5)
    g.add_argument("--max-parse-retries", type=int, default=2)
    g.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    return p


def main(argv: list[str] | None = None) -> int:
    """Judge predictions from the command line; bad input is one clear line and exit code 2."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.judge == "openai":
            judge = OpenAIJudge(args.model, args.base_url, args.api_key_env, args.concurrency, args.max_retries,
                                args.max_parse_retries, args.timeout,
                                cache_path=args.cache or sidecar_path(args.out, ".judge_cache.jsonl"))
        else:
            judge = OfflineJudge(args.judge.removeprefix("offline-"))
        results = judge_predictions(_pairs(args.predictions), judge, args.out, args.benchmark, _pairs(args.qa))
    except (OSError, ValueError, JudgeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_results(results)
    print(f"\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
