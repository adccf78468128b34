"""`autoannotator stack` (`make stack`): docker-compose's queue topology without Docker. Redis, the backend and two
rq workers start from one command; a review that /predict queues is run by a worker, a killed worker is replaced,
and SIGTERM stops every process."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import requests

from tests.integration.test_rq_learning import CLI, free_port, wait_for
from tests.llm_server import FakeLLM, answer, serving


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        found += kids
        todo += kids
    return found


def _alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return False


def _workers(stack: int) -> list[int]:
    return [c for c in _children(stack) if Path(f"/proc/{c}/cmdline").read_bytes().split(b"\0")[-2:-1] == [b"worker"]]


def test_the_stack_serves_and_its_workers_take_the_queue(session_settings, default_bundle, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serving(FakeLLM(default=answer('{"label": "Positive"}'))) as fake:
        settings = session_settings.with_(
            data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/stack.db", redis_url="", port=port,
            queue_name="aa-stack-test", review_mode="async", llm_model="fake-model", openai_base_url=fake.base_url,
            openai_api_key="x", review_confidence_threshold=1.0, llm_audit_share=0.0, dispatch_seconds=0.2,
            bootstrap_default_bundle=False)
        env = {**os.environ, **settings.to_env(), "HF_HUB_OFFLINE": "1"}
        stack = subprocess.Popen([CLI, "stack", "--rq-workers", "2"], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            wait_for(lambda: _ok(url + "/health"), 120, "the backend of the stack")
            assert "2 rq workers" in stack.stdout.readline()
            texts = ["what a great day at the beach", "hard to say really", "the tram was late again"]
            body = {"tasks": [{"id": i + 1, "data": {"text": t}} for i, t in enumerate(texts)],
                    "label_config": (Path(__file__).parents[2] / "samples" / "sentiment.xml").read_text(),
                    "project": "61.1"}
            assert requests.post(url + "/predict", json=body, timeout=60).ok
            jobs = wait_for(lambda: [j for j in requests.get(url + "/review/jobs", timeout=10).json()["jobs"]
                                     if j["status"] == "done"], 120, "a worker of the stack to run the review")
            assert jobs[0]["rq_job_id"].startswith("aa-review-") and fake.calls() == len(texts)
            before = wait_for(lambda: len(w := _workers(stack.pid)) == 2 and w, 30, "two workers")
            os.kill(before[0], signal.SIGKILL)
            wait_for(lambda: len(w := _workers(stack.pid)) == 2 and before[0] not in w and w, 30,
                     "the stack to replace the killed worker")
            started = _tree(stack.pid)
        finally:
            stack.send_signal(signal.SIGTERM)
            stack.wait(60)
        assert stack.returncode == 0
        time.sleep(0.5)
        assert not [p for p in started if _alive(p)]  # redis, gunicorn and its workers, the rq workers: all gone
        assert not _ok(url + "/health")


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False
