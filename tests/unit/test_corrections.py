"""Webhook payloads become corrections; updates replace, deletions retract, cancelled ones are ignored."""

from __future__ import annotations

from backend.store import Store
from finetune.corrections import CorrectionLog, extract, is_holdout
from tests.conftest import SENTIMENT_XML, captured
from tests.learning_helpers import annotation_event


def test_captured_annotation_is_extracted_with_a_text_even_without_the_config():
    body = captured("POST /webhook ANNOTATION_CREATED")
    body["task"]["data"] = {"text": "This is bad, really bad"}
    (rec,) = extract(body)  # the capture abbreviates project.label_config to "..."
    assert rec == {"control": "sentiment", "choices": ["Positive"], "text": "This is bad, really bad",
                   "annotator": "1", "annotation_id": 1, "task_id": 1}


def test_config_tells_which_data_field_is_the_text():
    config = SENTIMENT_XML.replace("$text", "$body")
    body = annotation_event(1, 5, "ignored", "Negative", config=config)
    body["task"]["data"] = {"title": "a title", "body": "the real text"}
    assert extract(body)[0]["text"] == "the real text"
    body["annotation"]["was_cancelled"] = True
    assert extract(body) == []


def test_update_replaces_and_delete_retracts(tmp_path):
    log = CorrectionLog(Store(f"sqlite:///{tmp_path}/db.sqlite"), holdout_every=5)
    created = annotation_event(3, 10, "nice", "Positive", annotation_id=77)
    log.record("3", extract(created), seq=1)
    updated = annotation_event(3, 10, "nice", "Neutral", action="ANNOTATION_UPDATED", annotation_id=77)
    log.record("3", extract(updated), seq=2)
    (row,) = log.rows("3")
    assert row["choices"] == ["Neutral"] and row["changed_seq"] == 2
    assert log.new_since("3", 1) == 1 and log.new_since("3", 2) == 0
    assert log.retract("3", [77], seq=3) == 1
    assert log.rows("3") == []


def test_holdout_is_a_fixed_fifth_by_task():
    flags = [is_holdout("7", t, 5) for t in range(2000)]
    assert 0.15 < sum(flags) / len(flags) < 0.25
    assert flags == [is_holdout("7", t, 5) for t in range(2000)]
    assert not any(is_holdout("7", t, 0) for t in range(100))
