"""The continual-learning loop on real Redis with a real `autoannotator worker` (rq) process:
jobs survive Redis outages and worker deaths, and webhooks stay fast while training runs."""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.datasets import load_labelled
from backend.http.app import create_app
from backend.labelstudio.config import project_bundle_key
from backend.serving.bundles import BundleStore
from finetune.training import train_bundle
from model import AutoAnnotatorModel
from tests.conftest import ROOT, SENTIMENT, SENTIMENT_XML
from tests.learning_helpers import annotation_event, stream

CLI = str(Path(sys.executable).parent / "autoannotator")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A private redis-server we can stop and start again on the same port."""

    def __init__(self, port: int):
        self.port = port
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no"], stdout=subprocess.DEVNULL)
        for _ in range(100):
            ping = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True)
            if ping.stdout.strip() == b"PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture(scope="module")
def redis_server():
    server = RedisServer(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def env(tmp_path_factory, redis_server, session_settings):
    data_dir = tmp_path_factory.mktemp("rq-learning")
    settings = session_settings.with_(
        data_dir=data_dir, model_dir=data_dir / "models", database_url=f"sqlite:///{data_dir}/db.sqlite",
        redis_url=f"redis://127.0.0.1:{redis_server.port}/0", queue_name="aa-test", train_every_n=20,
        holdout_every=5, dispatch_seconds=0.3, job_stale_seconds=4.0, bundle_refresh_seconds=0.0, replay_size=1500)
    # A base with a transformer specialist: a stage takes long enough to kill a worker in the middle of it.
    ref, _ = train_bundle(BundleStore(settings.model_dir), ["Positive", "Negative", "Neutral"], False,
                          load_labelled(SENTIMENT),
                          [{"name": "tfidf", "family": "tfidf", "params": {}},
                           {"name": "minilm", "family": "encoder", "params": {}}], **settings.runtime)
    model = AutoAnnotatorModel(settings)
    client = create_app(settings, model).test_client()
    worker_env = {**os.environ, "DATA_DIR": str(data_dir), "MODEL_DIR": str(settings.model_dir),
                  "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url, "QUEUE_NAME": "aa-test",
                  "JOB_STALE_SECONDS": "4", "REPLAY_SIZE": "1500", "HF_HUB_OFFLINE": "1"}
    yield settings, ref, client, worker_env
    if model._background:
        model._background.stopped.set()


class Worker:
    def __init__(self, env: dict[str, str], log: Path):
        self.log = log.open("ab")
        self.proc = subprocess.Popen([CLI, "worker"], cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def descendants(self) -> list[int]:
        """rq's work horse runs in a session of its own: find it through /proc, not the process group."""
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            found += [int(c) for c in children]
            todo += [int(c) for c in children]
        return found

    def kill(self) -> None:
        """SIGKILL to the worker and the work horse it forked: the machine or container died mid-job."""
        for pid in [self.proc.pid, *self.descendants()]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def job(client, job_id: int) -> dict:
    return client.get(f"/jobs/{job_id}").json


def wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def setup_version(client, pid: int) -> str:
    return client.post("/setup", json={"project": f"{pid}.1", "schema": SENTIMENT_XML}).json["model_version"]


def annotate(client, pid: int, n: int, skip: int = 0) -> list[dict]:
    out = []
    for task_id, (text, label) in enumerate(stream(n, skip=skip), start=skip + 1):
        r = client.post("/webhook", json=annotation_event(pid, task_id, text, label, config=SENTIMENT_XML))
        assert r.status_code == 200
        out.append(r.json)
    return out


