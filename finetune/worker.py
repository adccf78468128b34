"""Who runs training jobs: an rq worker process (`autoannotator worker`, with REDIS_URL) or, with
no Redis, a thread inside the server process (the embedded default). Both run `execute`."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from backend.settings import Settings
from backend.store import Store
from finetune.jobs import TrainingJobs

log = logging.getLogger(__name__)


class _Heartbeat(threading.Thread):
    """Beats while a job runs, so a dead worker is told apart from a slow one."""

    def __init__(self, jobs: TrainingJobs, job_id: int, interval: float):
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.jobs, self.job_id, self.interval = jobs, job_id, interval
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.jobs.heartbeat(self.job_id)
            except Exception:
                log.exception("heartbeat of job %s failed", self.job_id)


def execute(job_id: int, settings: Settings, store: Store, claimed: bool = False) -> str:
    """Run one job to its end state. Promotion happens inside, atomically, or not at all."""
    from finetune.trainer import run_stage

    jobs = TrainingJobs(store, settings)
    if not claimed and not jobs.claim(job_id):
        job = jobs.get(job_id)
        if job and job["status"] == "queued":
            jobs.release(job_id, "another stage of this project was running; waiting")  # re-sent by the dispatcher
        return "not claimed"
    job = jobs.get(job_id)
    beat = _Heartbeat(jobs, job_id, max(0.5, settings.job_stale_seconds / 4))
    beat.start()
    try:
        outcome = run_stage(job["project_id"], settings, store)
        jobs.finish(job_id, outcome.status, "; ".join(outcome.notes), outcome.versions, outcome.data_seq)
        log.info("training job %s: %s %s", job_id, outcome.status, outcome.notes)
        return outcome.status
    except Exception as exc:
        log.exception("training job %s failed", job_id)
        jobs.release(job_id, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
        return "failed"
    finally:
        beat.stopped.set()


def execute_in_subprocess(job_id: int, settings: Settings) -> int:
    """The embedded worker trains in a child process at low priority: the serving process keeps its
    CPU share and its memory does not grow with training; a crash there cannot take the server down."""
    env = {**os.environ, **settings.to_env()}
    cmd = [sys.executable, "-m", "finetune.worker", str(job_id)]
    return subprocess.run(cmd, env=env, cwd=Path(__file__).resolve().parent.parent, check=False,
                          preexec_fn=lambda: os.nice(10)).returncode


def run_job(job_id: int) -> str:
    """The rq job function: everything it needs comes from the environment, like the server's."""
    settings = Settings.from_env()
    return execute(job_id, settings, Store(settings.database_url))


class Background(threading.Thread):
    """Per server process: with Redis, push pending jobs and reap dead ones; without, run them too."""

    def __init__(self, settings: Settings, store: Store, replay: Callable[[], int] | None = None):
        super().__init__(name="autoannotator-learning", daemon=True)
        self.settings, self.store = settings, store
        self.replay = replay  # applies again webhook events that were stored but not applied
        self.jobs = TrainingJobs(store, settings)
        self.wake = threading.Event()
        self.stopped = threading.Event()
        self.pid = os.getpid()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                if self.replay is not None:
                    self.replay()
                self.jobs.reap()
                if self.settings.redis_url:
                    self.jobs.dispatch()
                else:
                    job_id = self.jobs.claim_next()
                    if job_id is not None:
                        code = execute_in_subprocess(job_id, self.settings)
                        if code != 0 and (self.jobs.get(job_id) or {}).get("status") == "running":
                            self.jobs.release(job_id, f"training process exited with code {code}")
                        continue
            except Exception:
                log.exception("learning loop iteration failed")
            self.wake.wait(self.settings.dispatch_seconds)
            self.wake.clear()


def run_rq_worker(settings: Settings, burst: bool = False) -> None:
    """`autoannotator worker`: an rq worker on QUEUE_NAME; first re-sends what a dead worker left."""
    if not settings.redis_url:
        raise SystemExit("REDIS_URL is not set: without Redis the server trains in-process; no worker needed")
    from redis import Redis
    from rq import Worker

    jobs = TrainingJobs(Store(settings.database_url), settings)
    jobs.reap()
    jobs.dispatch()
    Worker([settings.queue_name], connection=Redis.from_url(settings.redis_url)).work(burst=burst)


if __name__ == "__main__":  # the embedded worker's child: `python -m finetune.worker JOB_ID`
    from backend.logs import configure_logging

    _settings = Settings.from_env()
    configure_logging(_settings.log_level)
    _status = execute(int(sys.argv[1]), _settings, Store(_settings.database_url), claimed=True)
    sys.exit(0 if _status != "failed" else 1)
