"""Prices, costs and per-project LLM budgets (pure)."""

from __future__ import annotations

import threading

import pytest

from backend.decision.budget import DEFAULT_PRICES, Budget, Budgets, Cost, Price, PriceTable, parse_prices


def test_cost_of_a_usage_record():
    table = PriceTable({"my-model": Price(1.0, 2.0)})
    assert table.cost("my-model", 1_000_000, 500_000) == Cost(2.0, True)
    assert table.cost("gpt-4o-mini", 1000, 100).usd == pytest.approx((1000 * 0.15 + 100 * 0.60) / 1e6)


def test_dated_variant_takes_the_longest_known_prefix():
    table = PriceTable()
    assert table.price("gpt-4o-mini-2024-07-18") == DEFAULT_PRICES["gpt-4o-mini"]
    assert table.price("gpt-4o-2024-08-06") == DEFAULT_PRICES["gpt-4o"]


def test_unknown_model_costs_zero_and_is_reported():
    table = PriceTable()
    assert table.cost("SmolLM2-135M", 100, 10) == Cost(0.0, False)
    budget = Budget()
    assert budget.try_acquire()
    budget.record("SmolLM2-135M", 100, 10, table.cost("SmolLM2-135M", 100, 10))
    t = budget.totals()
    assert (t.unpriced_calls, t.unpriced_models) == (1, ("SmolLM2-135M",))
    assert (t.prompt_tokens, t.completion_tokens, t.usd) == (100, 10, 0.0)


def test_parse_prices():
    assert parse_prices("") == {}
    assert parse_prices('{"a": [1, 2], "b": {"input": 0.5, "output": 1}}') == {"a": Price(1, 2), "b": Price(0.5, 1)}
    assert PriceTable.from_text('{"gpt-4o": [9, 9]}').price("gpt-4o") == Price(9, 9)
    for bad in ("[1]", '{"a": [1]}', '{"a": [-1, 2]}', '{"a": "cheap"}'):
        with pytest.raises(ValueError):
            parse_prices(bad)


def test_call_cap():
    budget = Budget(max_calls=2)
    assert budget.try_acquire() and budget.try_acquire()
    assert not budget.can_spend() and not budget.try_acquire()
    t = budget.totals()
    assert (t.calls, t.denied, t.max_calls) == (2, 1, 2)


def test_usd_cap_stops_after_the_money_is_spent():
    budget = Budget(max_usd=0.01)
    assert budget.try_acquire()
    budget.record("m", 0, 0, Cost(0.006, True))
    assert budget.try_acquire()
    budget.record("m", 0, 0, Cost(0.006, True))
    assert not budget.try_acquire()
    assert budget.totals().as_dict()["usd"] == pytest.approx(0.012)


def test_zero_caps_are_unlimited_and_seeds_count():
    assert all(Budget().try_acquire() for _ in range(1000))
    assert not Budget(max_calls=5, spent_calls=5).can_spend()


def test_acquire_is_thread_safe():
    budget = Budget(max_calls=500)
    granted: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(100):
            ok = budget.try_acquire()
            with lock:
                granted.append(ok)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 500 and budget.totals().denied == 300


def test_projects_have_separate_budgets():
    budgets = Budgets(max_calls=1)
    assert budgets.for_project(1).try_acquire()
    assert not budgets.for_project("1").try_acquire()  # same project, id as str or int
    assert budgets.for_project(2).try_acquire()
    assert set(budgets.totals()) == {"1", "2"}
