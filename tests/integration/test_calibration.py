"""Where a project bundle's temperature comes from: its frozen held-out corrections beside the held-out replayed rows
(weighing CALIBRATION_PRIOR_ROWS in all), because it answers the project's tasks; fitted on replayed source rows
alone, its confidence on the project's texts is wrong. Real financial news (the project) against the shipped SemEval
tweets (the replay), real TF-IDF specialists."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from backend.datasets import LabelledData, load_labelled
from backend.decision.audit import is_audit
from backend.decision.voting import expected_calibration_error, fit_temperature
from backend.labelstudio.config import parse_label_config, project_bundle_key
from backend.serving.bundles import BundleStore
from backend.serving.ensemble import load_ensemble
from backend.settings import Settings
from backend.store import Store
from finetune.corrections import CorrectionLog
from finetune.trainer import run_stage
from finetune.training import CALIBRATION_PRIOR_ROWS, ProjectRows, train_bundle
from tests.conftest import DATA, SENTIMENT

LABELS = ["Positive", "Negative", "Neutral"]
FINANCE = DATA / "financial-news-valid.csv"
FINANCE_MAP = {"0": "Negative", "1": "Positive", "2": "Neutral"}
RECIPE = [{"name": "tfidf", "family": "tfidf", "params": {}}, {"name": "nb", "family": "tfidf",
                                                                 "params": {"classifier": "nb"}}]
CONFIG = ('<View><Text name="text" value="$text"/><Choices name="sentiment" toName="text">'
          '<Choice value="Positive"/><Choice value="Negative"/><Choice value="Neutral"/></Choices></View>')


def _take(data: LabelledData, rows: range) -> LabelledData:
    return LabelledData([data.texts[i] for i in rows], [data.labels[i] for i in rows], data.source)


@pytest.fixture(scope="module")
def finance() -> LabelledData:
    return load_labelled(FINANCE, label_map=FINANCE_MAP)


def _confidence_and_right(ensemble, data: LabelledData) -> tuple[np.ndarray, np.ndarray]:
    decisions = ensemble.predict(data.texts)
    right = np.array([LABELS[d.labels[0]] == y[0] for d, y in zip(decisions, data.labels, strict=True)])
    return np.array([d.confidence for d in decisions]), right


def test_held_out_corrections_calibrate_a_project_bundle_truer_than_replayed_rows(tmp_path, finance):
    replay = load_labelled(SENTIMENT)
    own, held = _take(finance, range(600)), _take(finance, range(1500, 1800))
    unseen = _take(finance, range(1800, len(finance.texts)))
    data = LabelledData(own.texts + replay.texts, own.labels + replay.labels, "project corrections")
    replayed = np.r_[np.zeros(len(own.texts), bool), np.ones(len(replay.texts), bool)]
    weights = np.where(replayed, 1.0, 10.0)
    store = BundleStore(tmp_path)
    built = {}
    for name, cal in (("replay", None), ("project", held)):
        # the recipe's vote in both, so that the temperature is all that differs (fitted weights move answers)
        ref, manifest = train_bundle(store, LABELS, False, data, RECIPE, promote=False, key=f"cal-{name}",
                                     project=ProjectRows(sample_weight=weights, replay_rows=replayed,
                                                         calibration=cal), vote_weights="recipe")
        built[name] = (manifest, load_ensemble(ref, manifest))
    (m_replay, e_replay), (m_project, e_project) = built["replay"], built["project"]
    n_ho = int(len(replay.texts) * 0.15)
    assert m_replay.metrics["calibration"] == {"on": "replay holdout", "rows": n_ho}
    cal = m_project.metrics["calibration"]
    assert cal["on"] == "project holdout + replay holdout" and cal["rows"] == 300 + n_ho
    assert cal["project_rows"] == 300 and cal["held_out_weight"] == CALIBRATION_PRIOR_ROWS
    assert cal["ece_after"] <= cal["ece_before"] + 1e-9 and cal["temperature"] == m_project.temperature
    # The same specialists (same rows, same seed); only the temperature differs: the one that fits the held-out
    # corrections, each counting 1, and the held-out replayed rows, CALIBRATION_PRIOR_ROWS in all, best.
    assert [s.version for s in m_project.specialists] == [s.version for s in m_replay.specialists]
    assert m_project.temperature != m_replay.temperature
    # On financial news neither saw, the project-calibrated confidence is the truer one; the labels are the same.
    conf_r, right_r = _confidence_and_right(e_replay, unseen)
    conf_p, right_p = _confidence_and_right(e_project, unseen)
    assert np.array_equal(right_r, right_p)
    ece_r, ece_p = expected_calibration_error(conf_r, right_r), expected_calibration_error(conf_p, right_p)
    assert ece_p < ece_r, (ece_p, ece_r)
    assert abs(conf_p.mean() - right_p.mean()) < abs(conf_r.mean() - right_r.mean())


def test_the_held_out_rows_weigh_as_a_fixed_number_of_corrections():
    """The pure fit: with few corrections the replayed rows decide, with many the corrections do."""
    rng = np.random.default_rng(0)
    # Replayed rows the ensemble is 60 % right on at 0.9 confidence (overconfident); corrections 90 % right at 0.6.
    def rows(n: int, top: float, right: float) -> tuple[np.ndarray, np.ndarray]:
        p = np.tile([top, (1 - top) / 2, (1 - top) / 2], (n, 1))
        return p, np.where(rng.random(n) < right, 0, 1)

    rep_p, rep_y = rows(300, 0.9, 0.6)
    alone = fit_temperature(rep_p, rep_y)
    for n_own, closer_to_own in ((10, False), (3000, True)):
        own_p, own_y = rows(n_own, 0.6, 0.9)
        own_alone = fit_temperature(own_p, own_y)
        both = fit_temperature(np.vstack([own_p, rep_p]), np.r_[own_y, rep_y],
                               sample_weight=np.r_[np.ones(n_own), np.full(300, CALIBRATION_PRIOR_ROWS / 300)])
        assert (abs(both - own_alone) < abs(both - alone)) == closer_to_own, (n_own, both, own_alone, alone)


def test_the_trainer_calibrates_on_the_projects_frozen_holdout(tmp_path, finance):
    """run_stage hands train_bundle the held-out human corrections: never trained on, and the gate's too."""
    settings = Settings.from_env({}, data_dir=tmp_path, bootstrap_min_annotations=10)
    store = Store(settings.database_url)
    store.note_project("7", parse_label_config(CONFIG).config_hash, None, [], [], CONFIG)
    log = CorrectionLog(store, settings.holdout_every)
    log.record("7", [{"control": "sentiment", "choices": finance.labels[i], "text": finance.texts[i], "task_id": i,
                      "annotation_id": i + 1, "annotator": "a@example.com"} for i in range(300)], seq=1)
    held = [r for r in log.rows("7", "sentiment") if r["holdout"]]
    assert len(held) >= 30
    outcome = run_stage("7", settings, store)
    assert outcome.status == "promoted", outcome.notes
    bundles = BundleStore(settings.model_dir)
    manifest = bundles.manifest(bundles.current(project_bundle_key("7", "sentiment")))
    cal = manifest.metrics["calibration"]
    # No replay (a project's first bundle without a shared one): 15 % of the rows it trains on are held out too.
    n_ho = int((300 - len(held)) * 0.15)
    assert cal["on"] == "project holdout + holdout" and cal["project_rows"] == len(held)
    assert cal["rows"] == len(held) + n_ho and manifest.temperature == cal["temperature"]



