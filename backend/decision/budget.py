"""What LLM review costs, and a per-project cap on it.

Prices are USD per million input / output tokens, per model name. A model missing from the table costs 0 but is
*reported* as unpriced (never guessed): an invented price would make a cap look enforced when it is not, while a
visible "unpriced" tells the operator to add the model to LLM_PRICES.

Pure stdlib and thread-safe: the reviewer calls in from a pool of worker threads.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens."""

    input_per_m: float
    output_per_m: float


#: Public list prices (USD / 1M tokens) of common hosted models; override or extend with LLM_PRICES.
DEFAULT_PRICES: dict[str, Price] = {
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4.1-nano": Price(0.10, 0.40),
    "gpt-4.1-mini": Price(0.40, 1.60),
    "gpt-4.1": Price(2.00, 8.00),
}


def parse_prices(text: str) -> dict[str, Price]:
    """LLM_PRICES → {model: Price}. Accepts {"model": [in, out]} or {"model": {"input": x, "output": y}}.

    Empty text → {}. A malformed entry raises: a silently wrong price is worse than a failed start.
    """
    if not text or not text.strip():
        return {}
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError('LLM_PRICES must be a JSON object like {"my-model": [0.15, 0.60]}')
    out: dict[str, Price] = {}
    for model, value in data.items():
        if isinstance(value, Mapping):
            pin, pout = value.get("input"), value.get("output")
        elif isinstance(value, list | tuple) and len(value) == 2:
            pin, pout = value
        else:
            raise ValueError(f"price of {model!r} must be [input, output] or {{'input': x, 'output': y}}")
        price = Price(float(pin), float(pout))  # type: ignore[arg-type]
        if min(price.input_per_m, price.output_per_m) < 0 or math.isnan(price.input_per_m + price.output_per_m):
            raise ValueError(f"price of {model!r} must be non-negative")
        out[str(model)] = price
    return out


@dataclass(frozen=True)
class Cost:
    """The cost of one usage record; `priced` is False when the model had no price (cost reported as 0)."""

    usd: float
    priced: bool


class PriceTable:
    """Model name → Price, with dated variants ("gpt-4o-mini-2024-07-18") matched by their longest known prefix."""

    def __init__(self, prices: Mapping[str, Price] | None = None, *, defaults: bool = True) -> None:
        self._prices: dict[str, Price] = dict(DEFAULT_PRICES) if defaults else {}
        self._prices.update(prices or {})

    @classmethod
    def from_text(cls, text: str) -> PriceTable:
        """The defaults overridden by an LLM_PRICES value."""
        return cls(parse_prices(text))

    def price(self, model: str) -> Price | None:
        if model in self._prices:
            return self._prices[model]
        prefixes = [m for m in self._prices if model.startswith(m + "-")]
        return self._prices[max(prefixes, key=len)] if prefixes else None

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> Cost:
        price = self.price(model)
        if price is None:
            return Cost(0.0, False)
        usd = (prompt_tokens * price.input_per_m + completion_tokens * price.output_per_m) / 1_000_000
        return Cost(usd, True)


@dataclass(frozen=True)
class BudgetTotals:
    """A snapshot for reporting (/health, metrics, logs). Caps of 0 mean unlimited."""

    calls: int
    prompt_tokens: int
    completion_tokens: int
    usd: float
    denied: int
    unpriced_calls: int
    unpriced_models: tuple[str, ...]
    max_calls: int
    max_usd: float

    def as_dict(self) -> dict[str, object]:
        return {
            "calls": self.calls, "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "usd": round(self.usd, 6), "denied": self.denied, "unpriced_calls": self.unpriced_calls,
            "unpriced_models": list(self.unpriced_models), "max_calls": self.max_calls, "max_usd": self.max_usd,
        }


@dataclass
class Budget:
    """One project's caps (LLM_BUDGET_CALLS, LLM_BUDGET_USD; 0 = unlimited) and what has been spent.

    `try_acquire` takes a call slot *before* the call, so concurrent workers can never exceed the call cap. The USD
    cap can only be checked against money already spent (a call's cost is known after it returns), so up to
    `concurrency` in-flight calls may overshoot it by their own cost; that bound is stated rather than hidden.
    `spent_*` seed the counters, e.g. from totals persisted by an earlier process.
    """

    max_calls: int = 0
    max_usd: float = 0.0
    spent_calls: int = 0
    spent_usd: float = 0.0
    _prompt_tokens: int = field(default=0, init=False)
    _completion_tokens: int = field(default=0, init=False)
    _denied: int = field(default=0, init=False)
    _unpriced_calls: int = field(default=0, init=False)
    _unpriced_models: set[str] = field(default_factory=set, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def _room(self) -> bool:
        if self.max_calls > 0 and self.spent_calls >= self.max_calls:
            return False
        return not (self.max_usd > 0 and self.spent_usd >= self.max_usd)

    def can_spend(self) -> bool:
        """Would one more call be allowed now? (Advisory; use `try_acquire` to actually take the slot.)"""
        with self._lock:
            return self._room()

    def try_acquire(self) -> bool:
        """Take one call slot if the caps allow; False (and counted as denied) when the budget is spent."""
        with self._lock:
            if not self._room():
                self._denied += 1
                return False
            self.spent_calls += 1
            return True

    def record(self, model: str, prompt_tokens: int, completion_tokens: int, cost: Cost) -> None:
        """Add what one acquired call consumed (tokens and money; an unpriced model is remembered for reports)."""
        with self._lock:
            self._prompt_tokens += int(prompt_tokens)
            self._completion_tokens += int(completion_tokens)
            self.spent_usd += cost.usd
            if not cost.priced:
                self._unpriced_calls += 1
                self._unpriced_models.add(model)

    def totals(self) -> BudgetTotals:
        with self._lock:
            return BudgetTotals(
                calls=self.spent_calls, prompt_tokens=self._prompt_tokens, completion_tokens=self._completion_tokens,
                usd=self.spent_usd, denied=self._denied, unpriced_calls=self._unpriced_calls,
                unpriced_models=tuple(sorted(self._unpriced_models)), max_calls=self.max_calls, max_usd=self.max_usd,
            )


class Budgets:
    """Per-project budgets, created on first use with the same caps (projects are isolated from each other)."""

    def __init__(self, max_calls: int = 0, max_usd: float = 0.0) -> None:
        self.max_calls = max(int(max_calls), 0)
        self.max_usd = max(float(max_usd), 0.0)
        self._budgets: dict[str, Budget] = {}
        self._lock = threading.Lock()

    def for_project(self, project_id: str | int | None) -> Budget:
        key = "" if project_id is None else str(project_id)
        with self._lock:
            if key not in self._budgets:
                self._budgets[key] = Budget(self.max_calls, self.max_usd)
            return self._budgets[key]

    def totals(self) -> dict[str, BudgetTotals]:
        with self._lock:
            budgets = dict(self._budgets)
        return {k: b.totals() for k, b in budgets.items()}


class ProjectBudget(Protocol):
    """What the reviewer asks of one project's budget: a slot before each HTTP request, the spend after it."""

    def try_acquire(self) -> bool: ...

    def record(self, model: str, prompt_tokens: int, completion_tokens: int, cost: Cost) -> None: ...

    def totals(self) -> BudgetTotals: ...


class BudgetBook(Protocol):
    """Every project's budgets: `Budgets` in memory, or `backend.store.spend.DurableBudgets` in the database."""

    def for_project(self, project_id: str | int | None) -> ProjectBudget: ...

    def totals(self) -> dict[str, BudgetTotals]: ...
