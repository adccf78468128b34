"""The review cache: in-memory LRU, and the SQL table on SQLite and PostgreSQL shared across reviewers."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, inspect

from backend.llm import CachedAnswer, LRUCache, Reviewer, ReviewItem, SqlCache, cache_key, forget_endpoint_capabilities
from tests.llm_server import FakeLLM, answer, serving

CHOICES = ("Positive", "Negative", "Neutral")


@pytest.fixture
def engine(database_url):
    eng = create_engine(database_url)
    yield eng
    eng.dispose()


def test_key_covers_the_question_and_who_answers_it():
    base = cache_key("t", CHOICES, "", "v1", "m")
    assert base == cache_key("t", CHOICES, "", "v1", "m")
    others = [cache_key("u", CHOICES, "", "v1", "m"), cache_key("t", CHOICES[::-1], "", "v1", "m"),
              cache_key("t", CHOICES, "g", "v1", "m"), cache_key("t", CHOICES, "", "v2", "m"),
              cache_key("t", CHOICES, "", "v1", "n")]
    assert base not in others and len(set(others)) == len(others)


def test_lru_evicts_the_least_recently_used():
    lru = LRUCache(2)
    a, b, c = (CachedAnswer("valid", x, x) for x in "abc")
    lru.put("a", a)
    lru.put("b", b)
    assert lru.get("a") == a  # a is now the most recent
    lru.put("c", c)
    assert (lru.get("a"), lru.get("b"), lru.get("c"), len(lru)) == (a, None, c, 2)
    off = LRUCache(0)
    off.put("a", a)
    assert off.get("a") is None


def test_sql_cache_roundtrip_and_first_writer_wins(engine):
    cache = SqlCache(engine, "m", "v1")
    assert "llm_review_cache" in inspect(engine).get_table_names()
    assert cache.get("k") is None
    cache.put("k", CachedAnswer("valid", "Positive", '{"label": "Positive"}', 12, 3))
    cache.put("k", CachedAnswer("abstain", None, "abstain"))  # same key again: no error, first answer kept
    assert cache.get("k") == CachedAnswer("valid", "Positive", '{"label": "Positive"}', 12, 3)
    cache.put("a", CachedAnswer("abstain", None, "abstain"))
    assert SqlCache(engine).get("a") == CachedAnswer("abstain", None, "abstain")  # idempotent table creation


def test_sql_cache_is_shared_by_reviewers(engine):
    """A second reviewer (another worker, or after a restart) does not pay for a question already answered."""
    forget_endpoint_capabilities()
    with serving(FakeLLM(script={"good film": [answer("Positive")], "meh": [answer("abstain")]})) as fake:
        config = {"openai_base_url": fake.base_url, "llm_model": "m"}
        items = [ReviewItem("good film", CHOICES), ReviewItem("meh", CHOICES)]
        with Reviewer(config, engine=engine) as first:
            assert [r.status for r in first.review(items)] == ["valid", "abstain"]
        with Reviewer(config, engine=engine) as second:
            again = second.review(items)
        assert fake.calls() == 2
    assert [(r.status, r.verdict, r.raw) for r in again] == [("cached", "Positive", "Positive"),
                                                              ("cached", None, "abstain")]
    assert [r.route().name for r in again] == ["llm", "human"]