def test_an_audit_calibrates_truer_than_the_corrections_the_router_picked(tmp_path, finance):
    """The router reviews the least confident answers; a temperature fitted on their corrections learns to doubt
    and misstates the confidence of every other task. Fitted on a random audit, it states it truer."""
    replay = load_labelled(SENTIMENT)
    own, pool = _take(finance, range(600)), _take(finance, range(600, 1800))
    unseen = _take(finance, range(1800, len(finance.texts)))
    data = LabelledData(own.texts + replay.texts, own.labels + replay.labels, "project corrections")
    replayed = np.r_[np.zeros(len(own.texts), bool), np.ones(len(replay.texts), bool)]
    store = BundleStore(tmp_path)
    base = ProjectRows(sample_weight=np.where(replayed, 1.0, 10.0), replay_rows=replayed)
    ref, manifest = train_bundle(store, LABELS, False, data, RECIPE, key="cold", promote=False, project=base,
                                 vote_weights="recipe")
    conf, _ = _confidence_and_right(load_ensemble(ref, manifest), pool)
    hard = list(np.argsort(conf, kind="stable")[:250])  # what a ~20 % review budget would have picked
    audit = list(np.random.default_rng(3).choice(len(pool.texts), 300, replace=False))  # a uniform sample
    rows = _take(pool, [*hard, *audit])
    built = {}
    for name, audited in (("picked", None), ("audit", np.r_[np.zeros(250, bool), np.ones(300, bool)]),
                          ("few", np.r_[np.zeros(545, bool), np.ones(5, bool)])):
        ref, manifest = train_bundle(store, LABELS, False, data, RECIPE, key=name, promote=False,
                                     project=replace(base, calibration=rows, audited=audited), vote_weights="recipe")
        built[name] = (manifest, load_ensemble(ref, manifest))
    picked, audited_m, few = (built[k][0].metrics["calibration"] for k in ("picked", "audit", "few"))
    assert picked["on"] == "project holdout + replay holdout" and picked["project_rows"] == 550
    assert audited_m["on"] == "project audit + replay holdout" and audited_m["project_rows"] == 300
    assert audited_m["audit_rows"] == 300 and "audit_rows" not in picked
    # Too few audited rows to say anything yet: the held-out replayed rows alone, never the picked ones.
    assert few["on"] == "replay holdout" and few["audit_rows"] == 5
    conf_p, right_p = _confidence_and_right(built["picked"][1], unseen)
    conf_a, right_a = _confidence_and_right(built["audit"][1], unseen)
    assert np.array_equal(right_p, right_a)  # the same answers: only the temperature differs
    ece_p, ece_a = expected_calibration_error(conf_p, right_p), expected_calibration_error(conf_a, right_a)
    assert ece_a < ece_p, (ece_a, ece_p)


