"""Faults an operator meets, on the real PostgreSQL: the database drops every connection (a restart or a failover).
Nothing is lost and the next requests are served. (A failure in the middle of applying a webhook is in
test_hostile_input.py; Redis down and a worker killed mid-stage in test_rq_learning.py.)"""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import SENTIMENT_XML
from tests.learning_helpers import annotation_event

ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture()
def pg_model(postgres_url, session_settings, default_bundle):
    from backend.http.app import create_app
    from model import AutoAnnotatorModel

    model = AutoAnnotatorModel(session_settings.with_(database_url=postgres_url), background=False)
    yield create_app(model.settings, model).test_client(), model, postgres_url.rsplit("/", 1)[1]
    model.store.engine.dispose()


def _drop_connections(db: str) -> int:
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        n = conn.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = :d "
                              "AND pid <> pg_backend_pid()"), {"d": db}).scalar()
    admin.dispose()
    return int(n)


def test_dropped_database_connections_lose_nothing(pg_model):
    client, model, db = pg_model
    assert client.post("/webhook", json=annotation_event(3, 1, "a good day", "Positive",
                                                         config=SENTIMENT_XML)).status_code == 200
    predict = {"tasks": [{"id": 2, "data": {"text": "fine"}}], "label_config": SENTIMENT_XML, "project": "3.1"}
    assert client.post("/predict", json=predict).status_code == 200
    assert _drop_connections(db) >= 1  # every pooled connection of the service is now dead
    r = client.post("/webhook", json=annotation_event(3, 4, "a bad day", "Negative", config=SENTIMENT_XML))
    assert r.status_code == 200 and r.json["corrections"] == 1  # the pool noticed and reconnected
    assert client.post("/predict", json=predict).status_code == 200
    assert sorted(row["task_id"] for row in model.intake.corrections.rows("3")) == [1, 4]
    assert client.get("/health").json["webhooks"]["events"] == {"applied": 2}
