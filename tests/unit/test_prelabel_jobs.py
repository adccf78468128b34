"""`autoannotator prelabel --queue`: the chunks of a project are durable jobs that are never queued twice, resume
after a failure, and are found again when their worker dies."""

from __future__ import annotations

import time

from backend.commands.prelabel import PrelabelJobs, Report
from backend.decision.states import JobState
from backend.settings import Settings
from backend.store import Store


def _tasks(ids):
    return [{"id": i, "data": {"text": f"task {i}"}} for i in ids]


def test_chunks_are_written_once_and_a_failed_one_is_given_fresh_attempts(database_url, tmp_path):
    settings = Settings.from_env({}, data_dir=tmp_path, database_url=database_url, job_max_attempts=2)
    jobs = PrelabelJobs(Store(database_url), settings)
    first = jobs.write("7", 7, "v1", _tasks(range(1, 11)), chunk=4)
    assert len(first) == 3
    rows = sorted(jobs.for_run(7, "v1"), key=lambda r: r["first_task"])
    assert [r["first_task"] for r in rows] == [1, 5, 9] and "tasks" not in rows[0]
    assert [len(jobs.get(r["id"])["tasks"]) for r in rows] == [4, 4, 2]
    # a second run lists the same tasks (none has a prediction yet): nothing is queued twice, it waits for the same
    assert jobs.write("7", 7, "v1", _tasks(range(1, 11)), chunk=4) == first
    assert len(jobs.for_run(7, "v1")) == 3
    # the first chunk is done (its tasks now have predictions and are not listed); the second failed for good
    jobs.set(rows[0]["id"], None, status=JobState.DONE)
    jobs.set(rows[1]["id"], None, status=JobState.FAILED, attempts=2)
    assert jobs.write("7", 7, "v1", _tasks(range(5, 11)), chunk=4) == {rows[1]["id"], rows[2]["id"]}
    again = jobs.get(rows[1]["id"])
    assert again["status"] == JobState.PENDING and again["attempts"] == 0
    # a new version of the model is another run: its chunks are its own
    second = jobs.write("7", 7, "v2", _tasks(range(1, 11)), chunk=5)
    assert len(second) == 2 and not second & first


def test_a_chunk_whose_worker_died_is_found_and_retried_then_failed(database_url, tmp_path):
    settings = Settings.from_env({}, data_dir=tmp_path, database_url=database_url, job_stale_seconds=1.0,
                                 job_max_attempts=2)
    jobs = PrelabelJobs(Store(database_url), settings)
    jobs.write("7", 7, "v1", _tasks([1, 2, 3]), chunk=10)
    (row,) = jobs.for_run(7, "v1")
    for attempt, after in ((1, JobState.PENDING), (2, JobState.FAILED)):
        assert jobs.claim(row["id"]) and not jobs.claim(row["id"])  # one worker at a time
        assert jobs.reap() == 0  # just claimed: alive before its first beat
        jobs.heartbeat(row["id"])
        assert jobs.reap() == 0  # alive
        jobs.set(row["id"], None, heartbeat_at=time.time() - 5)  # its worker went silent
        assert jobs.reap() == 1
        job = jobs.get(row["id"])
        assert job["status"] == after and job["attempts"] == attempt and "worker lost" in job["error"]


def test_a_run_report_adds_its_chunks():
    total = Report(project=7, model_version="v1")
    total.add({"prelabelled": 3, "skipped": 1, "llm_calls": 2, "cost_usd": 0.5, "routes": {"auto": 2, "llm": 1}})
    total.add({"prelabelled": 2, "untrained": 1, "cost_usd": 0.25, "routes": {"auto": 1, "human": 1}})
    assert (total.prelabelled, total.skipped, total.untrained, total.llm_calls) == (5, 1, 1, 2)
    assert total.cost_usd == 0.75 and dict(total.routes) == {"auto": 3, "llm": 1, "human": 1}
