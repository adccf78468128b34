"""Training-job bookkeeping: one waiting job per project, and no duplicate stage from a stale decision."""

from __future__ import annotations

from backend.store import Store
from finetune.corrections import CorrectionLog
from finetune.jobs import TrainingJobs


def test_a_decision_taken_before_a_stage_started_does_not_ask_again(session_settings, database_url):
    store = Store(database_url)
    jobs = TrainingJobs(store, session_settings)
    log = CorrectionLog(store)
    log.record("4", [{"control": "c", "choices": ["A"], "text": f"t{i}", "task_id": i, "annotation_id": i}
                     for i in range(12)], seq=7)
    seen = jobs.last_data_seq("4")
    first = jobs.request("4", "cold start", seen_seq=seen)
    assert jobs.request("4", "cold start", seen_seq=seen)["id"] == first["id"]  # joins the waiting job
    assert jobs.claim(first["id"])  # a worker takes it: it trains on everything up to seq 7
    assert jobs.get(first["id"])["data_seq"] == 7 and jobs.last_data_seq("4") == 7
    assert jobs.request("4", "cold start", seen_seq=seen) is None  # decided on stale data: nothing new
    later = jobs.request("4", "20 new corrections", seen_seq=7)
    assert later["id"] != first["id"] and later["status"] == "pending"
    assert jobs.request("4", "START_TRAINING")["id"] == later["id"]
    assert not jobs.claim(later["id"])  # one running stage per project
    store.engine.dispose()


def test_simultaneous_requests_leave_one_waiting_job(session_settings, database_url):
    """16 START_TRAINING webhooks at once, each on its own connection: the database keeps one waiting job."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    store = Store(database_url)
    jobs = TrainingJobs(store, session_settings)
    barrier = Barrier(16)

    def ask(_: int) -> int:
        barrier.wait()
        return jobs.request("9", "START_TRAINING")["id"]

    for _ in range(3):
        with ThreadPoolExecutor(16) as pool:
            ids = set(pool.map(ask, range(16)))
        assert len(ids) == 1
        assert [j["id"] for j in jobs.list(project_id="9", status="pending")] == list(ids)
    store.engine.dispose()


def test_a_lost_job_is_not_retried_beside_a_newer_waiting_one(session_settings, database_url):
    store = Store(database_url)
    jobs = TrainingJobs(store, session_settings)
    first = jobs.request("5", "START_TRAINING")["id"]
    assert jobs.claim(first)
    newer = jobs.request("5", "20 new corrections")["id"]  # waits while the first runs
    jobs.release(first, "worker lost during attempt 1")  # its worker died
    assert jobs.get(first)["status"] == "failed" and "takes over" in jobs.get(first)["outcome"]
    assert [j["id"] for j in jobs.list(project_id="5", status="pending")] == [newer]
    alone = jobs.request("6", "START_TRAINING")["id"]
    assert jobs.claim(alone)
    jobs.release(alone, "worker lost during attempt 1")  # nothing else waits: back to pending
    assert jobs.get(alone)["status"] == "pending"
    store.engine.dispose()


def test_a_stage_beats_before_it_imports_the_trainer(session_settings, database_url, monkeypatch):
    """On a busy machine the niced training child can take a minute to import torch: its heartbeat must already run
    then, or the reaper takes the stage for dead and a second worker trains it again."""
    import importlib.abc
    import importlib.util
    import sys
    import threading
    import types

    from backend.decision.states import JobState
    from finetune import worker

    store = Store(database_url)
    jobs = TrainingJobs(store, session_settings)
    job_id = jobs.request("6", "test")["id"]
    assert jobs.claim(job_id)
    beating: list[bool] = []

    def run_stage(project_id, settings, store):
        return types.SimpleNamespace(status=JobState.SKIPPED, notes=["nothing to train"], versions=None, data_seq=0)

    class Trainer(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path, target=None):
            return importlib.util.spec_from_loader(name, self) if name == "finetune.trainer" else None

        def create_module(self, spec):
            beating.append(any(t.name == f"heartbeat-{job_id}" and t.is_alive() for t in threading.enumerate()))
            module = types.ModuleType(spec.name)
            module.run_stage = run_stage
            return module

        def exec_module(self, module):
            pass

    import finetune
    import finetune.trainer

    monkeypatch.setattr(finetune, "trainer", finetune.trainer)  # restored after the stand-in's import replaces it
    monkeypatch.delitem(sys.modules, "finetune.trainer")
    monkeypatch.setattr(sys, "meta_path", [Trainer(), *sys.meta_path])
    assert worker.execute(job_id, session_settings, store, claimed=True) == JobState.SKIPPED
    assert beating == [True]
    store.engine.dispose()
