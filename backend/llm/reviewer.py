"""LLM review of hard samples through any OpenAI-compatible chat endpoint.

One `Reviewer` per process: it owns the HTTP client, a bounded pool of worker threads (LLM_CONCURRENCY), the answer
cache and the per-project budgets. `review()` never raises for a per-item problem and never drops an item: every
input gets a `ReviewResult` in input order, with the raw answer kept, and `ReviewResult.route()` says whether the
verdict may be used as a label ("llm") or the sample goes to a human.

Reliability rules, and why:
- retries with exponential backoff only where a retry can help: 429, 5xx and connection failures. Other 4xx are
  the request's fault and would fail again. A call that *times out* is not retried: a model too slow once will
  likely be slow again, and the batch's time budget matters more than one sample (it goes to a human).
- structured output (response_format json_schema) first; a server that rejects it (400/422, or any error that
  names response_format) gets the plain prompt at once, and once the plain prompt works the endpoint is remembered
  as plain-only (per base URL, for the life of the process). A 400 that the plain prompt gets too was not about
  the schema and is not remembered.
- the budget is taken before each HTTP request, retries included (a denied request is never sent), spending
  recorded from each response's `usage`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

import openai
from openai import OpenAI
from sqlalchemy.engine import Engine

from backend.decision.budget import BudgetBook, Budgets, BudgetTotals, PriceTable, ProjectBudget
from backend.decision.routing import Route, final_route

from .cache import CachedAnswer, LRUCache, ReviewCache, SqlCache, TieredCache, cache_key
from .client import (
    error_message,
    forget_endpoint_capabilities,
    make_client,
    note_schema_support,
    rejects_schema,
    retry_after,
    retryable,
    schema_supported,
    usage_tokens,
)
from .parse import parse_answer
from .prompt import PROMPT_VERSION, build_messages, response_schema

log = logging.getLogger(__name__)

ReviewStatus = Literal["valid", "invalid", "abstain", "error", "timeout", "over_budget", "cached"]

_NO_DEADLINE_S = 365 * 24 * 3600.0  # "no time budget", kept finite so deadline arithmetic stays plain floats

__all__ = ["ReviewItem", "ReviewResult", "Reviewer", "ReviewerConfig", "forget_endpoint_capabilities"]


@dataclass(frozen=True)
class ReviewerConfig:
    """The reviewer's settings; field names are those of `backend.settings.Settings` (env: upper case)."""

    openai_base_url: str = ""  # empty: the openai client's default (api.openai.com)
    openai_api_key: str = ""  # empty: a placeholder, for local servers that need none
    llm_model: str = ""  # empty: LLM review disabled
    llm_concurrency: int = 4
    llm_timeout_seconds: float = 30.0  # per HTTP call
    llm_max_retries: int = 2  # on 429 / 5xx / connection errors
    llm_backoff_seconds: float = 0.5  # first backoff; doubles on each retry
    llm_batch_seconds: float = 120.0  # overall time budget of one review() call; 0: none
    llm_budget_calls: int = 0  # per project; 0: unlimited
    llm_budget_usd: float = 0.0  # per project; 0: unlimited
    llm_prices: str = ""  # JSON {"model": [usd per 1M input, per 1M output]}, on top of the defaults
    llm_cache_size: int = 10_000  # in-memory LRU entries; 0 disables it
    llm_max_tokens: int = 64
    llm_temperature: float = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.llm_model)

    @classmethod
    def from_object(cls, obj: object) -> ReviewerConfig:
        """From any settings-like object (attributes) or mapping; missing names keep their defaults."""
        if isinstance(obj, ReviewerConfig):
            return obj
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = obj.get(f.name) if isinstance(obj, Mapping) else getattr(obj, f.name, None)
            if value is not None:
                values[f.name] = type(f.default)(value)
        return cls(**values)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ReviewerConfig:
        """From upper-case environment names (OPENAI_BASE_URL, LLM_MODEL, ...); empty values keep defaults."""
        return cls.from_object({f.name: env[f.name.upper()] for f in fields(cls) if env.get(f.name.upper())})


@dataclass(frozen=True)
class ReviewItem:
    """One hard sample: its text, the control's choices (exact names), few-shot (text, label) pairs, guideline."""

    text: str
    choices: Sequence[str]
    examples: Sequence[tuple[str, str]] = ()
    guideline: str = ""


