"""The whole loop on PostgreSQL as an operator deploys it: `autoannotator serve --workers 2` (gunicorn) and two
`autoannotator worker` processes (rq, real Redis), an LLM on 127.0.0.1 with a call budget. Predict with review,
annotations by webhook spread over both server workers, a stage on a worker, the promotion served by both server
workers, a rollback, and the budget exact across all of it."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from backend.llm import forget_endpoint_capabilities
from tests.conftest import SENTIMENT_XML
from tests.integration.test_rq_learning import CLI, RedisServer, Worker, free_port, wait_for
from tests.integration.test_spend import _serve, _stop
from tests.learning_helpers import annotation_event, stream
from tests.llm_server import FakeLLM, answer, serving

PID = 31
BUDGET = 6


@pytest.mark.slow
def test_the_loop_on_postgresql_with_two_server_workers_and_two_rq_workers(postgres_url, session_settings,
                                                                           default_bundle, tmp_path):
    forget_endpoint_capabilities()
    redis = RedisServer(free_port())
    redis.start()
    with serving(FakeLLM(default=answer('{"label": "Neutral"}'))) as llm:
        settings = session_settings.with_(
            database_url=postgres_url, redis_url=f"redis://127.0.0.1:{redis.port}/0", queue_name="aa-pg-flow",
            llm_model="fake-model", openai_base_url=llm.base_url, openai_api_key="x", llm_budget_calls=BUDGET,
            review_confidence_threshold=1.0, llm_audit_share=0.0, train_every_n=20, holdout_every=5,
            dispatch_seconds=0.3, bundle_refresh_seconds=0.5, bootstrap_default_bundle=False)
        env = {**os.environ, **settings.to_env(), "HF_HUB_OFFLINE": "1"}
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = _serve(env, port)
        workers = [Worker(env, tmp_path / f"worker{i}.log") for i in (1, 2)]
        try:
            base = requests.post(f"{url}/setup", json={"project": f"{PID}.1", "schema": SENTIMENT_XML},
                                 timeout=60).json()["model_version"]

            def predict(i: int) -> dict:
                body = {"tasks": [{"id": 1000 + i, "data": {"text": f"an unclear remark number {i}"}}],
                        "label_config": SENTIMENT_XML, "project": f"{PID}.1"}
                r = requests.post(f"{url}/predict", json=body, timeout=120)
                assert r.status_code == 200, r.text
                return r.json()["results"][0]

            with ThreadPoolExecutor(6) as pool:  # every task is hard (threshold 1.0): the budget decides
                list(pool.map(predict, range(20)))
            assert llm.calls() == BUDGET
            assert {requests.get(f"{url}/llm/usage?project={PID}", timeout=10).json()["calls"]
                    for _ in range(6)} == {BUDGET}  # either server worker reads the database's count

            def annotate(item: tuple[int, tuple[str, str]]) -> dict:
                task_id, (txt, label) = item
                r = requests.post(f"{url}/webhook", json=annotation_event(PID, task_id, txt, label,
                                                                          config=SENTIMENT_XML), timeout=10)
                assert r.status_code == 200, r.text
                return r.json()

            with ThreadPoolExecutor(4) as pool:  # 20 corrections at once: one stage is asked for, not several
                out = list(pool.map(annotate, enumerate(stream(30), start=1)))
            job_ids = {o["training_job"] for o in out if "training_job" in o}
            assert len(job_ids) == 1, out
            job_id = job_ids.pop()

            def finished() -> dict | None:
                job = requests.get(f"{url}/jobs/{job_id}", timeout=10).json()
                return job if job["status"] in ("promoted", "rejected", "failed") else None

            done = wait_for(finished, 300, "the stage on an rq worker")
            assert done["status"] == "promoted", (done, [(tmp_path / f"worker{i}.log").read_text()[-2000:]
                                                         for i in (1, 2)])
            new = done["versions"]["sentiment"]
            assert new != base

            def served() -> set[str]:  # ask often enough to reach both server workers
                return {requests.post(f"{url}/setup", json={"project": f"{PID}.1", "schema": SENTIMENT_XML},
                                      timeout=60).json()["model_version"] for _ in range(8)}

            assert wait_for(lambda: served() == {new}, 30, "both server workers to serve the promotion")
            rolled = subprocess.run([CLI, "rollback", "--project", str(PID), "--control", "sentiment"], env=env,
                                    capture_output=True, text=True, timeout=120)
            assert rolled.returncode == 0, rolled.stderr[-2000:]
            assert wait_for(lambda: served() == {base}, 30, "both server workers to serve the rollback")
            assert llm.calls() == BUDGET  # nothing in the loop spent past the budget
            assert requests.get(f"{url}/health", timeout=10).json()["webhooks"]["events"] == {"applied": 30}
        finally:
            for w in workers:
                w.stop()
            _stop(server)
            redis.stop()
