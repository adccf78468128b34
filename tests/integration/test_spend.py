"""Budgets are counters in the database: exact across processes, gunicorn workers and restarts, every HTTP attempt
counted. Real SQLite and PostgreSQL, real processes, a real OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from backend.decision.budget import Cost
from backend.llm import Reviewer, ReviewItem, forget_endpoint_capabilities
from backend.store import make_engine
from backend.store.spend import DurableBudgets, Resource, Spend
from tests.conftest import SENTIMENT_XML
from tests.llm_server import FakeLLM, answer, error, serving

CLI = str(Path(sys.executable).with_name("autoannotator"))


def _grab(url: str, n: int, cap: int, out: mp.Queue) -> None:
    engine = make_engine(url)
    ledger = Spend(engine)
    out.put(sum(ledger.reserve("p", Resource.LLM_CALLS, 1, cap) for _ in range(n)))
    engine.dispose()


def test_a_cap_is_exact_across_processes(database_url):
    make_engine(database_url).dispose()  # tables first, so the processes race on the counter only
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_grab, args=(database_url, 40, 25, out)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    taken = [out.get(timeout=5) for _ in procs]
    assert sum(taken) == 25
    assert Spend(make_engine(database_url)).used("p", Resource.LLM_CALLS) == 25


def test_running_share_lets_one_task_in_and_holds_the_share(database_url):
    ledger = Spend(make_engine(database_url))
    got = []
    for _ in range(40):  # single-task requests, as Label Studio sends when an annotator opens a task
        ledger.add("p", Resource.TASKS, 1)
        got.append(ledger.reserve_share("p", Resource.REVIEWS, 0.25))
    assert got[0]  # the first task of a project can be reviewed
    assert sum(got) == 10  # 25 % of 40, to the task
    assert not ledger.reserve_share("p", Resource.REVIEWS, 0.0)
    assert ledger.reserve_share("q", Resource.REVIEWS, 1.0)  # 1: no cap


def _grab_shares(url: str, rounds: int, out: mp.Queue) -> None:
    engine = make_engine(url)
    ledger = Spend(engine)
    taken = 0
    for _ in range(rounds):  # a 16-task request, a quarter reviewable, taken as one block
        ledger.add("p", Resource.TASKS, 16)
        taken += ledger.reserve_shares("p", Resource.REVIEWS, 0.25, 16)
    out.put(taken)
    engine.dispose()


def test_a_block_of_slots_is_what_one_at_a_time_would_take(database_url):
    ledger = Spend(make_engine(database_url))
    ledger.add("a", Resource.TASKS, 10)
    ledger.add("b", Resource.TASKS, 10)
    one_by_one = sum(ledger.reserve_share("a", Resource.REVIEWS, 0.25) for _ in range(8))
    assert ledger.reserve_shares("b", Resource.REVIEWS, 0.25, 8) == one_by_one == 3
    assert ledger.used("b", Resource.REVIEWS) == 3
    assert ledger.reserve_units("b", Resource.HUMAN, 5, cap=2, period="2026-01-01") == 2
    assert ledger.reserve_units("b", Resource.HUMAN, 5, cap=2, period="2026-01-01") == 0
    assert ledger.used("b", Resource.HUMAN, "2026-01-01") == 2
    assert ledger.reserve_shares("b", Resource.REVIEWS, 0.0, 5) == 0


def test_blocks_of_slots_hold_the_share_across_processes(database_url):
    make_engine(database_url).dispose()
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_grab_shares, args=(database_url, 20, out)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    taken = sum(out.get(timeout=5) for _ in procs)
    assert taken == 0.25 * 3 * 20 * 16  # never above the share, and nothing lost to the race
    assert Spend(make_engine(database_url)).used("p", Resource.REVIEWS) == taken


def test_every_http_attempt_counts_and_a_denied_call_is_never_sent(database_url):
    forget_endpoint_capabilities()
    script = {"flaky": [error(429, "slow down"), error(500, "boom"), answer('{"label": "Positive"}')]}
    with serving(FakeLLM(script=script, default=answer('{"label": "Negative"}'))) as fake:
        engine = make_engine(database_url)
        cfg = {"llm_model": "fake-model", "openai_base_url": fake.base_url, "openai_api_key": "x",
               "llm_backoff_seconds": 0.01, "llm_max_retries": 3, "llm_budget_calls": 4}
        with Reviewer(cfg, engine=engine) as reviewer:
            [r] = reviewer.review([ReviewItem("flaky", ["Positive", "Negative"])], "p")
            assert r.status == "valid" and r.attempts == 3 and fake.calls() == 3
            assert reviewer.totals("p").calls == 3  # the 429 and the 500 were paid for too
            a, b = reviewer.review([ReviewItem("one", ["Positive", "Negative"]),
                                    ReviewItem("two", ["Positive", "Negative"])], "p")
            assert sorted([a.status, b.status]) == ["over_budget", "valid"] and fake.calls() == 4
        # A new process (a restart) reads the same counters: nothing more is sent.
        with Reviewer(cfg, engine=make_engine(database_url)) as again:
            [c] = again.review([ReviewItem("three", ["Positive", "Negative"])], "p")
            assert c.status == "over_budget" and fake.calls() == 4
            assert again.totals("p").calls == 4 and again.totals("p").denied >= 2


def test_usd_cap_reserves_the_mean_call_before_sending(database_url):
    book = DurableBudgets(make_engine(database_url), max_calls=0, max_usd=0.01)
    budget = book.for_project("p")
    sent = 0
    while budget.try_acquire():
        budget.record("m", 100, 10, Cost(0.003, True))
        sent += 1
        assert sent < 10
    assert sent == 3  # 0.009 spent; a fourth call at the mean (0.003) would pass 0.01
    assert budget.totals().usd == pytest.approx(0.009)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(env: dict[str, str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen([CLI, "serve", "--workers", "2", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                return proc
        except requests.RequestException:
            time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"server did not start: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_two_gunicorn_workers_and_a_restart_send_exactly_the_budget(session_settings, default_bundle, tmp_path):
    """LLM_BUDGET_CALLS=10 with 2 workers, concurrent /predict calls and some 429s (retries count): the LLM
    receives exactly 10 requests, and none after a restart; /llm/usage agrees from either worker."""
    forget_endpoint_capabilities()
    script = {f"tweet number {i} is hard to call": [error(429, "slow down"), answer('{"label": "Neutral"}')]
              for i in range(0, 60, 7)}
    with serving(FakeLLM(script=script, default=answer('{"label": "Positive"}'))) as fake:
        settings = session_settings.with_(database_url=f"sqlite:///{tmp_path}/db.sqlite",
                                          llm_model="fake-model", openai_base_url=fake.base_url, openai_api_key="x",
                                          llm_budget_calls=10, review_confidence_threshold=1.0,
                                          llm_backoff_seconds=0.01, bootstrap_default_bundle=False)
        env = {**os.environ, **settings.to_env(), "HF_HUB_OFFLINE": "1"}
        port = _free_port()
        url = f"http://127.0.0.1:{port}"

        def predict(i: int) -> int:
            body = {"tasks": [{"id": i * 10 + k, "data": {"text": f"tweet number {i * 10 + k} is hard to call"}}
                              for k in range(3)], "label_config": SENTIMENT_XML, "project": "7.1"}
            return requests.post(f"{url}/predict", json=body, timeout=120).status_code

        proc = _serve(env, port)
        try:
            with ThreadPoolExecutor(8) as pool:
                assert set(pool.map(predict, range(20))) == {200}
            assert fake.calls() == 10
            usage = {json.dumps(requests.get(f"{url}/llm/usage?project=7", timeout=10).json()["calls"])
                     for _ in range(6)}
            assert usage == {"10"}
        finally:
            _stop(proc)
        proc = _serve(env, port)
        try:
            with ThreadPoolExecutor(4) as pool:
                assert set(pool.map(predict, range(20, 30))) == {200}
            assert fake.calls() == 10
            assert requests.get(f"{url}/llm/usage?project=7", timeout=10).json()["denied"] > 0
        finally:
            _stop(proc)
