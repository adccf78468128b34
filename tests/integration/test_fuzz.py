"""Property: whatever a caller sends to any endpoint, the answer is never a 500, an error is JSON with a message,
and every webhook body is stored. Generated bodies (hypothesis) against the real app on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from backend.store import webhook_events
from tests.conftest import SENTIMENT_XML

FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

odd_text = st.text(st.characters(codec=None, categories=None), max_size=40) | st.sampled_from(
    ["", "\x00", "\ud800", "😀", "a" * 300, "1.1700000000", "-1", "1e309", "../../etc/passwd", "<View/>"])
odd_int = st.sampled_from([0, -1, 1, 2**31 - 1, 2**31, 2**40, 2**63, 2**70]) | st.integers()
scalar = st.none() | st.booleans() | odd_int | st.floats(allow_nan=False, allow_infinity=False) | odd_text
anything = st.recursive(scalar, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner,
                                                                                             max_size=4),
                        max_leaves=20)
region = st.fixed_dictionaries({"from_name": anything | st.just("sentiment"), "to_name": anything,
                                "type": st.sampled_from(["choices", "labels"]) | anything,
                                "value": anything | st.fixed_dictionaries(
                                    {"choices": anything | st.just(["Positive"])})})
annotation_event = st.fixed_dictionaries({
    "action": st.sampled_from(["ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED", "START_TRAINING",
                               "PROJECT_UPDATED"]) | anything,
    "annotation": anything | st.fixed_dictionaries({"id": odd_int | anything, "task": odd_int,
                                                    "result": anything | st.lists(region, max_size=3)}),
    "task": anything | st.fixed_dictionaries({"id": odd_int | anything, "data": anything | st.fixed_dictionaries(
        {"text": odd_text | anything})}),
    "project": anything | st.fixed_dictionaries({"id": odd_int | odd_text, "label_config": st.just(SENTIMENT_XML)}),
    "annotations": anything,
})
task = st.fixed_dictionaries({"id": odd_int | anything,
                              "data": anything | st.fixed_dictionaries({"text": odd_text | anything})})
predict_body = st.fixed_dictionaries({
    "tasks": anything | st.lists(task, max_size=4),
    "label_config": st.just(SENTIMENT_XML) | anything,
    "project": odd_text | odd_int | anything,
    "params": anything,
})
setup_body = st.fixed_dictionaries({"project": odd_text | odd_int | anything,
                                    "schema": st.just(SENTIMENT_XML) | anything, "extra_params": anything})


def _raw(value) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


raw_body = st.binary(max_size=200) | anything.map(_raw)


@pytest.fixture()
def fuzz_client(database_url, session_settings, default_bundle):
    from backend.http.app import create_app
    from model import AutoAnnotatorModel

    model = AutoAnnotatorModel(session_settings.with_(database_url=database_url), background=False)
    yield create_app(model.settings, model).test_client(), model
    model.store.engine.dispose()


def _check(r) -> None:
    assert r.status_code < 500, r.get_data(as_text=True)[:500]
    if r.status_code >= 400:
        assert r.is_json and r.json["error"], r.get_data(as_text=True)[:500]


def _stored(model) -> int:
    with model.store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(webhook_events)).scalar_one())


@FUZZ
@given(body=annotation_event.map(_raw) | raw_body)
def test_webhook_never_500s_and_stores_every_body(fuzz_client, body):
    client, model = fuzz_client
    before = _stored(model)
    r = client.post("/webhook", data=body, content_type="application/json")
    _check(r)
    assert _stored(model) == before + 1


@FUZZ
@given(path=st.sampled_from(["/predict", "/setup"]), body=predict_body.map(_raw) | setup_body.map(_raw) | raw_body)
def test_predict_and_setup_never_500(fuzz_client, path, body):
    client, _ = fuzz_client
    _check(client.post(path, data=body, content_type="application/json"))


@FUZZ
@given(route=st.sampled_from(["/jobs/{}", "/tasks/{}/provenance", "/jobs?project={}", "/trust?project={}",
                              "/quality?project={}", "/llm/usage?project={}", "/review/jobs?project={}",
                              "/ui/projects/{}", "/ui/projects/1?task={}", "/tasks/1/provenance?project={}"]),
       value=odd_text | odd_int.map(str))
def test_reads_never_500(fuzz_client, route, value):
    from urllib.parse import quote

    client, model = fuzz_client
    model.setup("1.1700000000", SENTIMENT_XML)
    r = client.get(route.format(quote(value.encode("utf-8", "surrogatepass"), safe="")))
    _check(r)
