"""The domain router on real data and a real encoder: a project of financial news keeps the shared bundle's answers
on tweets like the ones it was trained on, and a project of tweets gets no gate."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil

import numpy as np
import pytest

from backend.datasets import LabelledData, load_labelled
from backend.decision.voting import decide
from backend.serving.bundles import BundleStore
from backend.serving.ensemble import Ensemble, load_ensemble
from backend.settings import Settings
from finetune.trainer import anchor_for
from finetune.training import ProjectRows, train_bundle
from tests.conftest import DATA, SENTIMENT

LABELS = ["Positive", "Negative", "Neutral"]
FINANCE = DATA / "financial-news-valid.csv"
FINANCE_MAP = {"0": "Negative", "1": "Positive", "2": "Neutral"}
TWEETS_TEST = DATA / "semeval2013-test-A.tsv"
TWEETS_MAP = {"positive": "Positive", "negative": "Negative", "neutral": "Neutral"}
RECIPE = [{"name": "tfidf", "family": "tfidf", "params": {}}]


def _take(data: LabelledData, rows: range) -> LabelledData:
    return LabelledData([data.texts[i] for i in rows], [data.labels[i] for i in rows], data.source)


def _project(store: BundleStore, shared, own: LabelledData, runtime: dict, seen: list[str], mode: str = "hard",
             min_auc: float = 0.9, key: str = "project-1-sentiment"):
    """A project bundle the way the trainer builds one: corrections weighted 10, the shared bundle's data replayed."""
    replay = load_labelled(SENTIMENT)
    data = LabelledData(own.texts + replay.texts, own.labels + replay.labels, "project corrections")
    replayed = np.r_[np.zeros(len(own.texts), bool), np.ones(len(replay.texts), bool)]
    weights = np.where(replayed, 1.0, 10.0)
    anchor = {"key": shared.key, "version": shared.version, "mode": mode, "min_auc": min_auc}
    return train_bundle(store, LABELS, False, data, RECIPE, promote=False, key=key, project=ProjectRows(
                        sample_weight=weights, replay_rows=replayed, anchor=anchor, domain_texts=seen), **runtime)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("gate")
    settings = Settings.from_env({}, data_dir=data_dir)
    store = BundleStore(settings.model_dir)
    shared, _ = train_bundle(store, LABELS, False, load_labelled(SENTIMENT), RECIPE, **settings.runtime)
    finance = load_labelled(FINANCE, label_map=FINANCE_MAP)
    # 600 corrections, and 900 more of the project's texts seen by /predict but not annotated.
    ref, manifest = _project(store, shared, _take(finance, range(600)), settings.runtime, finance.texts[600:1500])
    return settings, store, shared, ref, manifest, finance


def finance_texts(setup) -> list[str]:
    return setup[-1].texts


def _accuracy(decisions, labels, data: LabelledData) -> float:
    return float(np.mean([labels[d.labels[0]] == y[0] for d, y in zip(decisions, data.labels, strict=True)]))


def test_a_project_unlike_the_source_gets_an_active_gate_pinned_to_the_shared_bundle(setup):
    _, _, shared, ref, manifest, _ = setup
    gate = manifest.anchor
    assert gate["active"] is True
    assert gate["key"] == shared.key and gate["version"] == shared.version
    assert gate["auc"] >= 0.9 and gate["project_texts"] == len(set(finance_texts(setup)[:1500]))
    assert (ref.path / "domain" / "specialist.json").exists()
    # The gate is part of what is served, so it is part of the version.
    assert manifest.compute_version() == ref.version
    assert dataclasses.replace(manifest, anchor={}).compute_version() != ref.version


def test_each_task_is_answered_by_the_side_its_domain_belongs_to(setup):
    settings, store, shared, ref, manifest, finance = setup
    ensemble = load_ensemble(ref, manifest, **settings.runtime)
    assert ensemble.routed
    anchor = load_ensemble(shared, store.manifest(shared), **settings.runtime)
    tweets = _take(load_labelled(TWEETS_TEST, "2", "1", TWEETS_MAP), range(400))
    news = _take(finance, range(1500, 1900))  # neither corrected nor seen
    for data, side in ((tweets, "anchor"), (news, "project")):
        share = ensemble.project_share(data.texts)
        gated = ensemble.predict(data.texts)
        m = ensemble.manifest
        own = decide(ensemble.probabilities(data.texts), ensemble.weights, m.temperature, m.multiple, m.threshold)
        theirs = anchor.predict(data.texts)
        for s, g, o, a in zip(share, gated, own, theirs, strict=True):
            assert g == (o if s >= 0.5 else a)  # share is 0 or 1 in hard mode
        if side == "anchor":
            assert share.mean() <= 0.1
        else:
            assert share.mean() >= 0.9
    # On tweets the gated bundle keeps the shared bundle's accuracy; on news it keeps the project's.
    m = ensemble.manifest
    acc = {"tweets gated": _accuracy(ensemble.predict(tweets.texts), LABELS, tweets),
           "tweets anchor": _accuracy(anchor.predict(tweets.texts), LABELS, tweets),
           "news gated": _accuracy(ensemble.predict(news.texts), LABELS, news),
           "news own": _accuracy(decide(ensemble.probabilities(news.texts), ensemble.weights, m.temperature),
                                 LABELS, news)}
    assert acc["tweets gated"] >= acc["tweets anchor"] - 0.02, acc
    assert acc["news gated"] >= acc["news own"] - 0.02, acc


