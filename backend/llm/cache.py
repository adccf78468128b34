"""Reviewed answers, so the same question is never paid for twice.

The key is (text, choices in order, guideline, PROMPT_VERSION, model): anything that changes the question or who
answers it. Few-shot examples are deliberately *not* in the key: they grow with every accepted correction and would
make every key new; a change of prompt wording is covered by PROMPT_VERSION.

Only decisive answers are cached (a valid verdict or an abstention). Errors, timeouts and invalid answers are not:
the next try may well succeed, and a cached failure would pin the sample on humans forever.

Two tiers: an in-process LRU, and optionally a SQL table (its own MetaData, created on an Engine the caller passes)
shared by the workers of one deployment and kept across restarts.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from backend.store import ensure_tables


@dataclass(frozen=True)
class CachedAnswer:
    status: str  # "valid" | "abstain"
    verdict: str | None
    raw: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


def cache_key(text: str, choices: Sequence[str], guideline: str, prompt_version: str, model: str) -> str:
    payload = json.dumps([text, list(choices), guideline, prompt_version, model], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class ReviewCache(Protocol):
    def get(self, key: str) -> CachedAnswer | None: ...

    def put(self, key: str, answer: CachedAnswer) -> None: ...


class LRUCache:
    """Thread-safe in-memory LRU; size 0 disables it."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = max(int(size), 0)
        self._data: OrderedDict[str, CachedAnswer] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> CachedAnswer | None:
        with self._lock:
            answer = self._data.get(key)
            if answer is not None:
                self._data.move_to_end(key)
            return answer

    def put(self, key: str, answer: CachedAnswer) -> None:
        if self.size == 0:
            return
        with self._lock:
            self._data[key] = answer
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


metadata = MetaData()

review_cache_table = Table(
    "llm_review_cache",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("model", String(200), nullable=False),
    Column("prompt_version", String(50), nullable=False),
    Column("status", String(16), nullable=False),
    Column("verdict", Text, nullable=True),
    Column("raw", Text, nullable=False),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
)


def create_cache_table(engine: Engine) -> None:
    """Create the cache table if missing (idempotent; touches no other table)."""
    ensure_tables(engine, [review_cache_table])


class SqlCache:
    """The cache table on `engine`; the first answer stored for a key wins (answers for a key are equivalent)."""

    def __init__(self, engine: Engine, model: str = "", prompt_version: str = "") -> None:
        self.engine = engine
        self.model = model
        self.prompt_version = prompt_version
        create_cache_table(engine)

    def get(self, key: str) -> CachedAnswer | None:
        t = review_cache_table
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.c.status, t.c.verdict, t.c.raw, t.c.prompt_tokens, t.c.completion_tokens).where(t.c.key == key)
            ).first()
        if row is None:
            return None
        return CachedAnswer(row.status, row.verdict, row.raw, row.prompt_tokens, row.completion_tokens)

    def put(self, key: str, answer: CachedAnswer) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(review_cache_table).values(
                    key=key, model=self.model, prompt_version=self.prompt_version, status=answer.status,
                    verdict=answer.verdict, raw=answer.raw, prompt_tokens=answer.prompt_tokens,
                    completion_tokens=answer.completion_tokens, created_at=time.time(),
                ))
        except IntegrityError:
            pass  # another worker stored the same key first


class TieredCache:
    """LRU in front of an optional SQL cache; a SQL hit is promoted into the LRU."""

    def __init__(self, lru: LRUCache, sql: SqlCache | None = None) -> None:
        self.lru = lru
        self.sql = sql

    def get(self, key: str) -> CachedAnswer | None:
        answer = self.lru.get(key)
        if answer is None and self.sql is not None:
            answer = self.sql.get(key)
            if answer is not None:
                self.lru.put(key, answer)
        return answer

    def put(self, key: str, answer: CachedAnswer) -> None:
        self.lru.put(key, answer)
        if self.sql is not None:
            self.sql.put(key, answer)
