"""`autoannotator worker`: an rq worker on QUEUE_NAME for training stages, LLM review batches and the chunks of
predictions pushed to Label Studio."""

from __future__ import annotations

from backend.push import PushJobs
from backend.review.jobs import ReviewJobs
from backend.settings import Settings
from backend.store import Store
from finetune.jobs import TrainingJobs


def run_rq_worker(settings: Settings, burst: bool = False) -> None:
    """First re-send what a dead worker left (every kind of job), then work the queue."""
    if not settings.redis_url:
        raise SystemExit("REDIS_URL is not set: without Redis the server trains in-process; no worker needed")
    from redis import Redis
    from rq import Worker

    store = Store(settings.database_url)
    for jobs in (TrainingJobs(store, settings), ReviewJobs(store, settings), PushJobs(store, settings)):
        jobs.reap()
        jobs.dispatch()
    Worker([settings.queue_name], connection=Redis.from_url(settings.redis_url)).work(burst=burst)