def test_webhook_to_worker_to_new_version_with_fast_webhooks(env, tmp_path):
    _, base, client, worker_env = env
    pid = 21
    assert setup_version(client, pid) == base.version
    job_id = annotate(client, pid, 20)[-1]["training_job"]
    worker = Worker(worker_env, tmp_path / "worker.log")
    try:
        wait_for(lambda: job(client, job_id)["status"] == "running", 60, "the worker to start the job")
        latencies = []
        for i in range(15):  # Label Studio's annotators keep working while the stage trains
            t0 = time.perf_counter()
            r = client.post("/webhook", json=annotation_event(pid, 100 + i, "still annotating", "Neutral",
                                                              config=SENTIMENT_XML))
            latencies.append(time.perf_counter() - t0)
            assert r.status_code == 200
        assert job(client, job_id)["status"] == "running"  # they were answered while it trained
        done = wait_for(lambda: (j := job(client, job_id))["status"] in ("promoted", "rejected", "failed") and j,
                        240, "the job to finish")
    finally:
        worker.stop()
    assert done["status"] == "promoted", (done, (tmp_path / "worker.log").read_text()[-3000:])
    assert done["rq_job_id"].startswith(f"aa-train-{job_id}-")
    assert statistics.median(latencies) < 0.050, latencies
    assert max(latencies) < 1.0  # Label Studio's webhook timeout
    new = setup_version(client, pid)
    assert new == done["versions"]["sentiment"] != base.version
    r = client.post("/predict", json={"tasks": [{"id": 1, "data": {"text": "good"}}], "label_config": SENTIMENT_XML,
                                      "project": f"{pid}.1"})
    assert r.json["results"][0]["model_version"] == new


def test_redis_down_keeps_the_request_and_sends_it_when_back(env, redis_server, tmp_path):
    settings, _, client, worker_env = env
    pid = 22
    setup_version(client, pid)
    annotate(client, pid, 12)
    redis_server.stop()
    try:
        t0 = time.perf_counter()
        r = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": pid}})
        assert r.status_code == 200 and time.perf_counter() - t0 < 1.0
        job_id = r.json["training_job"]
        extra = client.post("/webhook", json=annotation_event(pid, 500, "kept while redis is down", "Positive",
                                                              config=SENTIMENT_XML))
        assert extra.json["corrections"] == 1
        time.sleep(1.0)  # the dispatcher tries, fails, keeps it
        assert job(client, job_id)["status"] == "pending"
    finally:
        redis_server.start()
    wait_for(lambda: job(client, job_id)["status"] == "queued", 30, "the dispatcher to send the job")
    worker = Worker(worker_env, tmp_path / "worker.log")
    try:
        done = wait_for(lambda: (j := job(client, job_id))["status"] in ("promoted", "rejected", "failed") and j,
                        240, "the job to finish")
    finally:
        worker.stop()
    assert done["status"] == "promoted", done
    store = BundleStore(settings.model_dir)
    manifest = store.manifest(store.current(project_bundle_key(str(pid), "sentiment")))
    texts_ids = manifest.data["corrections"] + manifest.data["holdout"]
    assert len(texts_ids) == 13  # the correction that arrived while Redis was down is in


def test_killed_worker_promotes_nothing_and_the_job_is_retried(env, tmp_path):
    settings, base, client, worker_env = env
    pid = 23
    setup_version(client, pid)
    annotate(client, pid, 12)
    job_id = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": pid}}).json["training_job"]
    key = project_bundle_key(str(pid), "sentiment")
    store = BundleStore(settings.model_dir)
    first = Worker(worker_env, tmp_path / "worker1.log")
    wait_for(lambda: job(client, job_id)["status"] == "running", 60, "the first worker to start the job")
    time.sleep(1.5)  # inside the stage
    horses = first.descendants()
    assert horses, "the rq worker forked no work horse"
    first.kill()
    time.sleep(0.5)
    assert not [p for p in horses if Path(f"/proc/{p}").exists() and "zombie" not in
                Path(f"/proc/{p}/status").read_text().lower()]
    assert job(client, job_id)["status"] == "running"  # nobody knows yet
    assert store.current(key) is None and store.versions(key) == []  # nothing partial is visible
    assert setup_version(client, pid) == base.version
    # the server's reaper notices the silent heartbeat and puts the job back on the queue
    requeued = wait_for(lambda: (j := job(client, job_id))["status"] != "running" and j, 30, "the job to be re-queued")
    assert requeued["status"] == "queued", requeued
    assert "worker lost" in job(client, job_id)["outcome"]
    second = Worker(worker_env, tmp_path / "worker2.log")
    try:
        done = wait_for(lambda: (j := job(client, job_id))["status"] in ("promoted", "rejected", "failed") and j,
                        240, "the retried job to finish")
    finally:
        second.stop()
    assert done["status"] == "promoted" and done["attempts"] == 2, done
    assert store.current(key).version == done["versions"]["sentiment"]
    assert setup_version(client, pid) == done["versions"]["sentiment"]
