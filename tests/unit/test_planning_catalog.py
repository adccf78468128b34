"""The catalog (issue #6): the seed, a team's file merged over it, and bad files named with the reason."""

from __future__ import annotations

import json

import pytest

from backend.planning.catalog import CatalogError, load_catalog, seed_catalog
from backend.settings import Settings
from finetune.training import DEFAULT_SPECIALISTS

PAPER = {
    "cardiffnlp/twitter-roberta-base-sentiment-latest": ("sentiment", ("negative", "neutral", "positive")),
    "cardiffnlp/twitter-xlm-roberta-base-sentiment": ("sentiment", ("negative", "neutral", "positive")),
    "finiteautomata/bertweet-base-sentiment-analysis": ("sentiment", ("NEG", "NEU", "POS")),
    "s-nlp/roberta_toxicity_classifier": ("toxicity", ("neutral", "toxic")),
    "JungleLee/bert-toxic-comment-classification": ("toxicity", ("non-toxic", "toxic")),
    "garak-llm/toxic-comment-model": ("toxicity", ("non-toxic", "toxic")),
}


def test_seed_holds_the_papers_checkpoints_with_their_labels():
    catalog = seed_catalog()
    for checkpoint, (task, labels) in PAPER.items():
        entry = catalog.get(checkpoint)
        assert entry is not None and entry.paper and entry.family == "hf"
        assert entry.task == task and entry.labels == labels
        assert entry.license and entry.params_m and entry.languages
    assert {"distilbert-base-uncased-finetuned-sst-2-english", "ProsusAI/finbert", "unitary/toxic-bert",
            "nlptown/bert-base-multilingual-uncased-sentiment"} <= set(catalog.entries)
    # an opaque LABEL_n checkpoint says what its labels mean
    old = catalog.get("cardiffnlp/twitter-roberta-base-sentiment")
    assert old.labels == ("LABEL_0", "LABEL_1", "LABEL_2") and old.label_meanings == ("negative", "neutral", "positive")


def test_seed_defaults_are_the_offline_default_specialists():
    defaults = seed_catalog().defaults()
    assert [(e.id, e.family, e.params) for e in defaults] == \
        [(s["name"], s["family"], s["params"]) for s in DEFAULT_SPECIALISTS]
    assert all(not e.pretrained for e in defaults)


def test_a_team_file_adds_overrides_field_by_field_and_disables(tmp_path):
    user = tmp_path / "catalog.json"
    user.write_text(json.dumps({
        "entries": [
            {"id": "ProsusAI/finbert", "checkpoint": "/models/finbert"},  # a local copy: one field
            {"id": "acme/support-tickets", "family": "hf", "task": "topic", "labels": ["billing", "bug", "other"],
             "languages": ["en", "de"], "params_m": 66, "license": "proprietary", "domain": "our tickets"},
        ],
        "disable": ["unitary/toxic-bert"],
    }))
    catalog = load_catalog(user)
    finbert = catalog.get("ProsusAI/finbert")
    assert finbert.location == "/models/finbert" and finbert.labels == ("positive", "negative", "neutral")
    assert finbert.source == str(user)
    ours = catalog.get("acme/support-tickets")
    assert ours.labels == ("billing", "bug", "other") and ours.speaks("de") and not ours.speaks("fr")
    assert "unitary/toxic-bert" not in catalog
    assert len(catalog) == len(seed_catalog()) + 1 - 1


def test_a_yaml_team_file(tmp_path):
    user = tmp_path / "catalog.yaml"
    user.write_text("- id: acme/yaml-model\n  family: hf\n  task: sentiment\n  labels: [bad, good]\n"
                    "  meanings: [negative, positive]\n")
    entry = load_catalog(user).get("acme/yaml-model")
    assert entry.label_meanings == ("negative", "positive")


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", r"not valid JSON"),
    ('[{"id": "x/y", "family": "hf", "task": "sentiment"}]', r"entry 'x/y'.*needs 'labels'"),
    ('[{"id": "x/y", "family": "svm"}]', r"entry 'x/y'.*family must be one of"),
    ('[{"id": "x/y", "family": "tfidf", "colour": "red"}]', r"unknown field\(s\) \['colour'\]"),
    ('[{"id": "x/y", "family": "hf", "labels": ["a", "b"], "meanings": ["only one"]}]', r"one name per label"),
    ('{"entries": {"id": "x"}}', r"expected a list of entries"),
    ('[{"family": "tfidf"}]', r"non-empty string 'id'"),
])
def test_a_bad_team_file_is_named_with_the_reason(tmp_path, content, message):
    user = tmp_path / "bad.json"
    user.write_text(content)
    with pytest.raises(CatalogError, match=message) as err:
        load_catalog(user)
    assert str(user) in str(err.value)


def test_a_missing_team_file_is_an_error(tmp_path):
    with pytest.raises(CatalogError, match="cannot be read"):
        load_catalog(tmp_path / "nope.json")


def test_plan_settings_round_trip_through_the_environment(tmp_path):
    s = Settings.from_env({"CATALOG_FILE": "/etc/aa/catalog.yaml", "PLAN_ON_SETUP": "explicit", "PLAN_USE_LLM": "no",
                           "PLAN_MAX_PRETRAINED": "3", "PLAN_MIN_ANNOTATIONS": "50"}, data_dir=tmp_path)
    assert (s.catalog_file, s.plan_on_setup, s.plan_use_llm, s.plan_max_pretrained, s.plan_min_annotations) == \
        ("/etc/aa/catalog.yaml", "explicit", False, 3, 50)
    assert Settings.from_env(s.to_env()) == s
    assert Settings.from_env({}).plan_on_setup == "auto"
