"""Training jobs: the durable record of every stage asked for (`backend.jobs.base`), at most one waiting per project.

A stage that dies (no heartbeat for JOB_STALE_SECONDS) is retried; its row says what each attempt ended as.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from backend.decision.states import TRAINED, WAITING, JobState
from backend.jobs.base import DurableJobs
from backend.store import corrections, training_jobs


class TrainingJobs(DurableJobs):
    table = training_jobs
    rq_function = "finetune.worker.run_job"
    rq_prefix = "aa-train"
    error_column = "outcome"

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
                        project_id=project_id, status=JobState.PENDING, reason=reason[:255], attempts=0,
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
                                                                training_jobs.c.status == JobState.PENDING)).rowcount
            if gone:
                return None
        # No Redis call here: the webhook must answer in milliseconds even when Redis is down.
        # The caller wakes the dispatcher, which pushes the job right away.
        return self.get(int(job_id))

    def _started_since(self, project_id: str, seen_seq: int) -> bool:
        """Has a stage started on data newer than what the caller decided on?"""
        q = select(func.count()).select_from(training_jobs).where(
            training_jobs.c.project_id == project_id, training_jobs.c.data_seq > seen_seq,
            training_jobs.c.status.in_(TRAINED))
        with self.store.engine.connect() as conn:
            return bool(conn.execute(q).scalar())

    # -- doing work -----------------------------------------------------------------------------
    def may_start(self, conn: Any, job_id: int) -> bool:
        """One running stage per project: another waits."""
        running = conn.execute(select(func.count()).select_from(training_jobs).where(
            training_jobs.c.project_id == select(training_jobs.c.project_id).where(
                training_jobs.c.id == job_id).scalar_subquery(),
            training_jobs.c.status == JobState.RUNNING)).scalar()
        return not running

    def on_start(self, now: float) -> dict[str, Any]:
        # What the stage is about to read: corrections after this are "new" for the next trigger.
        seen = select(func.coalesce(func.max(corrections.c.changed_seq), 0)).where(
            corrections.c.project_id == training_jobs.c.project_id).scalar_subquery()
        return {"started_at": now, "heartbeat_at": now, "data_seq": seen}

    def finish(self, job_id: int, status: JobState, outcome: str, versions: dict[str, str] | None = None,
               data_seq: int | None = None) -> None:
        with self.store.engine.begin() as conn:
            conn.execute(update(training_jobs).where(training_jobs.c.id == job_id).values(
                status=status, outcome=outcome[:4000], versions=versions, data_seq=data_seq, finished_at=time.time()))

    def release(self, job_id: int, outcome: str) -> None:
        """Back to pending after a failure, or failed for good once attempts are used up."""
        try:
            self.retry_or_fail(job_id, outcome)
        except IntegrityError:  # a newer job already waits for this project: it trains on the same data and more
            self.set(job_id, None, status=JobState.FAILED, finished_at=time.time(),
                     outcome=f"{outcome[:3000]}; not retried: a newer waiting job of the project takes over")

    def is_stale(self, job: dict[str, Any], now: float) -> bool:
        return (job["heartbeat_at"] or 0) < now - self.settings.job_stale_seconds

    def lost(self, job: dict[str, Any]) -> None:
        self.release(job["id"], f"worker lost during attempt {job['attempts']}")

    # -- reading --------------------------------------------------------------------------------
    def last_data_seq(self, project_id: str) -> int:
        """The newest change a running or finished stage trains on: corrections after it are 'new'."""
        q = select(func.max(training_jobs.c.data_seq)).where(
            training_jobs.c.project_id == project_id,
            training_jobs.c.status.in_(TRAINED))
        with self.store.engine.connect() as conn:
            return int(conn.execute(q).scalar() or 0)
