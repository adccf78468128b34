"""Chunks of predictions pushed to Label Studio (prelabel, cut-short /predicts, refreshes after a promotion) are
durable jobs that are never queued twice, resume after a failure, and are found again when their worker dies."""

from __future__ import annotations

import time

from backend.decision.states import JobState
from backend.labelstudio.client import ROUTE_FIELD
from backend.push import PushJobs, PushKind, Report, changed, choices_of, task_for_push
from backend.settings import Settings
from backend.store import Store


def _tasks(ids):
    return [{"id": i, "data": {"text": f"task {i}"}} for i in ids]


def test_chunks_are_written_once_and_a_failed_one_is_given_fresh_attempts(database_url, tmp_path):
    settings = Settings.from_env({}, data_dir=tmp_path, database_url=database_url, job_max_attempts=2)
    jobs = PushJobs(Store(database_url), settings)
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
    jobs = PushJobs(Store(database_url), settings)
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


def test_a_prediction_is_pushed_again_only_where_it_says_something_else():
    task = task_for_push({"id": 4, "data": {"text": "x", ROUTE_FIELD: "auto"}, "predictions": [
        {"id": 1, "created_at": "2026-01-01T00:00:00Z", "result": [_region("sentiment", ["Negative"])]},
        {"id": 2, "created_at": "2026-02-01T00:00:00Z", "result": [_region("sentiment", ["Positive"])]}]})
    assert task["previous"] == {"sentiment": ["Positive"]}  # the latest prediction is what a person sees
    assert not changed(task, [_region("sentiment", ["Positive"])], "auto")
    assert changed(task, [_region("sentiment", ["Neutral"])], "auto")  # another label
    assert changed(task, [_region("sentiment", ["Positive"])], "human")  # another route than its flag
    assert changed(task, [_region("sentiment", ["Positive"]), _region("topic", ["Tech"])], "auto")  # a new control
    unflagged = task_for_push({"id": 5, "data": {"text": "y"}, "predictions": [
        {"id": 3, "result": [_region("sentiment", ["Positive"])]}]})
    assert not changed(unflagged, [_region("sentiment", ["Positive"])], "human")  # no flag to disagree with
    fresh = task_for_push({"id": 6, "data": {"text": "z"}, "predictions": []})
    assert "previous" not in fresh and changed(fresh, [_region("sentiment", ["Positive"])], "auto")
    odd = [{"from_name": "m", "value": {"choices": ["b", "a"]}}, "junk", {"value": {}}]
    assert choices_of(odd) == {"m": ["a", "b"]}


def test_tasks_on_their_way_are_held_and_progress_counts_each_run(database_url, tmp_path):
    settings = Settings.from_env({}, data_dir=tmp_path, database_url=database_url)
    jobs = PushJobs(Store(database_url), settings)
    assert jobs.held(7, "v1") == set()
    jobs.write("7", 7, "v1", _tasks(range(1, 6)), chunk=2, kind=PushKind.RETRIEVE)
    jobs.write("8", 8, "v1", _tasks(range(10, 13)), chunk=10, kind=PushKind.WARM)
    assert jobs.held(7, "v1") == {1, 2, 3, 4, 5}
    assert jobs.held(8, "v1") == set()  # only computed, never pushed: a /predict answers them itself
    rows = sorted(jobs.for_run(7, "v1"), key=lambda r: r["first_task"])
    jobs.set(rows[0]["id"], None, status=JobState.DONE, finished_at=time.time(),
             report={"prelabelled": 1, "unchanged": 1, "seconds": 0.5})
    assert jobs.held(7, "v1") == {3, 4, 5}
    (run,) = jobs.progress("7")
    assert (run["kind"], run["tasks"], run["done"], run["pushed"], run["unchanged"], run["state"]) == \
        ("retrieve", 5, 2, 1, 1, "running")
    assert run["chunks"] == {"done": 1, "pending": 2} and run["pushed_share"] == 0.5 and run["finished_at"] is None
    for r in rows[1:]:
        jobs.set(r["id"], None, status=JobState.DONE, finished_at=time.time(), report={"prelabelled": 2})
    (run,) = jobs.progress("7")
    assert run["state"] == "done" and run["done"] == 5 and run["pushed"] == 5 and run["finished_at"]
    assert {r["kind"] for r in jobs.progress()} == {"retrieve", "warm"}


def _region(control, choices):
    return {"from_name": control, "to_name": "text", "type": "choices", "value": {"choices": choices}}