@dataclass(frozen=True)
class ReviewResult:
    """What the LLM said about one item. `raw` always keeps the answer text as received ("" when none came)."""

    verdict: str | None  # exactly one of the choices, or None
    status: ReviewStatus
    raw: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    attempts: int = 0  # HTTP requests sent for this item
    error: str = ""  # why there is no verdict (or "" when there is one)
    model: str = ""
    prompt_version: str = PROMPT_VERSION
    structured: bool | None = None  # json_schema used for the answer that counted; None: no answer
    priced: bool = True  # False: the model had no price, cost_usd reported as 0

    def route(self) -> Route:
        """"llm" when the verdict may be used as the label, else "human" with the reason."""
        return final_route(self.status, self.verdict, self.error)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class _Attempt:
    """Mutable bookkeeping of one item's calls."""

    started: float
    attempts: int = 0
    structured: bool = True
    fell_back: bool = False
    last_error: str = ""


class Reviewer:
    """Reviews hard samples with an LLM; see the module docstring. Thread-safe; call `close()` when done."""

    def __init__(
        self,
        config: object,
        *,
        cache: ReviewCache | None = None,
        engine: Engine | None = None,
        budgets: BudgetBook | None = None,
        prices: PriceTable | None = None,
        client: OpenAI | None = None,
    ) -> None:
        cfg = ReviewerConfig.from_object(config)
        self.config = cfg
        self.model = cfg.llm_model
        # Retries are ours: backoff policy, attempt counts and the batch deadline.
        self.client = client or make_client(cfg.openai_base_url, cfg.openai_api_key, cfg.llm_timeout_seconds)
        self.endpoint = str(self.client.base_url)
        self.prices = prices or PriceTable.from_text(cfg.llm_prices)
        if budgets is None and engine is not None:  # in the database: exact across processes and restarts
            from backend.store.spend import DurableBudgets

            budgets = DurableBudgets(engine, cfg.llm_budget_calls, cfg.llm_budget_usd)
        self.budgets: BudgetBook = budgets or Budgets(cfg.llm_budget_calls, cfg.llm_budget_usd)
        if cache is None:
            sql = SqlCache(engine, cfg.llm_model, PROMPT_VERSION) if engine is not None else None
            cache = TieredCache(LRUCache(cfg.llm_cache_size), sql)
        self.cache = cache
        self._pool = ThreadPoolExecutor(max_workers=max(cfg.llm_concurrency, 1), thread_name_prefix="llm-review")

    # -- public -----------------------------------------------------------------------------------------------

    def review(
        self, items: Sequence[ReviewItem], project_id: str | int | None = None, time_budget_s: float | None = None
    ) -> list[ReviewResult]:
        """Review `items` concurrently; one result per item, in input order, within the batch's time budget.

        `time_budget_s` overrides LLM_BATCH_SECONDS for this call (0: no time budget). Items with the same cache
        key are asked once; their copies come back as "cached" (no tokens, no cost) when
        the answer was decisive, else as the same failure.
        """
        if not items:
            return []
        budget = self.budgets.for_project(project_id)
        seconds = self.config.llm_batch_seconds if time_budget_s is None else time_budget_s
        deadline = time.monotonic() + (seconds if seconds > 0 else _NO_DEADLINE_S)
        keys = [self._key(item) for item in items]
        first: dict[str, int] = {}
        futures: dict[str, Future[ReviewResult]] = {}
        for i, (item, key) in enumerate(zip(items, keys, strict=True)):
            if key not in first:
                first[key] = i
                futures[key] = self._pool.submit(self._review_one, item, key, budget, deadline)
        # Workers respect the deadline themselves; the grace only covers a call already past its last byte.
        wait(futures.values(), timeout=max(deadline - time.monotonic(), 0.0) + 2.0)
        out: list[ReviewResult] = []
        for i, key in enumerate(keys):
            fut = futures[key]
            if not fut.done():
                fut.cancel()
                res = ReviewResult(None, "timeout", error="time budget", model=self.model)
            else:
                try:
                    res = fut.result()
                except Exception as exc:  # a bug, not a per-item condition: still never lose the item
                    log.exception("LLM review failed unexpectedly")
                    res = ReviewResult(None, "error", error=f"{type(exc).__name__}: {exc}", model=self.model)
            if first[key] != i:
                res = self._duplicate(res)
            out.append(res)
        return out

    def totals(self, project_id: str | int | None = None) -> BudgetTotals:
        """Calls, tokens and USD spent by one project (for reports)."""
        return self.budgets.for_project(project_id).totals()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    def __enter__(self) -> Reviewer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one item -----------------------------------------------------------------------------------------------

    def _key(self, item: ReviewItem) -> str:
        return cache_key(item.text, item.choices, item.guideline, PROMPT_VERSION, self.model)

    def _result(self, status: ReviewStatus, a: _Attempt, verdict: str | None = None, **kw: Any) -> ReviewResult:
        return ReviewResult(verdict, status, model=self.model, latency_s=time.monotonic() - a.started,
                            attempts=a.attempts, **kw)

    @staticmethod
    def _duplicate(res: ReviewResult) -> ReviewResult:
        decisive = res.status in ("valid", "abstain", "cached")
        return replace(res, status="cached" if decisive else res.status, prompt_tokens=0, completion_tokens=0,
                       cost_usd=0.0, latency_s=0.0, attempts=0)

    def _review_one(self, item: ReviewItem, key: str, budget: ProjectBudget, deadline: float) -> ReviewResult:
        started = time.monotonic()
        hit = self.cache.get(key)
        if hit is not None:
            return ReviewResult(hit.verdict, "cached", raw=hit.raw, model=self.model,
                                latency_s=time.monotonic() - started)
        if not self.config.enabled:
            return ReviewResult(None, "error", error="LLM review disabled (no LLM_MODEL)", model=self.model)
        if not item.choices or len(set(item.choices)) != len(item.choices):
            return ReviewResult(None, "error", error="choices must be non-empty and distinct", model=self.model)
        if time.monotonic() >= deadline:
            return ReviewResult(None, "timeout", error="time budget", model=self.model)
        a = _Attempt(started=started)
        a.structured = schema_supported(self.endpoint)
        return self._call(item, key, budget, deadline, a)

    def _call(self, item: ReviewItem, key: str, budget: ProjectBudget, deadline: float, a: _Attempt) -> ReviewResult:
        cfg = self.config
        retries = 0
        delay = cfg.llm_backoff_seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self._result("timeout", a, error=self._with_last("time budget", a))
            timeout = min(cfg.llm_timeout_seconds, remaining)
            kwargs: dict[str, Any] = {}
            if a.structured:
                kwargs["response_format"] = response_schema(item.choices)
            messages = build_messages(item.text, item.choices, item.examples, item.guideline, a.structured)
            if not budget.try_acquire():  # every HTTP request is paid for, retries and fallbacks too
                t = budget.totals()
                spent = (f"budget spent: {t.calls} calls (cap {t.max_calls or '∞'}), "
                         f"${t.usd:.4f} (cap {t.max_usd or '∞'})")
                if a.attempts == 0:
                    return self._result("over_budget", a, error=spent)
                return self._result("error", a, error=f"{a.last_error}; {spent}")
            a.attempts += 1
            try:
                resp = self.client.chat.completions.create(
                    model=self.model, messages=messages, temperature=cfg.llm_temperature,  # type: ignore[arg-type]
                    max_tokens=cfg.llm_max_tokens, timeout=timeout, **kwargs,
                )
            except openai.APITimeoutError:
                why = "time budget" if timeout < cfg.llm_timeout_seconds else f"no answer within {timeout:.1f}s"
                return self._result("timeout", a, error=why)
            except openai.APIStatusError as exc:
                code = exc.status_code
                a.last_error = f"HTTP {code}: {error_message(exc)}"
                if a.structured and not a.fell_back and rejects_schema(code, a.last_error):
                    log.info("endpoint %s rejected response_format (%s); retrying as plain text", self.endpoint, code)
                    a.structured, a.fell_back = False, True
                    continue
                if not retryable(code):
                    return self._result("error", a, error=a.last_error)
                wait_s = max(delay, retry_after(exc))
            except openai.APIConnectionError as exc:
                a.last_error = f"connection error: {exc}"
                wait_s = delay
            else:
                return self._answered(item, key, budget, a, resp)
            if retries >= cfg.llm_max_retries:
                return self._result("error", a, error=f"{a.last_error} (after {a.attempts} attempts)")
            if time.monotonic() + wait_s >= deadline:
                return self._result("timeout", a, error=self._with_last("time budget", a))
            retries += 1
            time.sleep(wait_s)
            delay *= 2

    @staticmethod
    def _with_last(reason: str, a: _Attempt) -> str:
        return f"{reason} (last error: {a.last_error})" if a.last_error else reason

    def _answered(self, item: ReviewItem, key: str, budget: ProjectBudget, a: _Attempt, resp: Any) -> ReviewResult:
        if a.fell_back or a.structured:
            note_schema_support(self.endpoint, not a.fell_back)
        choice = resp.choices[0] if resp.choices else None
        raw = (choice.message.content if choice is not None and choice.message is not None else None) or ""
        p_tok, c_tok = usage_tokens(resp)
        cost = self.prices.cost(self.model, p_tok, c_tok)
        budget.record(self.model, p_tok, c_tok, cost)
        parsed = parse_answer(raw, item.choices)
        if parsed.status != "invalid":
            self.cache.put(key, CachedAnswer(parsed.status, parsed.verdict, raw, p_tok, c_tok))
        error = parsed.detail
        if parsed.status == "invalid" and choice is not None and choice.finish_reason == "length":
            error += " (answer cut at max_tokens)"
        return self._result(parsed.status, a, verdict=parsed.verdict, raw=raw, prompt_tokens=p_tok,
                            completion_tokens=c_tok, cost_usd=cost.usd, priced=cost.priced, error=error,
                            structured=a.structured)
