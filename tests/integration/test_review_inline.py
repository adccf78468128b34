"""Hard samples reviewed inside /predict against an OpenAI-compatible server started by the test:
every answer ends in the right route, the label is never an invalid LLM answer, nothing is lost."""

from __future__ import annotations

import pytest

from backend.http.app import create_app
from backend.llm import forget_endpoint_capabilities
from model import AutoAnnotatorModel
from tests.conftest import SENTIMENT_XML
from tests.llm_server import FakeLLM, answer, error, serving
from tests.trust_helpers import seed_trust

SCRIPT = {
    "what a great day at the beach": [answer('{"label": "Positive"}')],
    "the service was fine I guess": [answer("lorem ipsum dolor")],  # garbage
    "my flight got delayed again": [answer('{"label": "Sarcastic"}')],  # outside the set
    "new phone arrives tomorrow": [answer('{"label": "positive"}')],  # wrong case: not exactly a choice
    "hard to say really": [answer('{"label": "abstain"}')],
    "slow answer please wait": [answer('{"label": "Neutral"}', delay=3.0)],  # past the timeout
    "rate limited text here": [error(429, "slow down"), answer('{"label": "Negative"}')],
    "the server breaks on this": [error(500, "boom")],
}
EXPECTED_ROUTE = {
    "what a great day at the beach": "llm", "the service was fine I guess": "human",
    "my flight got delayed again": "human", "new phone arrives tomorrow": "human", "hard to say really": "human",
    "slow answer please wait": "human", "rate limited text here": "llm", "the server breaks on this": "human",
}


@pytest.fixture
def fake():
    forget_endpoint_capabilities()
    with serving(FakeLLM(script={k: list(v) for k, v in SCRIPT.items()})) as server:
        yield server


def make(session_settings, tmp_path, fake: FakeLLM | None, trusted=("31", "34", "41", "42", "43", "44"), **overrides):
    settings = session_settings.with_(**{
        "database_url": f"sqlite:///{tmp_path}/db.sqlite", "review_confidence_threshold": 1.0,
        "llm_model": "fake-model" if fake else "", "openai_base_url": fake.base_url if fake else "",
        "openai_api_key": "test", "llm_audit_share": 0.0, "llm_timeout_seconds": 1.0, "llm_backoff_seconds": 0.01,
        "llm_max_retries": 2,
        **overrides})
    model = AutoAnnotatorModel(settings)
    if fake and trusted:  # an LLM the people of these projects have measured: right where it answers
        for project in trusted:
            seed_trust(model.store.engine, project, "fake-model", n=300)
    return create_app(settings, model).test_client(), model


def body(texts, project="31.1795746419"):
    return {"tasks": [{"id": i + 1, "data": {"text": t}} for i, t in enumerate(texts)], "label_config": SENTIMENT_XML,
            "project": project}


def test_every_review_outcome_ends_in_the_right_route(session_settings, default_bundle, tmp_path, fake):
    client, model = make(session_settings, tmp_path, fake)
    texts = list(SCRIPT)
    r = client.post("/predict", json=body(texts))
    assert r.status_code == 200
    results = r.json["results"]
    assert len(results) == len(texts)
    for i, (text, result) in enumerate(zip(texts, results, strict=True), start=1):
        (record,) = client.get(f"/tasks/{i}/provenance").json["records"]
        label = result["result"][0]["value"]["choices"]
        assert record["route"] == EXPECTED_ROUTE[text], (text, record["reason"])
        assert record["model_version"] == result["model_version"] == default_bundle.version
        assert set(label) <= {"Positive", "Negative", "Neutral"}  # never an invalid LLM answer
        if record["route"] == "llm":
            assert label == [record["llm"]["verdict"]] and result["score"] >= 0.5
        else:
            assert label == record["ensemble_labels"] and result["score"] < 0.5
        assert record["llm"]["raw"] is not None and record["votes"] and record["probabilities"]
    by_text = {t: client.get(f"/tasks/{i}/provenance").json["records"][0] for i, t in enumerate(texts, start=1)}
    assert by_text["the service was fine I guess"]["llm"]["raw"] == "lorem ipsum dolor"
    assert by_text["my flight got delayed again"]["llm"]["status"] == "invalid"
    assert by_text["new phone arrives tomorrow"]["llm"]["status"] == "invalid"
    assert by_text["hard to say really"]["llm"]["status"] == "abstain"
    assert by_text["slow answer please wait"]["llm"]["status"] == "timeout"
    assert by_text["rate limited text here"]["llm"]["attempts"] == 2
    assert by_text["the server breaks on this"]["llm"]["status"] == "error"
    assert by_text["what a great day at the beach"]["llm"]["prompt_tokens"] > 0
    # LLM-settled samples become lower-trust training data
    llm_rows = [r for r in model.intake.corrections.rows("31") if r["source"] == "llm"]
    assert sorted(r["choices"][0] for r in llm_rows) == ["Negative", "Positive"]
    usage = client.get("/llm/usage?project=31").json
    assert usage["calls"] >= 8 and usage["prompt_tokens"] > 0 and usage["routes"] == {"llm": 2, "human": 6}
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'autoannotator_llm_tokens_total{kind="prompt"}' in metrics and "autoannotator_routes_total" in metrics


