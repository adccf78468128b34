"""Training jobs: the durable record (SQL) of every stage asked for, and its hand-off to rq.

The database, not Redis, is the source of truth: a job is written as `pending` before anything is
sent to Redis, so a webhook that arrives while Redis is down loses nothing — the dispatcher pushes
pending jobs once Redis answers again. A job whose worker died (no heartbeat for
JOB_STALE_SECONDS) goes back to `pending` and is retried, up to JOB_MAX_ATTEMPTS.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from backend.rq_sender import RqSender
from backend.settings import Settings
from backend.store import Store, corrections, training_jobs

log = logging.getLogger(__name__)

WAITING = ("pending", "queued")
FINISHED = ("promoted", "rejected", "failed", "skipped")


class TrainingJobs:
    def __init__(self, store: Store, settings: Settings):
        self.store = store
        self.settings = settings
        self.sender = RqSender(settings)

    # -- asking for work ------------------------------------------------------------------------
    def request(self, project_id: str, reason: str, seen_seq: int | None = None) -> dict[str, Any] | None:
        """At most one waiting job per project: a second request joins the one already waiting.

        `seen_seq` is the last trained-on change the caller based its decision on; if a stage started
        since then (it took the waiting job the caller would have joined), nothing new is asked for.
        """
        if seen_seq is not None and self._started_since(project_id, seen_seq):
            return None
        waiting_q = select(training_jobs.c.id).where(training_jobs.c.project_id == project_id,
                                                     training_jobs.c.status.in_(WAITING))
        try:
            with self.store.engine.begin() as conn:
                waiting = conn.execute(waiting_q).first()
                created = waiting is None
                if created:
                    job_id = conn.execute(insert(training_jobs).values(
                        project_id=project_id, status="pending", reason=reason[:255], attempts=0,
                        requested_at=time.time())).inserted_primary_key[0]
                else:
                    job_id = waiting.id
        except IntegrityError:  # another request inserted the waiting job between our read and our insert
            with self.store.engine.connect() as conn:
                waiting = conn.execute(waiting_q).first()
            if waiting is None:
                raise
            created, job_id = False, waiting.id
        if created and seen_seq is not None and self._started_since(project_id, seen_seq):
            # A worker took the waiting job between our reads (the statements are not one snapshot):
            # withdraw ours unless someone already claimed it.
            with self.store.engine.begin() as conn:
                gone = conn.execute(delete(training_jobs).where(training_jobs.c.id == job_id,
                                                                training_jobs.c.status == "pending")).rowcount
            if gone:
                return None
        # No Redis call here: the webhook must answer in milliseconds even when Redis is down.
        # The caller wakes the dispatcher, which pushes the job right away.
        return self.get(int(job_id))

    def _started_since(self, project_id: str, seen_seq: int) -> bool:
        """Has a stage started on data newer than what the caller decided on?"""
        q = select(func.count()).select_from(training_jobs).where(
            training_jobs.c.project_id == project_id, training_jobs.c.data_seq > seen_seq,
            training_jobs.c.status.in_(("running", "promoted", "rejected")))
        with self.store.engine.connect() as conn:
            return bool(conn.execute(q).scalar())

    def dispatch(self) -> int:
        """Send pending jobs to rq; with no REDIS_URL the in-process worker takes them from the table."""
        return self.sender.send(self.list(status="pending"), "finetune.worker.run_job", "aa-train", self._queued)

    def _queued(self, job_id: int, rq_id: str) -> None:
        with self.store.engine.begin() as conn:
            conn.execute(update(training_jobs).where(and_(training_jobs.c.id == job_id,
                                                          training_jobs.c.status == "pending"))
                         .values(status="queued", rq_job_id=rq_id))

    # -- doing work -----------------------------------------------------------------------------
    def claim(self, job_id: int) -> bool:
        """Atomically take a waiting job; False if someone else has it or it is finished."""
        now = time.time()
        with self.store.engine.begin() as conn:
            running = conn.execute(select(func.count()).select_from(training_jobs).where(
                training_jobs.c.project_id == select(training_jobs.c.project_id).where(
                    training_jobs.c.id == job_id).scalar_subquery(),
                training_jobs.c.status == "running")).scalar()
            if running:
                return False  # one running job per project; this one stays waiting
            # What the stage is about to read: corrections after this are "new" for the next trigger.
            seen = select(func.coalesce(func.max(corrections.c.changed_seq), 0)).where(
                corrections.c.project_id == training_jobs.c.project_id).scalar_subquery()
            done = conn.execute(update(training_jobs).where(and_(
                training_jobs.c.id == job_id, training_jobs.c.status.in_(WAITING))).values(
                status="running", attempts=training_jobs.c.attempts + 1, started_at=now, heartbeat_at=now,
                data_seq=seen))
            return done.rowcount == 1

    def claim_next(self) -> int | None:
        for job in sorted(self.list(status="pending"), key=lambda j: j["id"]):
            if self.claim(job["id"]):
                return job["id"]
        return None

    def heartbeat(self, job_id: int) -> None:
        with self.store.engine.begin() as conn:
            conn.execute(update(training_jobs).where(training_jobs.c.id == job_id).values(heartbeat_at=time.time()))

    def finish(self, job_id: int, status: str, outcome: str, versions: dict[str, str] | None = None,
               data_seq: int | None = None) -> None:
        with self.store.engine.begin() as conn:
            conn.execute(update(training_jobs).where(training_jobs.c.id == job_id).values(
                status=status, outcome=outcome[:4000], versions=versions, data_seq=data_seq, finished_at=time.time()))

    def release(self, job_id: int, outcome: str) -> None:
        """Back to pending after a failure, or failed for good once attempts are used up."""
        job = self.get(job_id)
        status = "pending" if job and job["attempts"] < self.settings.job_max_attempts else "failed"
        try:
            with self.store.engine.begin() as conn:
                conn.execute(update(training_jobs).where(training_jobs.c.id == job_id).values(
                    status=status, outcome=outcome[:4000], finished_at=time.time() if status == "failed" else None))
        except IntegrityError:  # a newer job already waits for this project: it trains on the same data and more
            with self.store.engine.begin() as conn:
                conn.execute(update(training_jobs).where(training_jobs.c.id == job_id).values(
                    status="failed", finished_at=time.time(),
                    outcome=f"{outcome[:3000]}; not retried: a newer waiting job of the project takes over"))

    def reap(self) -> int:
        """Running jobs whose worker stopped beating: retry them (or fail them after the last attempt)."""
        cutoff = time.time() - self.settings.job_stale_seconds
        stale = [j for j in self.list(status="running") if (j["heartbeat_at"] or 0) < cutoff]
        for job in stale:
            log.warning("training job %s lost its worker (attempt %s)", job["id"], job["attempts"])
            self.release(job["id"], f"worker lost during attempt {job['attempts']}")
        return len(stale)

    # -- reading --------------------------------------------------------------------------------
    def get(self, job_id: int) -> dict[str, Any] | None:
        with self.store.engine.connect() as conn:
            row = conn.execute(select(training_jobs).where(training_jobs.c.id == job_id)).first()
        return dict(row._mapping) if row else None

    def list(self, project_id: str | None = None, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        q = select(training_jobs).order_by(training_jobs.c.id.desc()).limit(limit)
        if project_id:
            q = q.where(training_jobs.c.project_id == project_id)
        if status:
            q = q.where(training_jobs.c.status == status)
        with self.store.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def last_data_seq(self, project_id: str) -> int:
        """The newest change a running or finished stage trains on: corrections after it are 'new'."""
        q = select(func.max(training_jobs.c.data_seq)).where(
            training_jobs.c.project_id == project_id,
            training_jobs.c.status.in_(("running", "promoted", "rejected")))
        with self.store.engine.connect() as conn:
            return int(conn.execute(q).scalar() or 0)
