"""Durable jobs: the SQL row is the job, rq only carries its id.

A job is written as `pending` before anything is sent to Redis, so work asked for while Redis is down loses
nothing: the loop sends pending rows once Redis answers. A job is claimed by one atomic UPDATE, so two workers
never run it twice; a running job whose process died is found by `is_stale`, and a queued one whose rq job will never
claim it by `orphans`; both are retried, up to JOB_MAX_ATTEMPTS.
Training stages (`finetune.jobs.TrainingJobs`) and LLM review batches (`backend.review.jobs.ReviewJobs`) are
both kinds of it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from sqlalchemy import Table, and_, select, update

from backend.decision.states import WAITING, JobState
from backend.jobs.rq import RqSender
from backend.settings import Settings
from backend.store import Store

log = logging.getLogger(__name__)


class DurableJobs:
    """One table of jobs. A kind names its table, the rq function that runs one, and when a running one is stale."""

    table: ClassVar[Table]
    rq_function: ClassVar[str]  # dotted path rq imports in the worker; called with the job id
    rq_prefix: ClassVar[str]
    heavy_columns: ClassVar[Sequence[str]] = ()  # left out of brief listings
    error_column: ClassVar[str] = "error"

    def __init__(self, store: Store, settings: Settings):
        self.store = store
        self.settings = settings
        self.sender = RqSender(settings)

    # -- sending --------------------------------------------------------------------------------
    def dispatch(self) -> int:
        """Send pending jobs to rq; a no-op without REDIS_URL (the server's loop runs them)."""
        pending = sorted(self.list(status=JobState.PENDING), key=lambda j: j["id"])  # oldest first
        return self.sender.send(pending, self.rq_function, self.rq_prefix, self._queued)

    def _queued(self, job_id: int, rq_id: str) -> None:
        self.set(job_id, JobState.PENDING, status=JobState.QUEUED, rq_job_id=rq_id)

    # -- taking ---------------------------------------------------------------------------------
    def claim(self, job_id: int) -> bool:
        """Atomically take a waiting job; False if someone else has it or it is finished."""
        with self.store.engine.begin() as conn:
            if not self.may_start(conn, job_id):
                return False
            done = conn.execute(update(self.table).where(and_(
                self.table.c.id == job_id, self.table.c.status.in_(WAITING))).values(
                status=JobState.RUNNING, attempts=self.table.c.attempts + 1, **self.on_start(time.time())))
            return done.rowcount == 1

    def may_start(self, conn: Any, job_id: int) -> bool:
        """A kind's extra rule for starting a job (one stage per project at a time)."""
        return True

    def on_start(self, now: float) -> dict[str, Any]:
        """What a kind records when a job starts; a kind with heartbeats starts beating now, so a reaper that
        looks before the first beat does not take the job for dead."""
        return {"started_at": now, **({"heartbeat_at": now} if "heartbeat_at" in self.table.c else {})}

    def claim_next(self, older_than: float = 0.0) -> int | None:
        cutoff = time.time() - older_than
        for job in sorted(self.list(status=JobState.PENDING), key=lambda j: j["id"]):
            if job["requested_at"] <= cutoff and self.claim(job["id"]):
                return job["id"]
        return None

    def retry_or_fail(self, job_id: int, error: str) -> JobState:
        """After a failed attempt: back to pending, or failed for good once JOB_MAX_ATTEMPTS are used up."""
        job = self.get(job_id)
        return self._retry_or_fail(job_id, job["attempts"] if job else self.settings.job_max_attempts, error)

    def _retry_or_fail(self, job_id: int, used: int, error: str, expect: JobState | None = None,
                       **values: Any) -> JobState:
        """`used`: the attempts the job has had, this one included."""
        state = JobState.PENDING if used < self.settings.job_max_attempts else JobState.FAILED
        self.set(job_id, expect, status=state, **{self.error_column: error[:4000]}, **values,
                 finished_at=time.time() if state == JobState.FAILED else None)
        return state

    def is_stale(self, job: dict[str, Any], now: float) -> bool:
        raise NotImplementedError

    def reap(self) -> int:
        """Jobs whose process died: running ones are retried, or failed after the last attempt; queued ones whose rq
        job will never claim them are sent again (`orphans`)."""
        now = time.time()
        stale = [j for j in self.list(status=JobState.RUNNING) if self.is_stale(j, now)]
        for job in stale:
            log.warning("%s job %s lost its worker (attempt %s)", self.rq_prefix, job["id"], job["attempts"])
            self.lost(job)
        return len(stale) + self.orphans()

    def orphans(self) -> int:
        """Queued rows whose rq job is gone or ended without claiming them (a worker killed between taking the rq
        job and claiming the row, Redis restarted empty): back to pending, to be sent again. Each such loss uses an
        attempt, so a job that can never start fails after JOB_MAX_ATTEMPTS instead of cycling."""
        queued = {j["rq_job_id"]: j for j in self.list(status=JobState.QUEUED, brief=True) if j.get("rq_job_id")}
        lost = self.sender.unclaimable(sorted(queued), grace=self.settings.job_stale_seconds)
        for rq_id in lost:
            job = queued[rq_id]
            attempts = job["attempts"] + 1
            state = self._retry_or_fail(job["id"], attempts, f"rq job {rq_id} ended or vanished before the job was "
                                        "claimed", expect=JobState.QUEUED, attempts=attempts)
            log.warning("%s job %s: its rq job %s will never run it; %s", self.rq_prefix, job["id"], rq_id,
                        "sent again" if state == JobState.PENDING else "failed")
        return len(lost)

    def lost(self, job: dict[str, Any]) -> None:
        self.retry_or_fail(job["id"], f"worker lost during attempt {job['attempts']}")

    def heartbeat(self, job_id: int) -> None:
        """For kinds whose rows have `heartbeat_at`: the job's process is alive."""
        self.set(job_id, None, heartbeat_at=time.time())

    def set(self, job_id: int, expect: JobState | None = None, **values: Any) -> int:
        q = update(self.table).where(self.table.c.id == job_id)
        if expect is not None:
            q = q.where(self.table.c.status == expect)
        with self.store.engine.begin() as conn:
            return conn.execute(q.values(**values)).rowcount

    # -- reading --------------------------------------------------------------------------------
    def get(self, job_id: int) -> dict[str, Any] | None:
        with self.store.engine.connect() as conn:
            row = conn.execute(select(self.table).where(self.table.c.id == job_id)).first()
        return dict(row._mapping) if row else None

    def list(self, project_id: str | None = None, status: JobState | str | None = None, limit: int = 1000,
             brief: bool = False) -> list[dict[str, Any]]:
        cols = [c for c in self.table.c if not brief or c.name not in self.heavy_columns]
        q = select(*cols).order_by(self.table.c.id.desc()).limit(limit)
        if project_id:
            q = q.where(self.table.c.project_id == project_id)
        if status:
            q = q.where(self.table.c.status == status)
        with self.store.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for j in self.list(limit=100_000, brief=True):
            out[j["status"]] = out.get(j["status"], 0) + 1
        return out


class Heartbeat(threading.Thread):
    """Beats while a job runs, so a dead worker is told apart from a slow one (`DurableJobs.is_stale`)."""

    def __init__(self, jobs: DurableJobs, job_id: int, interval: float):
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.jobs, self.job_id, self.interval = jobs, job_id, interval
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.jobs.heartbeat(self.job_id)
            except Exception:
                log.exception("heartbeat of job %s failed", self.job_id)
