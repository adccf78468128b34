"""Who runs training jobs: an rq worker process (`autoannotator worker`, with REDIS_URL) or, with no Redis, a
child process started by the server's background loop (the embedded default). Both run `execute`."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import traceback
from pathlib import Path

from backend.decision.states import JobState
from backend.jobs.base import Heartbeat
from backend.settings import Settings
from backend.store import Store
from finetune.jobs import TrainingJobs

log = logging.getLogger(__name__)


def execute(job_id: int, settings: Settings, store: Store, claimed: bool = False) -> str:
    """Run one job to its end state. Promotion happens inside, atomically, or not at all."""
    jobs = TrainingJobs(store, settings)
    if not claimed and not jobs.claim(job_id):
        job = jobs.get(job_id)
        if job and job["status"] == JobState.QUEUED:
            jobs.release(job_id, "another stage of this project was running; waiting")  # re-sent by the dispatcher
        return "not claimed"
    job = jobs.get(job_id)
    beat = Heartbeat(jobs, job_id, max(0.5, settings.job_stale_seconds / 4))
    beat.start()
    try:
        # Imported once the heartbeat runs: on a busy machine a niced child can take a minute to import torch.
        from finetune.trainer import run_stage

        outcome = run_stage(job["project_id"], settings, store)
        jobs.finish(job_id, outcome.status, "; ".join(outcome.notes), outcome.versions, outcome.data_seq)
        log.info("training job %s: %s %s", job_id, outcome.status, outcome.notes)
        if outcome.status == JobState.PROMOTED:
            refresh(job["project_id"], settings, store)
        return outcome.status
    except Exception as exc:
        log.exception("training job %s failed", job_id)
        jobs.release(job_id, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
        return "failed"
    finally:
        beat.stopped.set()


def refresh(project_id: str, settings: Settings, store: Store) -> None:
    """Queue the re-scoring of the project's predicted tasks by the promoted version (`backend.push`); a Label
    Studio that cannot be reached now is said and left: the next promotion, "Retrieve predictions" or
    `autoannotator prelabel` catches up."""
    from backend.push import schedule_refresh

    try:
        schedule_refresh(settings, store, project_id)
    except Exception as exc:
        log.warning("project %s: predictions not refreshed after the promotion: %s: %s", project_id,
                    type(exc).__name__, str(exc)[:300])


def start_in_subprocess(job_id: int, settings: Settings) -> subprocess.Popen:
    """The embedded worker trains in a child process at low priority: the serving process keeps its
    CPU share and its memory does not grow with training; a crash there cannot take the server down."""
    env = {**os.environ, **settings.to_env()}
    cmd = [sys.executable, "-m", "finetune.worker", str(job_id)]
    return subprocess.Popen(cmd, env=env, cwd=Path(__file__).resolve().parent.parent,
                            preexec_fn=lambda: os.nice(10))


def run_job(job_id: int) -> str:
    """The rq job function: everything it needs comes from the environment, like the server's."""
    settings = Settings.from_env()
    return execute(job_id, settings, Store(settings.database_url))


class TrainingChore:
    """The server loop's training turn: with REDIS_URL send pending stages to rq; without, run one at a time in a
    child process, and look at it again on the next turn (the loop keeps serving reviews meanwhile)."""

    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.jobs = TrainingJobs(store, settings)
        self.child: tuple[int, subprocess.Popen] | None = None

    def __call__(self) -> bool:
        self.jobs.reap()
        if self.settings.redis_url:
            self.jobs.dispatch()
            return False
        if self.child is not None:
            job_id, proc = self.child
            code = proc.poll()
            if code is None:
                return False
            self.child = None
            if code != 0 and (self.jobs.get(job_id) or {}).get("status") == JobState.RUNNING:
                self.jobs.release(job_id, f"training process exited with code {code}")
            return True
        job_id = self.jobs.claim_next()
        if job_id is None:
            return False
        self.child = (job_id, start_in_subprocess(job_id, self.settings))
        return True


if __name__ == "__main__":  # the embedded worker's child: `python -m finetune.worker JOB_ID`
    from backend.logs import configure_logging

    _settings = Settings.from_env()
    configure_logging(_settings.log_level)
    _status = execute(int(sys.argv[1]), _settings, Store(_settings.database_url), claimed=True)
    sys.exit(0 if _status != "failed" else 1)
