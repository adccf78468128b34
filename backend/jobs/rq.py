"""Hand durable job rows (training stages, LLM reviews) to rq.

The SQL row is the job; rq only carries its id to a worker. A Redis error leaves the rows pending
for the next dispatch, so nothing depends on Redis being up when the work is asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from backend.settings import Settings

log = logging.getLogger(__name__)


class RqSender:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._redis: Any = None

    def send(self, rows: list[dict[str, Any]], func: str, prefix: str, mark_queued: Callable[[int, str], None]) -> int:
        """Enqueue `func(row id)` per row (rq id `<prefix>-<id>-<attempt>`); returns how many were sent."""
        if not self.settings.redis_url or not rows:
            return 0
        sent = 0
        try:
            from redis import Redis
            from rq import Queue

            if self._redis is None:
                self._redis = Redis.from_url(self.settings.redis_url, socket_connect_timeout=0.2, socket_timeout=2)
            queue = Queue(self.settings.queue_name, connection=self._redis)
            for row in rows:
                rq_id = f"{prefix}-{row['id']}-{row['attempts']}"
                queue.enqueue(func, row["id"], job_id=rq_id, job_timeout=-1, result_ttl=86400, failure_ttl=86400)
                mark_queued(row["id"], rq_id)
                sent += 1
        except Exception as exc:  # Redis down or unreachable: the rest stay pending and are sent later
            log.warning("could not enqueue %d %s job(s): %s", len(rows) - sent, prefix, exc)
            self._redis = None
        return sent
