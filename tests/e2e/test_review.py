"""Hard samples in a real Label Studio 1.23.2: easy tasks auto-labelled, LLM-settled ones carrying the LLM's label,
the rest flagged for humans — filterable in the Data Manager and served first under "Uncertainty sampling".

The LLM is the scripted OpenAI-compatible server of tests/llm_server.py, started here, so its answers are known: a
valid label ("Neutral") for every other text, an abstention for the rest. Which tasks are hard is the backend's
call (REVIEW_CONFIDENCE_THRESHOLD); the tests read it from the provenance and check that Label Studio shows exactly
that. Two paths: `autoannotator prelabel` (inline review, resumable) and the Data Manager's "Retrieve predictions"
against a backend in REVIEW_MODE=async that pushes its review back through the SDK.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from backend.store import make_engine
from tests.llm_server import FakeLLM, answer, serving
from tests.trust_helpers import seed_trust

from .conftest import AUTOANNOTATOR, LABEL_CONFIG, LS_TOKEN, Backend, LabelStudio, extra_backend
from .test_label_studio import ALL_ITEMS, RETRIEVE, sample_texts

pytestmark = pytest.mark.e2e

THRESHOLD = 0.97
ODD_TEXTS = ["meh", "the thing happened today", "ok I guess, whatever", "not sure what to think about tomorrow"]
TEXTS = sample_texts(20) + ODD_TEXTS
LLM_LABEL = "Neutral"
SETTLED = set(TEXTS[::2])  # the LLM answers these with a valid label; the others it abstains on
HUMAN_FILTER = {"filters": {"conjunction": "and", "items": [
    {"filter": "filter:tasks:data.autoannotator_route", "operator": "equal", "type": "String", "value": "human"}]}}


@dataclass
class ReviewBackend:
    url: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLLM]:
    script = {t: [answer(json.dumps({"label": LLM_LABEL}))] for t in SETTLED}
    with serving(FakeLLM(script=script, default=answer('{"label": "abstain"}'))) as fake:
        yield fake


@pytest.fixture(scope="module")
def review_backend(label_studio: LabelStudio, backend: Backend, e2e_dir, llm: FakeLLM) -> Iterator[ReviewBackend]:
    """A second backend serving the session's trained bundle, with the scripted LLM, in REVIEW_MODE=async and
    allowed to write to Label Studio (the shared `backend` fixture stays as the other tests expect it)."""
    with extra_backend(e2e_dir, "review-backend", backend.data_dir / "models", LLM_MODEL="scripted",
                       OPENAI_BASE_URL=llm.base_url, OPENAI_API_KEY="test", LLM_AUDIT_SHARE="0",
                       REVIEW_CONFIDENCE_THRESHOLD=str(THRESHOLD), LLM_TIMEOUT_SECONDS="10", REVIEW_MODE="async",
                       LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=LS_TOKEN,
                       REVIEW_PUSH_RETRY_SECONDS="2") as (url, env):
        yield ReviewBackend(url, env)


def new_project(ls: LabelStudio, title: str, rb: ReviewBackend) -> int:
    pid = ls.post("/api/projects/", {"title": title, "label_config": LABEL_CONFIG.read_text()})["id"]
    # People have checked this LLM on the project already (the trust ledger): it is trusted wherever it answers.
    engine = make_engine(f"sqlite:///{rb.env['DATA_DIR']}/autoannotator.db")
    seed_trust(engine, str(pid), "scripted", n=300)
    engine.dispose()
    ls.post(f"/api/projects/{pid}/import", [{"text": t, "source": "e2e"} for t in TEXTS])
    assert len(ls.get("/api/tasks/", params={"project": pid, "page_size": 1000})["tasks"]) == len(TEXTS)
    return pid


def tasks_by_id(ls: LabelStudio, pid: int, query: dict | None = None) -> dict[int, dict[str, Any]]:
    params: dict[str, Any] = {"project": pid, "page_size": 1000, "fields": "all"}
    if query:
        params["query"] = json.dumps(query)
    return {t["id"]: t for t in ls.get("/api/tasks/", params=params)["tasks"]}


def provenance(rb: ReviewBackend, pid: int, tid: int) -> dict[str, Any]:
    r = requests.get(f"{rb.url}/tasks/{tid}/provenance", params={"project": pid}, timeout=10)
    assert r.ok, r.text
    return r.json()["records"][0]


def run_prelabel(rb: ReviewBackend, pid: int, *extra: str) -> dict[str, Any]:
    out = subprocess.run([str(AUTOANNOTATOR), "prelabel", "--project", str(pid), "--no-progress", *extra],
                         env=rb.env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"prelabel failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def check_routes(ls: LabelStudio, rb: ReviewBackend, pid: int, flag_auto: bool) -> dict[str, set[int]]:
    """Label Studio shows what the backend decided: label, score and flag per route. Returns ids per route."""
    by_route: dict[str, set[int]] = {"auto": set(), "llm": set(), "human": set()}
    for tid, task in tasks_by_id(ls, pid).items():
        rec = provenance(rb, pid, tid)
        text, flag = task["data"]["text"], task["data"].get("autoannotator_route")
        (pred,) = task["predictions"]  # exactly one prediction per task
        label = pred["result"][0]["value"]["choices"]
        assert pred["model_version"] == rec["model_version"]
        assert task["data"]["source"] == "e2e"  # the rest of task.data is kept
        route = rec["route"]
        by_route[route].add(tid)
        if route == "auto":
            assert label == rec["ensemble_labels"] and pred["score"] >= THRESHOLD - 1e-6, (text, rec)
            assert flag == ("auto" if flag_auto else None)
        elif route == "llm":
            assert text in SETTLED and label == [LLM_LABEL] and pred["score"] >= 0.5, (text, rec)
            assert flag == "llm" and rec["llm"]["verdict"] == LLM_LABEL
        else:
            assert route == "human", rec
            assert text not in SETTLED and pred["score"] < 0.5 and label == rec["ensemble_labels"], (text, rec)
            assert flag == "human" and rec["llm"]["status"] in ("abstain", "cached")
    assert all(by_route.values()), f"each route needs a task for this test to mean something: {by_route}"
    return by_route


def test_prelabel_a_project_resumably_with_routes_flags_and_a_cost_report(label_studio: LabelStudio,
                                                                         review_backend: ReviewBackend) -> None:
    ls = label_studio
    pid = new_project(ls, "e2e review prelabel", review_backend)
    first = run_prelabel(review_backend, pid, "--chunk", "3", "--limit", "7")  # an interrupted run, in effect
    assert first["prelabelled"] == 7 and first["skipped"] == 0
    assert len(ls.get("/api/predictions/", params={"project": pid})) == 7
    second = run_prelabel(review_backend, pid, "--chunk", "5", "--set-sampling")
    assert second["skipped"] == 7 and second["prelabelled"] == len(TEXTS) - 7
    assert second["aligned"] and second["sampling"] == "Uncertainty sampling"
    third = run_prelabel(review_backend, pid)
    assert third["prelabelled"] == 0 and third["skipped"] == len(TEXTS)
    assert len(ls.get("/api/predictions/", params={"project": pid})) == len(TEXTS)  # no duplicates
    # the cost report: tasks per route, LLM calls and tokens (the scripted server counts whitespace tokens)
    routes = {k: first["routes"].get(k, 0) + second["routes"].get(k, 0) for k in ("auto", "llm", "human")}
    assert sum(routes.values()) == len(TEXTS)
    assert first["llm_calls"] + second["llm_calls"] >= 1 and second["prompt_tokens"] + first["prompt_tokens"] > 0

    by_route = check_routes(ls, review_backend, pid, flag_auto=True)
    assert {k: len(v) for k, v in by_route.items()} == routes
    project = ls.get(f"/api/projects/{pid}")
    assert project["model_version"] == second["model_version"] and project["sampling"] == "Uncertainty sampling"
    # the Data Manager filter on the flag returns exactly the human-routed tasks
    assert set(tasks_by_id(ls, pid, HUMAN_FILTER)) == by_route["human"]
    # and uncertainty sampling serves a human-flagged task first
    nxt = ls.get(f"/api/projects/{pid}/next")
    assert nxt["id"] in by_route["human"], (nxt["id"], by_route)
    lowest = min(tasks_by_id(ls, pid).values(), key=lambda t: t["predictions"][0]["score"])
    assert nxt["id"] == lowest["id"]


def test_retrieve_predictions_with_async_review_pushes_the_llm_labels_and_flags(
        label_studio: LabelStudio, review_backend: ReviewBackend) -> None:
    ls = label_studio
    pid = new_project(ls, "e2e review async", review_backend)
    ls.post("/api/ml/", {"url": review_backend.url, "project": pid, "title": "autoannotator-async"})
    t0 = time.monotonic()
    ls.post(RETRIEVE.format(pid=pid), ALL_ITEMS)
    answered_s = time.monotonic() - t0
    assert len(ls.get("/api/predictions/", params={"project": pid})) == len(TEXTS)

    def reviewed() -> bool:
        jobs = requests.get(f"{review_backend.url}/review/jobs", params={"project": pid}, timeout=10).json()["jobs"]
        return bool(jobs) and all(j["status"] == "done" for j in jobs)

    deadline = time.monotonic() + 60
    while not reviewed():
        assert time.monotonic() < deadline, "review jobs not done after 60 s"
        time.sleep(0.5)
    by_route = check_routes(ls, review_backend, pid, flag_auto=False)
    assert set(tasks_by_id(ls, pid, HUMAN_FILTER)) == by_route["human"]
    assert answered_s < 60, answered_s
