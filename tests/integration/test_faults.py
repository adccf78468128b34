"""Faults an operator meets, each ending with nothing lost, no bad promotion and budgets exact:

- here: the database drops every connection (a PostgreSQL restart or failover); an LLM storm of 5xx, 429 and
  timeouts, inside the budget and past it; an rq worker killed in the middle of an LLM review;
- test_rq_learning.py: Redis down and back, a worker killed in the middle of a training stage;
- test_review_async.py: Label Studio down while reviews are pushed;
- test_hostile_input.py: a failure in the middle of applying a webhook;
- tests/e2e/test_prelabel_queue.py: a worker killed in the middle of a prelabel chunk, against Label Studio.
"""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import ROOT, SENTIMENT_XML
from tests.learning_helpers import annotation_event

ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture()
def pg_model(postgres_url, session_settings, default_bundle):
    from backend.http.app import create_app
    from model import AutoAnnotatorModel

    model = AutoAnnotatorModel(session_settings.with_(database_url=postgres_url), background=False)
    yield create_app(model.settings, model).test_client(), model, postgres_url.rsplit("/", 1)[1]
    model.store.engine.dispose()


def _drop_connections(db: str) -> int:
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        n = conn.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = :d "
                              "AND pid <> pg_backend_pid()"), {"d": db}).scalar()
    admin.dispose()
    return int(n)


def test_dropped_database_connections_lose_nothing(pg_model):
    client, model, db = pg_model
    assert client.post("/webhook", json=annotation_event(3, 1, "a good day", "Positive",
                                                         config=SENTIMENT_XML)).status_code == 200
    predict = {"tasks": [{"id": 2, "data": {"text": "fine"}}], "label_config": SENTIMENT_XML, "project": "3.1"}
    assert client.post("/predict", json=predict).status_code == 200
    assert _drop_connections(db) >= 1  # every pooled connection of the service is now dead
    r = client.post("/webhook", json=annotation_event(3, 4, "a bad day", "Negative", config=SENTIMENT_XML))
    assert r.status_code == 200 and r.json["corrections"] == 1  # the pool noticed and reconnected
    assert client.post("/predict", json=predict).status_code == 200
    assert sorted(row["task_id"] for row in model.intake.corrections.rows("3")) == [1, 4]
    assert client.get("/health").json["webhooks"]["events"] == {"applied": 2}


# -- LLM storms --------------------------------------------------------------------------------------------------
def test_an_llm_storm_leaves_every_task_on_a_safe_route_and_counts_every_attempt(session_settings, default_bundle,
                                                                                 tmp_path):
    """500s, 429s with Retry-After, 503s and timeouts for most texts at once, a few recovering on retry: /predict
    answers every task, a failed review leaves the ensemble's label with people, a recovered one the LLM's, and
    the budget counts every HTTP attempt, exactly what the server received, never past the cap."""
    from tests.integration.test_review_inline import body, make
    from tests.llm_server import FakeLLM, answer, error, serving

    down = [f"storm item {i}: the market fell again today" for i in range(10)]
    slow = [f"storm item {i}: waiting on the tram" for i in range(10, 14)]
    back = [f"storm item {i}: lovely sunny afternoon" for i in range(14, 20)]
    script = {t: [error(500), error(429, "slow down", retry_after=0.05), error(503)] for t in down}
    script |= {t: [answer('{"label": "Neutral"}', delay=3.0)] for t in slow}
    script |= {t: [error(500), answer('{"label": "Positive"}')] for t in back}
    texts = down + slow + back
    with serving(FakeLLM(script=script)) as fake:
        client, _ = make(session_settings, tmp_path, fake, llm_budget_calls=200, llm_concurrency=4)
        r = client.post("/predict", json=body(texts, project="31.1"))
        assert r.status_code == 200 and len(r.json["results"]) == len(texts)
        recs = [client.get(f"/tasks/{i}/provenance").json["records"][0] for i in range(1, len(texts) + 1)]
        for text, rec, result in zip(texts, recs, r.json["results"], strict=True):
            label = result["result"][0]["value"]["choices"]
            if text in back:
                assert rec["route"] == "llm" and label == ["Positive"], rec["reason"]
            else:
                assert rec["route"] == "human" and label == rec["ensemble_labels"], rec["reason"]
                assert rec["llm"]["status"] in ("error", "timeout")
        usage = client.get("/llm/usage?project=31").json
        assert usage["calls"] == fake.calls() <= 200  # every attempt paid for: retries, 429s and timeouts too
        assert usage["routes"] == {"human": len(down) + len(slow), "llm": len(back)}
        # The storm is over for new texts: they are reviewed as usual.
        fake.script["after the storm the sun came out"] = [answer('{"label": "Positive"}')]
        after = {"tasks": [{"id": 99, "data": {"text": "after the storm the sun came out"}}],
                 "label_config": SENTIMENT_XML, "project": "31.1"}
        assert client.post("/predict", json=after).status_code == 200
        assert client.get("/tasks/99/provenance").json["records"][0]["route"] == "llm"


