"""What each project has spent, in the database: LLM calls and USD, people's tasks, reviews, tasks predicted.

Counters that bound spending must hold across gunicorn workers, rq workers, prelabel runs and restarts, so none is
kept in memory. A reservation is one conditional UPDATE (`used + amount <= cap`): the database serialises writers
of a row, so two processes can never both take the last slot, on SQLite or PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import threading
from enum import StrEnum

from sqlalchemy import Column, Float, String, Table, and_, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from backend.decision.budget import BudgetTotals, Cost
from backend.store.base import ensure_tables, metadata

# What a project has spent, per resource and period ("" for all time, "YYYY-MM-DD" for a day), as exact counters:
# every reservation is one conditional UPDATE, so gunicorn workers, rq workers and restarts share them
# (backend/store/spend.py).
spend_counters = Table(
    "spend",
    metadata,
    Column("project_id", String(64), primary_key=True),
    Column("resource", String(32), primary_key=True),
    Column("period", String(16), primary_key=True),
    Column("used", Float, nullable=False, default=0.0),
)


class Resource(StrEnum):
    TASKS = "tasks"  # tasks predicted (re-predictions count): what running shares are shares of
    REVIEWS = "reviews"  # tasks sent for review, LLM or person (REVIEW_MAX_SHARE)
    HUMAN = "human_tasks"  # tasks handed to a person (HUMAN_MAX_SHARE, HUMAN_BUDGET_DAY)
    LLM_CALLS = "llm_calls"  # HTTP requests sent to the LLM, retries included (LLM_BUDGET_CALLS)
    LLM_USD = "llm_usd"  # LLM_BUDGET_USD
    LLM_PROMPT = "llm_prompt_tokens"
    LLM_COMPLETION = "llm_completion_tokens"
    LLM_DENIED = "llm_denied"  # calls refused for want of budget
    LLM_UNPRICED = "llm_unpriced_calls"


ALL_TIME = ""


def today() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")


class Spend:
    """Exact per-project counters with atomic reservations."""

    def __init__(self, engine: Engine):
        self.engine = engine
        ensure_tables(engine, [spend_counters])  # an engine made elsewhere (a cache's, a test's) may not have it

    def _key(self, project_id: str, resource: Resource, period: str):  # type: ignore[no-untyped-def]
        return and_(spend_counters.c.project_id == str(project_id)[:64], spend_counters.c.resource == resource.value,
                    spend_counters.c.period == period)

    def _ensure(self, project_id: str, resource: Resource, period: str) -> None:
        with self.engine.connect() as conn:
            if conn.execute(select(spend_counters.c.used).where(self._key(project_id, resource, period))).first():
                return
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(spend_counters).values(project_id=str(project_id)[:64], resource=resource.value,
                                                  period=period, used=0.0))
        except IntegrityError:  # another process created it first
            pass

    def used(self, project_id: str, resource: Resource, period: str = ALL_TIME) -> float:
        with self.engine.connect() as conn:
            value = conn.execute(select(spend_counters.c.used).where(self._key(project_id, resource, period))).scalar()
        return float(value or 0.0)

    def add(self, project_id: str, resource: Resource, amount: float, period: str = ALL_TIME) -> None:
        if amount == 0:
            return
        change = (update(spend_counters).where(self._key(project_id, resource, period))
                  .values(used=spend_counters.c.used + float(amount)))
        with self.engine.begin() as conn:  # the counter exists but for a project's first count of a period
            if conn.execute(change).rowcount:
                return
        self._ensure(project_id, resource, period)
        with self.engine.begin() as conn:
            conn.execute(change)

    def reserve(self, project_id: str, resource: Resource, amount: float, cap: float,
                period: str = ALL_TIME) -> bool:
        """Add `amount` if the counter stays within `cap` (cap <= 0: no cap); False, and nothing added, if not."""
        if cap <= 0:
            self.add(project_id, resource, amount, period)
            return True
        self._ensure(project_id, resource, period)
        with self.engine.begin() as conn:
            return self._take_capped(conn, project_id, resource, float(amount), float(cap), period)

    def reserve_units(self, project_id: str, resource: Resource, n: int, cap: float, period: str = ALL_TIME) -> int:
        """Take up to `n` single units within `cap` in one transaction; how many were taken (cap <= 0: all n)."""
        if n <= 0:
            return 0
        if cap <= 0:
            self.add(project_id, resource, float(n), period)
            return n
        self._ensure(project_id, resource, period)
        with self.engine.begin() as conn:
            for k in range(n):
                if not self._take_capped(conn, project_id, resource, 1.0, float(cap), period):
                    return k
        return n

    def _take_capped(self, conn: Connection, project_id: str, resource: Resource, amount: float, cap: float,
                     period: str) -> bool:
        done = conn.execute(update(spend_counters).where(self._key(project_id, resource, period),
                                                         spend_counters.c.used + amount <= cap + 1e-12,
                                                         spend_counters.c.used < cap)
                            .values(used=spend_counters.c.used + amount))
        return done.rowcount == 1

    def reserve_share(self, project_id: str, resource: Resource, share: float, of: Resource = Resource.TASKS
                      ) -> bool:
        """Take one slot if, before it, the counter is under `share` of `of` (a running share: one task may be
        reviewed in a project's first single-task request). share >= 1: always."""
        return self.reserve_shares(project_id, resource, share, 1, of) == 1

    def reserve_shares(self, project_id: str, resource: Resource, share: float, n: int,
                       of: Resource = Resource.TASKS) -> int:
        """`reserve_share` up to `n` times in one transaction (one commit, not n); how many slots were taken."""
        if n <= 0 or share <= 0:
            return 0
        if share >= 1.0:
            self.add(project_id, resource, float(n))
            return n
        self._ensure(project_id, resource, ALL_TIME)
        total = select(spend_counters.c.used).where(self._key(project_id, of, ALL_TIME)).scalar_subquery()
        with self.engine.begin() as conn:
            for k in range(n):
                done = conn.execute(update(spend_counters).where(self._key(project_id, resource, ALL_TIME),
                                                                 spend_counters.c.used < float(share) * total)
                                    .values(used=spend_counters.c.used + 1.0))
                if done.rowcount != 1:
                    return k
        return n

    def totals(self, project_id: str) -> dict[str, float]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(spend_counters.c.resource, spend_counters.c.used).where(
                spend_counters.c.project_id == str(project_id)[:64], spend_counters.c.period == ALL_TIME)).all()
        return {r: float(u) for r, u in rows}