def test_budget_exhausted_sends_the_rest_to_humans_without_calls(session_settings, default_bundle, tmp_path, fake):
    client, _ = make(session_settings, tmp_path, fake, llm_budget_calls=1)
    texts = ["what a great day at the beach", "rate limited text here", "hard to say really"]
    client.post("/predict", json=body(texts, project="32.1"))
    records = [client.get(f"/tasks/{i}/provenance").json["records"][0] for i in (1, 2, 3)]
    assert [r["llm"]["status"] for r in records].count("over_budget") == 2
    assert all(r["route"] == "human" for r in records if r["llm"]["status"] == "over_budget")
    # One item reached the LLM. Which one is a race between the review threads: "rate limited text here" costs two
    # HTTP requests (a 429, then the retry), so count items, not requests.
    assert sum(fake.calls(t) > 0 for t in texts) == 1


def test_without_an_llm_hard_samples_go_to_humans(session_settings, default_bundle, tmp_path):
    client, _ = make(session_settings, tmp_path, None)
    r = client.post("/predict", json=body(["some text", "another one"], project="33.1"))
    assert r.status_code == 200
    record = client.get("/tasks/1/provenance").json["records"][0]
    assert record["route"] == "human" and "no LLM reviewer configured" in record["reason"]
    assert record["llm"] is None
    assert client.get("/tasks/999/provenance").status_code == 404


def test_cached_verdicts_make_no_second_call(session_settings, default_bundle, tmp_path, fake):
    client, _ = make(session_settings, tmp_path, fake)
    client.post("/predict", json=body(["what a great day at the beach"], project="34.1"))
    client.post("/predict", json=body(["what a great day at the beach"], project="34.1"))
    assert fake.calls("what a great day at the beach") == 1
    record = client.get("/tasks/1/provenance").json["records"][0]
    assert record["route"] == "llm" and record["llm"]["status"] == "cached"


def test_audited_tasks_go_to_a_human_whatever_the_confidence(session_settings, default_bundle, tmp_path, fake):
    from backend.decision.audit import is_audit

    # Nothing is hard (threshold 0, confidence rule): only the audit sends tasks anywhere, and never to the LLM.
    client, _ = make(session_settings, tmp_path, fake, review_rule="confidence", review_confidence_threshold=0.0,
                     review_audit_share=0.4)
    texts = [f"an ordinary sentence number {i}" for i in range(12)]
    r = client.post("/predict", json=body(texts, project="34.1"))
    assert r.status_code == 200
    spots = {i for i in range(1, 13) if is_audit("34", i, 0.4)}
    assert 0 < len(spots) < 12
    for i, result in enumerate(r.json["results"], start=1):
        (record,) = client.get(f"/tasks/{i}/provenance").json["records"]
        if i in spots:
            assert record["route"] == "human" and "audit" in record["reason"] and result["score"] < 0.5
        else:
            assert record["route"] == "auto"
        assert record["llm"] is None
    assert sum(fake.calls(t) for t in texts) == 0