def test_an_llm_storm_past_the_budget_sends_nothing_more(session_settings, default_bundle, tmp_path):
    """A storm of retries eats the call budget: what is left goes to people without a request, and across a
    restart (a new process on the same database) nothing more is sent."""
    from model import AutoAnnotatorModel
    from tests.integration.test_review_inline import body, make
    from tests.llm_server import FakeLLM, error, serving

    texts = [f"budget storm item {i} about the weather" for i in range(12)]
    with serving(FakeLLM(script={t: [error(500)] for t in texts})) as fake:
        client, model = make(session_settings, tmp_path, fake, llm_budget_calls=7)
        assert client.post("/predict", json=body(texts, project="31.1")).status_code == 200
        assert fake.calls() == 7 and client.get("/llm/usage?project=31").json["calls"] == 7
        again = AutoAnnotatorModel(model.settings, background=False)
        again.predict([{"id": 50, "data": {"text": "one more after the restart"}}], SENTIMENT_XML, project="31.1")
        assert fake.calls() == 7


# -- an rq worker killed in the middle of an LLM review -------------------------------------------------------------
def test_a_worker_killed_mid_review_loses_nothing_and_the_review_is_finished_by_another(session_settings,
                                                                                        default_bundle, tmp_path):
    """REVIEW_MODE=async with rq: SIGKILL to the worker (and its work horse) while the LLM is answering. The job is
    found stale, sent again, and a second worker settles every item; the calls the dead worker made are paid for."""
    import os

    from tests.integration.test_review_inline import body, make
    from tests.integration.test_rq_learning import RedisServer, Worker, free_port, wait_for
    from tests.llm_server import FakeLLM, answer, serving

    texts = [f"slow review item {i} about a long train ride" for i in range(6)]
    script = {t: [answer('{"label": "Neutral"}', delay=1.0)] for t in texts}
    redis = RedisServer(free_port())
    redis.start()
    try:
        with serving(FakeLLM(script=script)) as fake:
            client, model = make(session_settings, tmp_path, fake, review_mode="async", llm_timeout_seconds=5.0,
                                 redis_url=f"redis://127.0.0.1:{redis.port}/0", queue_name="aa-kill-review",
                                 dispatch_seconds=0.2, llm_batch_seconds=8.0, job_stale_seconds=2.0,
                                 llm_concurrency=2, llm_budget_calls=100)
            assert client.post("/predict", json=body(texts, project="43.1")).status_code == 200
            env = {**os.environ, **model.settings.to_env(), "HF_HUB_OFFLINE": "1"}
            first = Worker(env, tmp_path / "worker1.log")
            wait_for(lambda: fake.calls() >= 1, 60, "the first worker to ask the LLM")
            first.kill()
            (job,) = model.review_jobs.list()
            assert job["status"] == "running" and job["results"] is None  # nothing was settled
            wait_for(lambda: model.review_jobs.list()[0]["status"] == "queued", 60, "the job to be sent again")
            second = Worker(env, tmp_path / "worker2.log")
            try:
                wait_for(lambda: model.review_jobs.list()[0]["status"] == "done", 120, "the second worker")
            finally:
                second.stop()
            (job,) = model.review_jobs.list()
            assert job["attempts"] == 2
            recs = [client.get(f"/tasks/{i}/provenance").json["records"][0] for i in range(1, len(texts) + 1)]
            assert [r["route"] for r in recs] == ["llm"] * len(texts)  # none left pending, none lost
            usage = client.get("/llm/usage?project=43").json
            assert fake.calls() <= usage["calls"] <= 100  # what the dead worker sent is counted, never less
    finally:
        redis.stop()


# -- an rq job lost before it claimed its row ----------------------------------------------------------------------
def pause_before_claiming(job_id: int) -> None:
    """An rq function that is slow to reach its claim (a worker still importing torch)."""
    import time

    time.sleep(300)


