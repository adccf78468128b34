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
