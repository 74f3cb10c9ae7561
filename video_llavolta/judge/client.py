"""The LLM judge on any OpenAI-compatible chat API, with a judgment cache that makes reruns free.

Transport failures (429, 408 / 409, 5xx, timeouts, connection errors) are retried by the openai client itself:
at most `max_retries` times, with exponential backoff and jitter, honouring the server's Retry-After. A request
that still fails counts as an API error: reported, not cached, asked again on a rerun. 401 (a rejected key) and
403 / 404 (a model the server will not serve) stop the run at once. The key is read from an environment variable
and never written anywhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

import openai
from tqdm import tqdm

from image_llavolta.jsonio import read_jsonl

from .prompts import DEFAULT_JUDGE_MODEL, RUBRIC_VERSION, is_pinned, judge_messages
from .replies import JudgeParseError, Judgment, parse_reply

logger = logging.getLogger(__name__)


class JudgeError(ValueError):
    """A problem no retry can fix (bad API key, unknown model): the run stops."""


class _GaveUp(Exception):
    """A request that failed after the client's retries, or with a status no retry fixes."""


class JudgmentCache:
    """Final judgments in an append-only JSONL, keyed by (judge model, rubric version, question, answer, prediction)."""

    def __init__(self, path: str | os.PathLike, model: str):
        self.path, self.model = os.fspath(path), model
        self._lock = threading.Lock()
        self._records = {r["key"]: r for r in read_jsonl(self.path, missing_ok=True) if "key" in r}

    def key(self, question: str, answer: str, pred: str) -> str:
        """A hash of (judge model, rubric version, question, answer, prediction)."""
        blob = json.dumps([self.model, RUBRIC_VERSION, question, answer, pred], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def get(self, key: str) -> Judgment | None:
        """The cached judgment, or None."""
        record = self._records.get(key)
        if record is None:
            return None
        return Judgment(record["match"], record["score"], record["status"], record.get("reply"), record.get("error"))

    def put(self, key: str, question: str, answer: str, pred: str, judgment: Judgment) -> None:
        """Append a final judgment at once, so a crash loses nothing already judged."""
        record = {
            "key": key,
            "judge_model": self.model,
            "rubric": RUBRIC_VERSION,
            "question": question,
            "answer": answer,
            "pred": pred,
            "match": judgment.match,
            "score": judgment.score,
            "status": judgment.status,
            "reply": judgment.reply,
            "error": judgment.error,
        }
        with self._lock:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                f.flush()
            self._records[key] = record


class OpenAIJudge:
    """The Video-ChatGPT-style judge on an OpenAI-compatible chat API, at temperature 0, cached."""

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
        max_tokens: int = 64,
    ):
        if concurrency < 1 or max_retries < 0 or max_parse_retries < 0:
            raise ValueError("need concurrency >= 1, max_retries >= 0 and max_parse_retries >= 0")
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise ValueError(
                f"the judge's API key is read from ${api_key_env}, which is not set "
                "(for a server that needs no key, set it to any non-empty value)"
            )
        if base_url is None and not is_pinned(model):
            logger.warning(
                "judge model %r looks like a moving alias: pin a dated snapshot (e.g. %r) so that "
                "scores stay comparable",
                model,
                DEFAULT_JUDGE_MODEL,
            )
        self.model, self.base_url, self.api_key_env = model, base_url, api_key_env
        self.concurrency, self.max_retries, self.max_parse_retries = concurrency, max_retries, max_parse_retries
        self.timeout, self.max_tokens = timeout, max_tokens
        self.cache = JudgmentCache(cache_path, model)
        self._api_key = api_key  # in memory only, to scrub error messages; never written or logged
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=max_retries, timeout=timeout)
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "parse_retries": 0, "cache_hits": 0, "new_judgments": 0}
        self.reported_models: set[str] = set()

    def describe(self) -> dict:
        """What the results JSON records about this judge (never the key itself)."""
        return {
            "name": self.name,
            "kind": "llm",
            "model": self.model,
            "reported_models": sorted(self.reported_models),
            "base_url": self.base_url or "https://api.openai.com/v1 (default)",
            "temperature": 0,
            "rubric_version": RUBRIC_VERSION,
            "api_key_env": self.api_key_env,
            "cache": self.cache.path,
            "max_retries": self.max_retries,
            "max_parse_retries": self.max_parse_retries,
            "timeout": self.timeout,
            **self.stats,
            "comparable_with_gpt_judged": True,
        }

    def judge_many(self, items: Sequence[tuple[str, str, str]]) -> list[Judgment]:
        """Judge (question, answer, prediction) triples: cached ones from the cache, each distinct new one once."""
        results: list[Judgment | None] = [None] * len(items)
        todo: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            key = self.cache.key(*item)
            cached = self.cache.get(key)
            if cached is not None:
                results[i] = cached
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
            for future in tqdm(
                as_completed(futures), total=len(futures), desc=f"judge {self.model}", disable=not futures
            ):
                judgment = future.result()
                for i in todo[futures[future]]:
                    results[i] = judgment
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # on a fatal error, don't start what is queued
        return results

    def _judge_one(self, key: str, question: str, answer: str, pred: str) -> Judgment:
        messages = judge_messages(question, answer, pred)
        reply, problem = "", ""
        # The client retries requests that fail; a reply that arrives but cannot be read is ours to re-ask.
        for attempt in range(1 + self.max_parse_retries):
            if attempt:
                with self._lock:
                    self.stats["parse_retries"] += 1
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
        failure = Judgment(
            None, None, "parse_failure", reply, f"{1 + self.max_parse_retries} replies unreadable: {problem}"
        )
        return self._store(key, question, answer, pred, failure)

    def _request(self, messages: list[dict]) -> str:
        """One chat completion's text (the client retries what can be retried); _GaveUp when it still fails."""
        with self._lock:
            self.stats["requests"] += 1
        try:
            response = self._client.chat.completions.create(
                model=self.model, messages=messages, temperature=0, max_tokens=self.max_tokens
            )
        except openai.AuthenticationError:
            raise JudgeError(f"the judge server rejected the API key from ${self.api_key_env} (HTTP 401)") from None
        except (openai.PermissionDeniedError, openai.NotFoundError) as err:
            raise JudgeError(f"judge model {self.model!r}: HTTP {err.status_code}: {self._scrub(err)}") from None
        except openai.APIStatusError as err:
            raise _GaveUp(f"HTTP {err.status_code}: {self._scrub(err)}") from None
        except openai.APIConnectionError as err:  # a timeout is a connection error too
            raise _GaveUp(f"{type(err).__name__}: {self._scrub(err)}") from None
        with self._lock:
            self.reported_models.add(str(response.model))
        message = response.choices[0].message if response.choices else None
        return (message.content if message is not None else None) or ""  # no text: an unreadable reply

    def _scrub(self, err: Exception) -> str:
        """An error message with the API key removed (some servers echo it)."""
        return str(err).replace(self._api_key, "***")[:300]

    def _store(self, key: str, question: str, answer: str, pred: str, judgment: Judgment) -> Judgment:
        self.cache.put(key, question, answer, pred, judgment)
        with self._lock:
            self.stats["new_judgments"] += 1
        return judgment