def test_the_trainer_fits_the_temperature_on_the_audited_corrections(tmp_path, finance):
    settings = Settings.from_env({}, data_dir=tmp_path, bootstrap_min_annotations=10, review_audit_share=0.3)
    store = Store(settings.database_url)
    store.note_project("7", parse_label_config(CONFIG).config_hash, None, [], [], CONFIG)
    log = CorrectionLog(store, settings.holdout_every, settings.review_audit_share)
    log.record("7", [{"control": "sentiment", "choices": finance.labels[i], "text": finance.texts[i], "task_id": i,
                      "annotation_id": i + 1, "annotator": "a@example.com"} for i in range(300)], seq=1)
    spot = [i for i in range(300) if is_audit("7", i, 0.3)]
    held = [r for r in log.rows("7", "sentiment") if r["holdout"]]
    assert {r["task_id"] for r in held} >= set(spot) and len(held) > len(spot)
    assert run_stage("7", settings, store).status == "promoted"
    bundles = BundleStore(settings.model_dir)
    manifest = bundles.manifest(bundles.current(project_bundle_key("7", "sentiment")))
    cal = manifest.metrics["calibration"]
    assert cal["on"] == "project audit + holdout" and cal["project_rows"] == cal["audit_rows"] == len(spot)
    assert manifest.metrics["vote_weights"]["on"] == "project holdout + holdout"  # weights: every held-out row
