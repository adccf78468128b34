"""Hand durable job rows (training stages, LLM reviews) to rq.

The SQL row is the job; rq only carries its id to a worker. A Redis error leaves the rows pending
for the next dispatch, so nothing depends on Redis being up when the work is asked for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC
from typing import Any

from backend.settings import Settings

log = logging.getLogger(__name__)


class RqSender:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._redis: Any = None
        self._off_queue: dict[str, float] = {}  # rq id -> when it was first seen queued but off its queue

    def _connection(self) -> Any:
        from redis import Redis

        if self._redis is None:
            self._redis = Redis.from_url(self.settings.redis_url, socket_connect_timeout=0.2, socket_timeout=2)
        return self._redis

    def send(self, rows: list[dict[str, Any]], func: str, prefix: str, mark_queued: Callable[[int, str], None]) -> int:
        """Enqueue `func(row id)` per row (rq id `<prefix>-<id>-<attempt>`); returns how many were sent."""
        if not self.settings.redis_url or not rows:
            return 0
        sent = 0
        try:
            from rq import Queue

            queue = Queue(self.settings.queue_name, connection=self._connection())
            for row in rows:
                rq_id = f"{prefix}-{row['id']}-{row['attempts']}"
                queue.enqueue(func, row["id"], job_id=rq_id, job_timeout=-1, result_ttl=86400, failure_ttl=86400)
                mark_queued(row["id"], rq_id)
                sent += 1
        except Exception as exc:  # Redis down or unreachable: the rest stay pending and are sent later
            log.warning("could not enqueue %d %s job(s): %s", len(rows) - sent, prefix, exc)
            self._redis = None
        return sent

    def unclaimable(self, rq_ids: list[str], grace: float) -> list[str]:
        """Of these rq jobs, the ones that will never claim their row: gone from Redis (it restarted empty), ended
        (failed, stopped, canceled, or finished without claiming), started more than `grace` seconds ago by a
        worker that died before its first step, or taken off the queue by a worker that died before starting them
        (still "queued", on no queue, for more than `grace` seconds across calls). A job waiting in the queue is
        fine. Redis unreachable: none, decided on a later turn."""
        if not self.settings.redis_url or not rq_ids:
            return []
        try:
            from rq.job import Job, JobStatus
            from rq.queue import Queue

            conn = self._connection()
            jobs = Job.fetch_many(rq_ids, connection=conn)
            now = time.time()
            waiting: dict[str, set[str]] = {}  # queue name -> the ids on it, read once per call
            off_queue = {}
            out = []
            for rq_id, job in zip(rq_ids, jobs, strict=True):
                status = job.get_status(refresh=False) if job is not None else None
                if status == JobStatus.QUEUED and job.origin:
                    if job.origin not in waiting:
                        waiting[job.origin] = set(Queue(job.origin, connection=conn).get_job_ids())
                    if rq_id not in waiting[job.origin]:
                        # A worker takes a job off the queue a moment before it starts it; longer, it died.
                        off_queue[rq_id] = self._off_queue.get(rq_id, now)
                        if now - off_queue[rq_id] > grace:
                            out.append(rq_id)
                        continue
                if status in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
                    continue
                if status == JobStatus.STARTED:
                    started = job.started_at
                    if started is not None and started.tzinfo is None:  # rq before 2 wrote naive UTC
                        started = started.replace(tzinfo=UTC)
                    if started is None or now - started.timestamp() <= grace:
                        continue
                out.append(rq_id)
            self._off_queue = off_queue
            return out
        except Exception as exc:
            log.warning("could not read rq jobs: %s", exc)
            self._redis = None
            return []