class DurableBudget:
    """One project's LLM budget on `Spend`: the interface the Reviewer calls, per HTTP attempt.

    A call reserves one call slot and the mean cost of the calls so far (so the USD cap is kept within the spread
    of one call's cost), both atomically; the actual cost settles the difference when the answer comes back.
    """

    def __init__(self, ledger: Spend, project_id: str, max_calls: int, max_usd: float):
        self.ledger = ledger
        self.project_id = project_id
        self.max_calls = max(int(max_calls), 0)
        self.max_usd = max(float(max_usd), 0.0)
        self._reserved = threading.local()

    def _estimate(self) -> float:
        t = self.ledger.totals(self.project_id)
        calls = t.get(Resource.LLM_CALLS.value, 0.0)
        return t.get(Resource.LLM_USD.value, 0.0) / calls if calls else 0.0

    def can_spend(self) -> bool:
        t = self.ledger.totals(self.project_id)
        if self.max_calls and t.get(Resource.LLM_CALLS.value, 0.0) >= self.max_calls:
            return False
        return not (self.max_usd and t.get(Resource.LLM_USD.value, 0.0) >= self.max_usd)

    def try_acquire(self) -> bool:
        est = self._estimate() if self.max_usd else 0.0
        pid = self.project_id
        if self.max_usd and not self.ledger.reserve(pid, Resource.LLM_USD, max(est, 1e-12), self.max_usd):
            self.ledger.add(pid, Resource.LLM_DENIED, 1)
            return False
        if not self.ledger.reserve(pid, Resource.LLM_CALLS, 1, self.max_calls):
            if self.max_usd:
                self.ledger.add(pid, Resource.LLM_USD, -max(est, 1e-12))
            self.ledger.add(pid, Resource.LLM_DENIED, 1)
            return False
        self._reserved.usd = max(est, 1e-12) if self.max_usd else 0.0
        return True

    def record(self, model: str, prompt_tokens: int, completion_tokens: int, cost: Cost) -> None:
        pid = self.project_id
        reserved = getattr(self._reserved, "usd", 0.0)
        self._reserved.usd = 0.0
        self.ledger.add(pid, Resource.LLM_USD, cost.usd - reserved)
        self.ledger.add(pid, Resource.LLM_PROMPT, prompt_tokens)
        self.ledger.add(pid, Resource.LLM_COMPLETION, completion_tokens)
        if not cost.priced:
            self.ledger.add(pid, Resource.LLM_UNPRICED, 1)

    def totals(self) -> BudgetTotals:
        t = self.ledger.totals(self.project_id)
        return BudgetTotals(calls=int(t.get(Resource.LLM_CALLS.value, 0)),
                            prompt_tokens=int(t.get(Resource.LLM_PROMPT.value, 0)),
                            completion_tokens=int(t.get(Resource.LLM_COMPLETION.value, 0)),
                            usd=max(t.get(Resource.LLM_USD.value, 0.0), 0.0),
                            denied=int(t.get(Resource.LLM_DENIED.value, 0)),
                            unpriced_calls=int(t.get(Resource.LLM_UNPRICED.value, 0)), unpriced_models=(),
                            max_calls=self.max_calls, max_usd=self.max_usd)


class DurableBudgets:
    """`Budgets`' interface (for_project, totals) over the database."""

    def __init__(self, engine: Engine, max_calls: int = 0, max_usd: float = 0.0):
        self.ledger = Spend(engine)
        self.max_calls = max(int(max_calls), 0)
        self.max_usd = max(float(max_usd), 0.0)

    def for_project(self, project_id: str | int | None) -> DurableBudget:
        return DurableBudget(self.ledger, "" if project_id is None else str(project_id), self.max_calls,
                             self.max_usd)

    def totals(self) -> dict[str, BudgetTotals]:
        with self.ledger.engine.connect() as conn:
            pids = conn.execute(select(spend_counters.c.project_id).distinct()).scalars().all()
        return {p: self.for_project(p).totals() for p in pids}
