"""`autoannotator prelabel --queue` on the tasks of a real Label Studio 1.23.2, spread over two rq workers that share
a PostgreSQL database: one worker is killed (SIGKILL, with its work horse) in the middle, and still every task ends
with exactly one prediction of the version, and a re-run finds nothing left to do.

E2E_PRELABEL_TASKS sets the project's size (default 1,000; 5,000 take about 15 minutes on 2 cores, where Label
Studio itself, one CPU-bound process writing each task's route flag, is the bottleneck)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.test_rq_learning import RedisServer, free_port

from .conftest import AUTOANNOTATOR, LABEL_CONFIG, LS_TOKEN, Backend, LabelStudio, log_tail
from .test_label_studio import sample_texts

pytestmark = pytest.mark.e2e

N_TASKS = int(os.environ.get("E2E_PRELABEL_TASKS", "1000"))
CHUNK = 250 if N_TASKS >= 2000 else 100


class _Worker:
    def __init__(self, env: dict[str, str], log: Path):
        self.log = log.open("ab")
        self.proc = subprocess.Popen([str(AUTOANNOTATOR), "worker"], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def tree(self) -> list[int]:
        found, todo = [self.proc.pid], [self.proc.pid]
        while todo:
            pid = todo.pop()
            try:
                children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
            except OSError:
                continue
            found += children
            todo += children
        return found

    def kill(self) -> None:
        for pid in self.tree():
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


def _predictions(ls: LabelStudio, pid: int) -> list[dict]:
    return ls.get("/api/predictions/", params={"project": pid})


@pytest.mark.timeout(1500)
def test_prelabel_spreads_over_two_workers_and_a_killed_one_loses_nothing(
        label_studio: LabelStudio, backend: Backend, postgres_url: str, tmp_path: Path) -> None:
    ls = label_studio
    pid = ls.post("/api/projects/", {"title": "e2e prelabel over rq", "label_config": LABEL_CONFIG.read_text()})["id"]
    base = sample_texts(min(N_TASKS, 2000))
    texts = [f"{base[i % len(base)]} ({i})" for i in range(N_TASKS)]
    for i in range(0, N_TASKS, 1000):
        ls.post(f"/api/projects/{pid}/import", [{"text": t} for t in texts[i:i + 1000]])
    redis = RedisServer(free_port())
    redis.start()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "DATA_DIR": str(tmp_path / "data"), "MODEL_DIR": str(backend.data_dir / "models"),
           "DATABASE_URL": postgres_url, "REDIS_URL": f"redis://127.0.0.1:{redis.port}/0",
           "QUEUE_NAME": "aa-e2e-prelabel", "LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": LS_TOKEN,
           "JOB_STALE_SECONDS": "6", "BOOTSTRAP_DEFAULT_BUNDLE": "false"}
    for var in ("LLM_MODEL", "OPENAI_BASE_URL", "BASIC_AUTH_USER", "BASIC_AUTH_PASS"):
        env.pop(var, None)
    workers = [_Worker(env, tmp_path / f"worker{i}.log") for i in (1, 2)]
    log = (tmp_path / "prelabel.log").open("w")
    coordinator = subprocess.Popen([str(AUTOANNOTATOR), "prelabel", "--project", str(pid), "--queue", "--chunk",
                                    str(CHUNK), "--no-progress"], env=env, stdout=subprocess.PIPE, stderr=log,
                                   text=True)
    try:
        deadline = time.monotonic() + 600
        while len(_predictions(ls, pid)) < 2 * CHUNK:  # a few chunks are done: the first worker is mid-chunk
            assert coordinator.poll() is None, log_tail(tmp_path / "prelabel.log")
            assert time.monotonic() < deadline, "no chunk finished"
            time.sleep(1)
        workers[0].kill()
        try:
            out, _ = coordinator.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            pytest.fail(f"prelabel --queue did not finish:\n{log_tail(tmp_path / 'prelabel.log')}")
        assert coordinator.returncode == 0, log_tail(tmp_path / "prelabel.log")
        report = json.loads(out.strip().splitlines()[-1])
        again = subprocess.run([str(AUTOANNOTATOR), "prelabel", "--project", str(pid), "--queue", "--no-progress"],
                               env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr[-3000:]
        rerun = json.loads(again.stdout.strip().splitlines()[-1])
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
        for w in workers:
            w.stop()
        redis.stop()
        log.close()
    version = report["model_version"]
    assert report["chunks"] == {"done": N_TASKS // CHUNK}, report
    assert report["prelabelled"] + report["skipped"] == N_TASKS, report
    assert report["aligned"]
    per_task = Counter(p["task"] for p in _predictions(ls, pid) if p["model_version"] == version)
    assert len(per_task) == N_TASKS and set(per_task.values()) == {1}  # every task, once
    assert sum(report["routes"].values()) == report["prelabelled"]
    assert rerun["prelabelled"] == 0 and rerun["skipped"] == N_TASKS and rerun["chunks"] == report["chunks"]
