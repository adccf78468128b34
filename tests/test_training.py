"""Bundles: trained, versioned from their parts, calibrated, promoted atomically, served by key."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backend.bundles import BundleStore
from backend.datasets import LabelledData, load_labelled
from backend.labelconfig import bundle_key
from backend.training import encode_targets, train_bundle
from tests.conftest import ROOT

LABELS = ["Positive", "Negative", "Neutral"]
TFIDF = [{"name": "tfidf-lr", "family": "tfidf", "params": {}}, {"name": "nb", "family": "tfidf",
                                                                   "params": {"classifier": "nb"}}]


@pytest.fixture(scope="module")
def sample():
    data = load_labelled(ROOT / "samples" / "sentiment-semeval2013.csv")
    return LabelledData(data.texts[:900], data.labels[:900], data.source)


def test_default_bundle_has_three_calibrated_specialists(default_bundle, session_settings):
    store = BundleStore(session_settings.model_dir)
    m = store.manifest(default_bundle)
    assert [s.family for s in m.specialists] == ["tfidf", "encoder", "tfidf"]
    assert m.version == default_bundle.version == m.compute_version()
    ens = m.metrics["ensemble"]
    assert ens["accuracy"] > 0.6  # in-domain held-out tweets, 3 classes
    assert ens["ece_after"] <= ens["ece_before"] + 1e-9
    assert m.temperature != 1.0
    assert store.current(bundle_key(LABELS, False)) == default_bundle


def test_version_is_derived_from_parts_and_promotion_is_explicit(tmp_path, sample):
    store = BundleStore(tmp_path)
    ref1, _ = train_bundle(store, LABELS, False, sample, TFIDF)
    assert store.current(ref1.key).version == ref1.version
    shuffled = LabelledData(sample.texts[::-1], sample.labels[::-1], sample.source)
    ref2, _ = train_bundle(store, LABELS, False, shuffled, TFIDF, promote=False)
    assert ref2.version != ref1.version  # other data, other weights, other version
    assert store.current(ref1.key).version == ref1.version  # not promoted
    store.promote(ref2.key, ref2.version)
    assert store.current(ref1.key).version == ref2.version
    assert set(store.versions(ref1.key)) == {ref1.version, ref2.version}
    assert not [p for p in (tmp_path / "bundles" / ref1.key).iterdir() if p.name.startswith(".building")]
    with pytest.raises(FileNotFoundError):
        store.promote(ref1.key, "aa-missing")
    manifest = json.loads((ref2.path / "manifest.json").read_text())
    assert manifest["data"]["rows"] == 900 and manifest["metrics"]["n_holdout"] == 135


def test_failed_training_leaves_nothing_behind(tmp_path, sample):
    store = BundleStore(tmp_path)
    with pytest.raises(ValueError):
        train_bundle(store, LABELS, False, sample, [*TFIDF, {"name": "x", "family": "nope"}])
    key_dir = tmp_path / "bundles" / bundle_key(LABELS, False)
    assert [p.name for p in key_dir.iterdir()] == []
    assert store.current(bundle_key(LABELS, False)) is None


def test_labels_outside_the_control_are_an_error_not_dropped(sample):
    bad = LabelledData(["a", "b"], [["Positive"], ["Sarcastic"]], "x.csv")
    with pytest.raises(ValueError, match="Sarcastic"):
        encode_targets(bad, LABELS, False)
    y = encode_targets(LabelledData(["a"], [["negative"]], "x"), LABELS, False)
    assert y.tolist() == [1]
    multi = encode_targets(LabelledData(["a"], [["Tech", "sports"]], "x"), ["Sports", "Politics", "Tech"], True)
    assert np.array_equal(multi, [[1, 0, 1]])
