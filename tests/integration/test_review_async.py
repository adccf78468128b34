"""REVIEW_MODE=async: /predict answers at once with the ensemble's labels, the hard samples are reviewed in the
background (a thread here: no REDIS_URL) and pushed to Label Studio; nothing is lost when Label Studio is down."""

from __future__ import annotations

import time

import pytest

from backend.labelstudio.client import REASON_FIELD, ROUTE_FIELD, LabelStudioClient, route_of
from backend.review.jobs import push
from tests.integration.test_review_inline import EXPECTED_ROUTE, SCRIPT, body, make
from tests.llm_server import FakeLLM, answer, serving
from tests.ls_standin import StandInLS, standin


@pytest.fixture
def fake():
    from backend.llm import forget_endpoint_capabilities

    forget_endpoint_capabilities()
    with serving(FakeLLM(script={k: list(v) for k, v in SCRIPT.items()})) as server:
        yield server


def wait_for(cond, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def records(client, n):
    return [client.get(f"/tasks/{i}/provenance").json["records"][0] for i in range(1, n + 1)]


def test_predict_answers_before_the_review_and_the_review_settles_in_the_background(
        session_settings, default_bundle, tmp_path, fake):
    client, model = make(session_settings, tmp_path, fake, review_mode="async")
    texts = list(SCRIPT)
    r = client.post("/predict", json=body(texts, project="41.1"))
    assert r.status_code == 200
    # The LLM was not waited for: every task is still pending when /predict has answered (one scripted answer alone
    # takes 3 s). Not a wall-clock bound: on a loaded machine /predict itself can take seconds (CI, 2.8 s).
    for result, rec in zip(r.json["results"], records(client, len(texts)), strict=True):
        assert rec["route"] == "pending" and result["score"] < 0.5  # human-side score until settled
        assert result["result"][0]["value"]["choices"] == rec["ensemble_labels"]
    wait_for(lambda: all(j["status"] == "done" for j in model.review_jobs.list()) and model.review_jobs.list(),
             what="review jobs done")
    (job,) = model.review_jobs.list()
    assert job["pushed"] == "skipped"  # no LABEL_STUDIO_URL: nothing to push to, nothing pending
    for text, rec in zip(texts, records(client, len(texts)), strict=True):
        assert rec["route"] == EXPECTED_ROUTE[text], (text, rec)
        assert rec["llm"] is not None and "pending" not in rec["reason"]
        if rec["route"] == "llm":
            assert rec["labels"] == [rec["llm"]["verdict"]] and rec["score"] >= 0.5
        else:
            assert rec["labels"] == rec["ensemble_labels"] and rec["score"] < 0.5
    llm_rows = [r for r in model.intake.corrections.rows("41") if r["source"] == "llm"]
    assert sorted(r["choices"][0] for r in llm_rows) == ["Negative", "Positive"]
    assert client.get("/health").json["review"]["jobs"] == {"done": 1}
    assert client.get("/review/jobs?project=41").json["jobs"][0]["status"] == "done"


def test_results_are_pushed_to_label_studio_and_a_failed_push_is_kept_and_retried(
        session_settings, default_bundle, tmp_path):
    texts = ["what a great day at the beach", "hard to say really", "nothing special here"]
    script = {texts[0]: [answer('{"label": "Neutral"}')], texts[1]: [answer('{"label": "abstain"}')]}
    ls = StandInLS(down=True)
    for i, t in enumerate(texts, start=1):
        ls.add_task(i, {"text": t, "keep": i})
    with serving(FakeLLM(script=script)) as fake, standin(ls):
        client, model = make(session_settings, tmp_path, fake, review_mode="async", label_studio_url=ls.url,
                             label_studio_api_key="standin-token", review_push_retry_seconds=0.3)
        r = client.post("/predict", json=body(texts[:2], project="42.1"))
        version = r.json["results"][0]["model_version"]
        # Label Studio stores what /predict answered (as it does on "Retrieve predictions")
        for tid, pred in enumerate(r.json["results"], start=1):
            ls.predictions[tid] = ls.prediction({"task": tid, **pred}, tid)
        wait_for(lambda: [j["status"] for j in model.review_jobs.list()] == ["push_failed"], what="push_failed")
        rec = records(client, 2)
        assert rec[0]["route"] == "llm" and rec[1]["route"] == "human"  # reviewed and kept, though not pushed
        assert all(not x["llm"]["push"]["pushed"] and x["llm"]["push"]["error"] for x in rec)
        assert ls.tasks[1]["data"] == {"text": texts[0], "keep": 1}
        ls.down = False  # Label Studio is back: the review thread retries the push alone
        wait_for(lambda: [j["status"] for j in model.review_jobs.list()] == ["done"], what="push retried")
        assert fake.calls() == 2  # the review was not redone
        assert ls.tasks[1]["data"] == {"text": texts[0], "keep": 1, ROUTE_FIELD: "llm",
                                       REASON_FIELD: ls.tasks[1]["data"][REASON_FIELD]}
        assert ls.tasks[2]["data"][ROUTE_FIELD] == "human" and ls.tasks[2]["data"]["keep"] == 2
        assert ROUTE_FIELD not in ls.tasks[3]["data"]
        (p1,) = ls.task_predictions(1)  # updated in place: one prediction per task and version
        assert p1["result"][0]["value"]["choices"] == ["Neutral"] and p1["score"] >= 0.5
        assert p1["model_version"] == version
        (p2,) = ls.task_predictions(2)
        assert p2["score"] < 0.5
        assert all(x["llm"]["push"] == {"pushed": True, "error": None} for x in records(client, 2))
        (job,) = model.review_jobs.list()
        assert job["pushed"] == "yes" and job["push_attempts"] >= 1
        assert push(job["id"], model.settings, model.store) == "done"  # idempotent
        assert len(ls.task_predictions(1)) == 1


def test_a_task_label_studio_has_no_prediction_for_gets_a_new_one(session_settings, default_bundle, tmp_path):
    ls = StandInLS()
    ls.add_task(1, {"text": "what a great day at the beach"})
    script = {"what a great day at the beach": [answer('{"label": "Positive"}')]}
    with serving(FakeLLM(script=script)) as fake, standin(ls):
        client, model = make(session_settings, tmp_path, fake, review_mode="async", label_studio_url=ls.url,
                             label_studio_api_key="standin-token")
        client.post("/predict", json=body(["what a great day at the beach"], project="43.1"))
        wait_for(lambda: [j["status"] for j in model.review_jobs.list()] == ["done"], what="done")
        (p,) = ls.task_predictions(1)
        assert p["result"][0]["value"]["choices"] == ["Positive"] and p["result"][0]["from_name"] == "sentiment"
        assert ls.tasks[1]["data"][ROUTE_FIELD] == "llm"


def test_inline_mode_is_still_the_default(session_settings):
    assert session_settings.review_mode == "inline"


def test_client_needs_url_and_key_and_route_of_picks_the_most_careful_route(session_settings):
    assert LabelStudioClient.from_settings(session_settings) is None
    with pytest.raises(ValueError):
        LabelStudioClient("http://127.0.0.1:1", "")
    recs = [{"control": "a", "route": "auto", "reason": "sure"}, {"control": "b", "route": "human", "reason": "x"}]
    assert route_of(recs) == ("human", "b: x")
    assert route_of([{"control": "a", "route": "llm", "reason": "r"}]) == ("llm", "r")
    assert route_of([]) == ("auto", "")


def test_prelabel_without_label_studio_settings_says_what_is_missing(session_settings):
    from backend.commands.prelabel import prelabel

    with pytest.raises(SystemExit, match="LABEL_STUDIO_URL"):
        prelabel(session_settings, 1, progress=False)


def test_with_redis_the_review_runs_on_an_rq_worker(session_settings, default_bundle, tmp_path, fake):
    import os
    import subprocess

    from tests.integration.test_rq_learning import CLI, RedisServer, free_port

    redis = RedisServer(free_port())
    redis.start()
    try:
        redis_url = f"redis://127.0.0.1:{redis.port}/0"
        client, model = make(session_settings, tmp_path, fake, review_mode="async", redis_url=redis_url,
                             queue_name="aa-review-test", dispatch_seconds=0.2)
        texts = ["what a great day at the beach", "hard to say really"]
        client.post("/predict", json=body(texts, project="44.1"))
        wait_for(lambda: [j["status"] for j in model.review_jobs.list()] == ["queued"], what="sent to rq")
        env = {**os.environ, **model.settings.to_env(), "HF_HUB_OFFLINE": "1"}
        out = subprocess.run([CLI, "worker", "--burst"], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        (job,) = model.review_jobs.list()
        assert job["status"] == "done" and job["pushed"] == "skipped" and job["rq_job_id"].startswith("aa-review-")
        assert [r["route"] for r in records(client, 2)] == ["llm", "human"]
        assert fake.calls() == 2
    finally:
        redis.stop()
