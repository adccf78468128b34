"""Event and project records on both supported databases: SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

import json

import pytest

from backend.store import Store


@pytest.fixture
def store(database_url):
    s = Store(database_url)
    yield s
    s.engine.dispose()


def test_events_are_stored_verbatim_with_their_ids(store):
    body = {"action": "ANNOTATION_CREATED", "project": {"id": 3}, "task": {"id": 11}, "annotation": {"id": 5}}
    raw = json.dumps(body)
    eid = store.record_event("ANNOTATION_CREATED", raw, body)
    store.record_event("START_TRAINING", '{"action": "START_TRAINING", "project": {"id": 3}}', {"project": {"id": 3}})
    store.record_event("INVALID_PAYLOAD", "{oops", None)
    (row,) = store.events(action="ANNOTATION_CREATED")
    assert row["id"] == eid and row["payload"] == raw
    assert (row["project_id"], row["task_id"], row["annotation_id"]) == ("3", 11, 5)
    assert len(store.events(project_id="3")) == 2
    assert store.event_counts() == {"ANNOTATION_CREATED": 1, "START_TRAINING": 1, "INVALID_PAYLOAD": 1}


def test_projects_upsert_only_on_change(store):
    controls = [{"control": "sentiment", "model_version": None}]
    store.note_project("7", "h1", None, controls, [])
    store.note_project("7", "h1", None, controls, [])
    store.note_project("7", "h2", "aa-1", [{"control": "sentiment", "model_version": "aa-1"}], ["<Labels>"])
    (p,) = store.projects()
    assert p["project_id"] == "7" and p["model_version"] == "aa-1" and p["unsupported"] == ["<Labels>"]
    assert p["controls"][0]["model_version"] == "aa-1"


def test_project_texts_are_noted_once_per_task_in_first_seen_order_up_to_the_cap(store, monkeypatch):
    import backend.store.db as store_module

    assert store.note_texts("7", [(1, "first"), (2, "second")]) == 2
    assert store.note_texts("7", [(2, "second, edited"), (3, "third")]) == 1  # first sight wins
    assert store.note_texts("8", [(1, "another project")]) == 1
    assert store.texts("7") == ["first", "second", "third"]
    assert store.note_texts("7", []) == 0
    monkeypatch.setattr(store_module, "MAX_TEXTS_PER_PROJECT", 4)
    assert store.note_texts("7", [(4, "fourth"), (5, "fifth"), (6, "sixth")]) == 1
    assert store.note_texts("7", [(9, "ninth")]) == 0
    assert store.texts("7") == ["first", "second", "third", "fourth"]
    assert store.texts("404") == []


def test_concurrent_requests_noting_the_same_tasks_never_fail(store):
    """Requests of one project that carry the same tasks race to note them: every call returns, each task is
    noted once."""
    import threading

    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def note(offset: int) -> None:
        start.wait()
        try:
            for i in range(30):
                store.note_texts("5", [(t, f"task {t}") for t in range(i * 3 + offset, i * 3 + offset + 6)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=note, args=(k % 2,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sorted(store.texts("5")) == sorted(f"task {t}" for t in range(0, 29 * 3 + 1 + 6))


def test_processes_creating_the_tables_at_once_on_a_fresh_database(postgres_url):
    """gunicorn and rq workers start together on a new PostgreSQL database: each creates the tables it needs (the
    LLM cache's on its first review). A second CREATE TABLE racing the first must not fail a request."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from sqlalchemy import create_engine, inspect

    from backend.llm.cache import create_cache_table
    from backend.store import make_engine

    barrier = Barrier(8)

    def start(i: int) -> None:
        engine = create_engine(postgres_url) if i % 2 else None
        barrier.wait()
        if engine is None:
            make_engine(postgres_url).dispose()  # the service's tables
        else:
            create_cache_table(engine)  # the review cache, made lazily
            engine.dispose()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(start, range(8)))
    names = set(inspect(make_engine(postgres_url)).get_table_names())
    assert {"webhook_events", "corrections", "spend", "trust_checks", "llm_review_cache"} <= names