def test_a_job_whose_rq_job_died_before_claiming_it_is_sent_again(session_settings, tmp_path):
    """The row is the job: a worker SIGKILLed between taking the rq job and claiming the row, Redis restarted with an
    empty memory, an rq job that fails before its first step — each leaves the row queued with an rq job that will
    never run it, and so does a worker killed between taking the rq job off the queue and starting it. The reaper
    sends it again, and gives up after JOB_MAX_ATTEMPTS rather than cycling."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    from backend.store import Store
    from finetune.jobs import TrainingJobs
    from tests.integration.test_rq_learning import RedisServer, free_port, wait_for

    class Pausing(TrainingJobs):
        rq_function = "tests.integration.test_faults.pause_before_claiming"

    class Broken(TrainingJobs):
        rq_function = "tests.integration.no_such_module.run"

    redis = RedisServer(free_port())
    redis.start()
    settings = session_settings.with_(database_url=f"sqlite:///{tmp_path}/db.sqlite", job_stale_seconds=1.0,
                                      redis_url=f"redis://127.0.0.1:{redis.port}/0", queue_name="aa-orphans")
    store = Store(settings.database_url)
    rq_cli = [str(Path(sys.executable).parent / "rq"), "worker", "-u", settings.redis_url, settings.queue_name]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        # 1. Taken by a worker that dies before the claim.
        jobs = Pausing(store, settings)
        job_id = jobs.request("orphan.1", "test")["id"]
        assert jobs.dispatch() == 1 and jobs.get(job_id)["status"] == "queued"
        assert jobs.reap() == 0  # waiting in the queue: nothing to do
        worker = subprocess.Popen(rq_cli, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        try:
            from redis import Redis
            from rq.job import Job

            conn = Redis.from_url(settings.redis_url)
            rq_id = jobs.get(job_id)["rq_job_id"]
            wait_for(lambda: Job.fetch(rq_id, connection=conn).get_status() == "started", 60, "the worker to start")
            assert jobs.reap() == 0  # just started: within the grace
        finally:
            horse = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
            for pid in [worker.pid, *map(int, horse)]:
                os.kill(pid, 9)
            worker.wait(10)
        wait_for(lambda: jobs.reap() == 1, 10, "the reaper to see the dead worker's job")
        job = jobs.get(job_id)
        assert (job["status"], job["attempts"]) == ("pending", 1) and "before the job was claimed" in job["outcome"]
        assert jobs.dispatch() == 1 and jobs.get(job_id)["rq_job_id"] == f"aa-train-{job_id}-1"

        # 2. Redis restarted with nothing in memory.
        redis.stop()
        assert jobs.reap() == 0 and jobs.get(job_id)["status"] == "queued"  # Redis down: nothing decided
        redis.start()
        assert jobs.reap() == 1 and jobs.get(job_id)["status"] == "pending"
        assert jobs.dispatch() == 1

        # 3. An rq job that fails before its first step, every time: failed after the last attempt, not cycled.
        broken = Broken(store, settings.with_(queue_name="aa-orphans-broken"))
        bad = broken.request("orphan.2", "test")["id"]
        states = []
        for _ in range(settings.job_max_attempts + 1):
            if broken.dispatch() == 0:
                break
            subprocess.run([*rq_cli[:-1], "aa-orphans-broken", "--burst"], cwd=ROOT, env=env, capture_output=True,
                           timeout=120)
            broken.reap()
            states.append(broken.get(bad)["status"])
        assert states == ["pending"] * (settings.job_max_attempts - 1) + ["failed"]
        assert broken.get(bad)["attempts"] == settings.job_max_attempts
        assert jobs.get(job_id)["status"] == "queued"  # the other job was left alone

        # 4. Taken off the queue by a worker killed before it started the job: rq still says "queued".
        from redis import Redis
        from rq.job import Job
        from rq.queue import Queue

        conn = Redis.from_url(settings.redis_url)
        rq_id = jobs.get(job_id)["rq_job_id"]
        assert conn.lrem(Queue(settings.queue_name, connection=conn).key, 0, rq_id) == 1  # what a dequeue does
        assert Job.fetch(rq_id, connection=conn).get_status() == "queued"
        assert jobs.reap() == 0  # a live worker starts it a moment later: first seen, within the grace
        time.sleep(settings.job_stale_seconds + 0.2)
        assert jobs.reap() == 1
        job = jobs.get(job_id)  # its third loss: failed, as JOB_MAX_ATTEMPTS says
        assert (job["status"], job["attempts"]) == ("failed", settings.job_max_attempts)
        assert "before the job was claimed" in job["outcome"]
    finally:
        redis.stop()
