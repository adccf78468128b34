"""Bundles: trained, versioned from their parts, calibrated, promoted atomically, served by key."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backend.datasets import LabelledData, load_labelled
from backend.labelstudio.config import bundle_key, project_bundle_key
from backend.serving.bundles import BundleStore
from finetune.training import ProjectRows, capped_rows, encode_targets, train_bundle
from tests.conftest import SENTIMENT

LABELS = ["Positive", "Negative", "Neutral"]
TFIDF = [{"name": "tfidf-lr", "family": "tfidf", "params": {}}, {"name": "nb", "family": "tfidf",
                                                                   "params": {"classifier": "nb"}}]


def record_fits(monkeypatch, cls) -> dict[str, list[list[str]]]:
    """Every text list `cls.fit` is called with, by specialist name, the real fit still running."""
    fits: dict[str, list[list[str]]] = {}
    fit = cls.fit

    def recording(self, texts, y, sample_weight=None):
        fits.setdefault(self.name, []).append(list(texts))
        return fit(self, texts, y, sample_weight)

    monkeypatch.setattr(cls, "fit", recording)
    return fits


@pytest.fixture(scope="module")
def sample():
    data = load_labelled(SENTIMENT)
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


def test_replayed_rows_hold_the_calibration_out_and_a_project_specialist_trains_on_the_rest(tmp_path, sample):
    # 300 "project" rows of two labels only, then 600 replayed rows of all three.
    own = [i for i, y in enumerate(sample.labels) if y != ["Neutral"] and y != ["neutral"]][:300]
    rest = [i for i in range(len(sample.texts)) if i not in set(own)][:600]
    data = LabelledData([sample.texts[i] for i in own + rest], [sample.labels[i] for i in own + rest], "x")
    replay = np.r_[np.zeros(len(own), bool), np.ones(len(rest), bool)]
    recipe = [TFIDF[0], {"name": "own", "family": "tfidf", "params": {"rows": "project"}}]
    store = BundleStore(tmp_path)
    ref, manifest = train_bundle(store, LABELS, False, data, recipe, project=ProjectRows(
                                 sample_weight=np.where(replay, 1.0, 5.0), replay_rows=replay))
    assert manifest.metrics["n_holdout"] == int(600 * 0.15)  # drawn from the replay: every project row trains
    assert manifest.metrics["n_train"] == 300 + 600 - int(600 * 0.15)
    from backend.specialists import registry

    shared = registry.load(ref.path / "specialists" / "tfidf-lr")
    project = registry.load(ref.path / "specialists" / "own")
    assert len(shared.clf.classes_) == 3
    assert len(project.clf.classes_) == 2  # it saw the project's rows, which have no Neutral
    assert project.predict_proba(["a fine day"])[0, LABELS.index("Neutral")] == 0.0
    with pytest.raises(ValueError, match="project rows only"):
        train_bundle(store, LABELS, False, data, recipe, project=ProjectRows(replay_rows=np.ones(len(replay), bool)))


def test_capped_rows_take_the_project_rows_first_and_fill_with_replay():
    rows = np.arange(100)
    replayed = np.r_[np.zeros(30, bool), np.ones(70, bool)]
    assert capped_rows(rows, replayed, 200) is rows  # under the cap: all of them, untouched
    some = capped_rows(rows, replayed, 50, seed=1)
    assert len(some) == 50 and len(set(some)) == 50
    assert set(range(30)) <= set(some)  # every project row, then 20 replayed ones
    assert (some == np.sort(some)).all()
    np.testing.assert_array_equal(some, capped_rows(rows, replayed, 50, seed=1))  # seeded
    few = capped_rows(rows, replayed, 10)
    assert len(few) == 10 and set(few) <= set(range(30))  # more project rows than the cap: project rows only


def test_a_specialist_with_max_rows_fits_on_at_most_that_many(tmp_path, sample, monkeypatch):
    from backend.specialists.tfidf import TfidfSpecialist

    fits = record_fits(monkeypatch, TfidfSpecialist)
    replay = np.r_[np.zeros(100, bool), np.ones(800, bool)]
    recipe = [TFIDF[0], {"name": "capped", "family": "tfidf", "params": {"max_rows": 250}}]
    _, manifest = train_bundle(BundleStore(tmp_path), LABELS, False, sample, recipe,
                               project=ProjectRows(replay_rows=replay, sample_weight=np.where(replay, 1.0, 3.0)))
    assert {k: len(v[-1]) for k, v in fits.items()} == {"tfidf-lr": manifest.metrics["n_train"], "capped": 250}


def test_the_project_specialist_joins_once_there_are_enough_varied_corrections():
    from finetune.trainer import with_project_specialist

    recipe = [{"name": "tfidf-lr", "family": "tfidf", "params": {}}]
    two = [["a"], ["b"]] * 100
    assert with_project_specialist(recipe, two[:199], 200) == (recipe, None)  # too few
    assert with_project_specialist(recipe, [["a"]] * 300, 200) == (recipe, None)  # one answer trains nothing
    assert with_project_specialist(recipe, two, 0) == (recipe, None)  # switched off
    grown, name = with_project_specialist(recipe, two, 200)
    assert name == "minilm-project" and grown[-1] == {"name": "minilm-project", "family": "encoder",
                                                      "params": {"rows": "project", "layers": 3}}
    assert recipe == [{"name": "tfidf-lr", "family": "tfidf", "params": {}}]  # not changed in place
    assert with_project_specialist(grown, two * 2, 200) == (grown, None)  # it is there already
    taken = [{"name": "minilm-project", "family": "tfidf", "params": {}}]
    assert with_project_specialist(taken, two, 200)[1] == "minilm-project-2"


def test_vote_weights_are_fitted_on_the_held_out_rows_unless_the_recipe_rules(tmp_path, sample):
    from backend.serving.ensemble import load_ensemble

    # a specialist that saw 40 rows beside one that saw them all: an equal vote lets the weak one blunt the strong
    recipe = [TFIDF[0], {"name": "starved", "family": "tfidf", "params": {"max_rows": 40}}]
    store = BundleStore(tmp_path)
    ref, fitted = train_bundle(store, LABELS, False, sample, recipe, promote=False, key="fitted")
    _, kept = train_bundle(store, LABELS, False, sample, recipe, promote=False, key="recipe", vote_weights="recipe")
    weights = {e.name: e.weight for e in fitted.specialists}
    assert weights["tfidf-lr"] > 1.2 > 0.8 > weights["starved"] > 0  # leaned on, yet still in the vote
    assert sum(weights.values()) == pytest.approx(2.0, abs=1e-3)  # mean 1, like the recipe's
    assert fitted.metrics["vote_weights"] == {"on": "holdout", **weights}
    assert {e.name: e.weight for e in kept.specialists} == {"tfidf-lr": 1.0, "starved": 1.0}
    assert kept.metrics["vote_weights"]["on"] == "recipe"
    # the same specialists (seeded), a better vote on the held-out rows, and the served ensemble reads the weights
    assert [m["accuracy"] for m in fitted.metrics["specialists"].values()] == \
        [m["accuracy"] for m in kept.metrics["specialists"].values()]
    assert fitted.metrics["ensemble"]["accuracy"] >= kept.metrics["ensemble"]["accuracy"]
    assert load_ensemble(ref, fitted).weights == [weights["tfidf-lr"], weights["starved"]]



def test_fresh_rows_come_first_and_the_rest_is_a_random_rehearsal():
    rows = np.arange(100)
    replayed = np.r_[np.zeros(30, bool), np.ones(70, bool)]
    fresh = np.r_[np.zeros(20, bool), np.ones(10, bool), np.zeros(70, bool)]  # 10 new corrections, 20 old ones
    some = capped_rows(rows, replayed, 50, seed=1, fresh=fresh)
    assert len(some) == 50 and set(range(20, 30)) <= set(some)  # every new correction
    rest = set(some) - set(range(20, 30))
    assert rest & set(range(20)) and rest & set(range(30, 100))  # old corrections and replay, drawn together
    assert len(set(capped_rows(rows, replayed, 200, fresh=fresh))) == 100  # under the cap: all of them
    np.testing.assert_array_equal(capped_rows(rows, replayed, 5, seed=1, fresh=fresh),
                                  capped_rows(rows, replayed, 5, seed=1, fresh=fresh))
    assert set(capped_rows(rows, replayed, 5, fresh=fresh)) <= set(range(20, 30))


def test_a_specialist_marked_fresh_trains_on_the_new_rows_first(tmp_path, sample, monkeypatch):
    from backend.specialists.tfidf import TfidfSpecialist

    fits = record_fits(monkeypatch, TfidfSpecialist)
    replay = np.r_[np.zeros(100, bool), np.ones(800, bool)]
    fresh = np.r_[np.zeros(70, bool), np.ones(30, bool), np.zeros(800, bool)]
    recipe = [TFIDF[0], {"name": "fresh", "family": "tfidf", "params": {"max_rows": 250, "rows": "fresh"}},
              {"name": "capped", "family": "tfidf", "params": {"max_rows": 250}}]
    train_bundle(BundleStore(tmp_path), LABELS, False, sample, recipe,
                 project=ProjectRows(replay_rows=replay, fresh_rows=fresh, sample_weight=np.where(replay, 1.0, 3.0)))
    seen = {k: v[-1] for k, v in fits.items()}
    new = set(sample.texts[70:100])
    assert len(seen["fresh"]) == 250 and new <= set(seen["fresh"])
    assert len(set(sample.texts[:70]) & set(seen["fresh"])) < 70  # the older corrections are only rehearsed
    assert set(sample.texts[:100]) <= set(seen["capped"])  # without the mark: every correction, as before


def test_fresh_mask_knows_what_the_served_bundle_trained_on():
    from backend.serving.bundles import Manifest
    from finetune.trainer import fresh_mask

    rows = [{"id": 1, "source": "human", "changed_seq": 3}, {"id": 2, "source": "human", "changed_seq": 9},
            {"id": 3, "source": "llm", "changed_seq": 0}, {"id": 4, "source": "human", "changed_seq": 10}]
    served = Manifest("k", LABELS, False, [], data={"corrections": [1, 2], "llm_corrections": [3], "data_seq": 5})
    np.testing.assert_array_equal(fresh_mask(rows, served, True, 2), [False, True, False, True, False, False])
    np.testing.assert_array_equal(fresh_mask(rows, served, False, 0), [True] * 4)  # a shared bundle saw none
    older = Manifest("k", LABELS, False, [], data={"corrections": [1, 2]})  # built before data_seq was recorded
    np.testing.assert_array_equal(fresh_mask(rows, older, True, 0), [False, False, True, True])


def test_a_served_hf_specialist_continues_from_its_weights_in_its_recipes_own_mode_and_rows(tmp_path):
    from backend.serving.bundles import BundleRef, Manifest, SpecialistEntry
    from backend.settings import Settings
    from finetune.trainer import specialist_recipe

    for name, params in (("ft", {"mode": "full", "rows": "fresh"}), ("planned", {}), ("lr", {})):
        (tmp_path / "specialists" / name).mkdir(parents=True)
        (tmp_path / "specialists" / name / "specialist.json").write_text(json.dumps({"params": params}))
    manifest = Manifest("k", LABELS, False, [SpecialistEntry("ft", "hf", "v", 2.0),
                                             SpecialistEntry("planned", "hf", "v"),
                                             SpecialistEntry("lr", "tfidf", "v")])
    ref = BundleRef("k", "v", tmp_path)
    ft, planned, lr = specialist_recipe(manifest, BundleStore(tmp_path), ref, Settings.from_env({}))
    assert ft["params"] == {"mode": "full", "rows": "fresh", "checkpoint": str(tmp_path / "specialists" / "ft" /
                                                                               "checkpoint")}
    assert planned["params"]["mode"] == "head"  # a planned hub checkpoint says nothing: its head only
    assert lr["params"] == {} and ft["weight"] == 2.0

def test_a_stage_fine_tunes_the_served_weights_on_the_new_corrections_first(tmp_path, sample, minilm_classifier_dir,
                                                                             monkeypatch):
    """A recipe's `rows: fresh` through a real stage: the hf specialist continuing from the served checkpoint gets
    every correction the served weights have not seen, and only a rehearsal of the older ones."""
    from backend.settings import Settings
    from backend.specialists.hf import HFClassifierSpecialist
    from backend.store import Store
    from finetune.corrections import CorrectionLog
    from finetune.trainer import run_stage
    from tests.conftest import SENTIMENT_XML

    settings = Settings.from_env({}, data_dir=tmp_path, model_dir=tmp_path / "models",
                                 database_url=f"sqlite:///{tmp_path}/db.sqlite", replay_size=300,
                                 bootstrap_min_annotations=10, holdout_every=5, project_specialist_min=0)
    recipe = [TFIDF[0], {"name": "ft", "family": "hf", "params": {"checkpoint": str(minilm_classifier_dir),
                                                                  "mode": "head", "epochs": 1, "max_rows": 40,
                                                                  "rows": "fresh"}}]
    train_bundle(BundleStore(settings.model_dir), LABELS, False,
                 LabelledData(sample.texts[:300], sample.labels[:300], sample.source), recipe, dtype="float32")
    store = Store(settings.database_url)
    store.note_project("7", "h", None, [], [], SENTIMENT_XML)
    log = CorrectionLog(store, settings.holdout_every)
    fitted = record_fits(monkeypatch, HFClassifierSpecialist).setdefault("ft", [])

    def correct(first: int, n: int, seq: int) -> None:
        log.record("7", [{"control": "sentiment", "choices": sample.labels[i], "text": sample.texts[i],
                          "task_id": i, "annotation_id": i + 1, "annotator": "a"}
                         for i in range(first, first + n)], seq=seq)

    correct(400, 30, seq=1)
    assert run_stage("7", settings, store).status == "promoted"
    old = {r["text"] for r in log.rows("7", "sentiment") if not r["holdout"]}
    assert old <= set(fitted[0])  # the first project bundle: nothing was seen, every correction is new
    correct(430, 20, seq=2)
    assert run_stage("7", settings, store).status == "promoted"
    new = {r["text"] for r in log.rows("7", "sentiment") if not r["holdout"]} - old
    assert len(fitted[1]) == 40 and new <= set(fitted[1])
    assert not old <= set(fitted[1])  # the older corrections are rehearsed at random, not all retrained
    bundles = BundleStore(settings.model_dir)
    served = bundles.manifest(bundles.current(project_bundle_key("7", "sentiment")))
    assert served.data["data_seq"] == 2 and len(served.data["corrections"]) == len(old | new)