def test_a_higher_cutoff_hands_the_anchor_the_tasks_the_domain_model_doubts(setup):
    settings, _, _, ref, manifest, finance = setup
    ensemble = load_ensemble(ref, manifest, **settings.runtime)
    strict = Ensemble(dataclasses.replace(manifest, anchor={**manifest.anchor, "cutoff": 0.95}),
                      ensemble.specialists, ensemble.anchor, ensemble.domain)
    texts = finance.texts[1500:1900] + load_labelled(TWEETS_TEST, "2", "1", TWEETS_MAP).texts[:400]
    p = ensemble.domain.predict_proba(texts)[:, 1]
    assert ensemble.project_share(texts).tolist() == (p >= 0.5).tolist()
    assert strict.project_share(texts).tolist() == (p >= 0.95).tolist()
    assert strict.project_share(texts).sum() < ensemble.project_share(texts).sum()
    # Which tasks go where is part of what is served, so a cutoff other than 0.5 is part of the version.
    assert strict.manifest.compute_version() != manifest.compute_version()


def test_a_project_like_the_source_gets_no_gate(setup):
    """More SemEval-2013 tweets, from the collection the shipped sample was drawn from."""
    settings, store, shared, _, _, _ = setup
    own = load_labelled(TWEETS_TEST, "2", "1", TWEETS_MAP)
    ref, manifest = _project(store, shared, _take(own, range(600)), settings.runtime, own.texts[600:1500],
                             key="project-2-sentiment")
    assert manifest.anchor["active"] is False
    assert manifest.anchor["auc"] < 0.9 and "look like the source" in manifest.anchor["reason"]
    assert manifest.anchor["version"] == shared.version  # kept, so a later stage may still switch it on
    assert not (ref.path / "domain").exists()
    assert not load_ensemble(ref, manifest, **settings.runtime).routed


def test_a_missing_anchor_serves_the_bundle_alone_and_says_so(setup, tmp_path, caplog):
    settings, _, _, ref, manifest, finance = setup
    copy = BundleStore(tmp_path / "models")
    shutil.copytree(ref.path, copy.root / ref.key / "versions" / ref.version)
    moved = copy.ref(ref.key, ref.version)
    with caplog.at_level(logging.WARNING):
        ensemble = load_ensemble(moved, manifest, **settings.runtime)
    assert not ensemble.routed and "is gone" in caplog.text
    assert len(ensemble.predict(finance.texts[:5])) == 5


def test_the_trainer_anchors_a_first_project_bundle_on_the_shared_one_and_later_ones_on_the_same(setup):
    _, store, shared, ref, manifest, _ = setup
    key = "project-1-sentiment"
    first = anchor_for(shared, store.manifest(shared), key)
    assert first == {"key": shared.key, "version": shared.version, "mode": "hard", "min_auc": 0.9, "cutoff": 0.7}
    assert anchor_for(ref, manifest, key) == first  # a later bundle keeps the anchor its predecessor recorded
    assert anchor_for(None, None, key) is None



def test_autoannotator_bundles_shows_whether_a_project_bundles_gate_is_on_and_why(setup, capsys):
    from backend.commands.cli import cmd_bundles

    settings, store, shared, ref, _, _ = setup
    store.promote(ref.key, ref.version)
    cmd_bundles(argparse.Namespace(), settings)
    rows = {r["bundle_key"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    gate = rows[ref.key]["domain_router"]
    assert gate["active"] is True and gate["version"] == shared.version and gate["reason"].startswith("held-out AUC")
    assert "domain_router" not in rows[shared.key]
    # and what each one's temperature was fitted on (the fixture's project bundle had no held-out corrections)
    cal = rows[ref.key]["calibration"]
    assert cal == {"temperature": store.manifest(ref).temperature, "on": "replay holdout", "rows": cal["rows"]}
    assert cal["rows"] > 0
    assert rows[shared.key]["calibration"]["on"] == "holdout"
