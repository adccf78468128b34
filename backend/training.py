"""Build a bundle from labelled data: fit each specialist, calibrate the ensemble on a held-out
slice, measure it, and commit the versioned result. Used by `autoannotator train` and the bootstrap."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split

from backend.bundles import BundleRef, BundleStore, Manifest, SpecialistEntry
from backend.datasets import LabelledData
from backend.decision.voting import (
    decide,
    expected_calibration_error,
    fit_split_temperature,
    fit_temperature,
    fit_weights,
    mean_probabilities,
    unanimous,
)
from backend.labelconfig import bundle_key, normalise_label
from backend.specialists import registry

log = logging.getLogger(__name__)

DEFAULT_SPECIALISTS: list[dict[str, Any]] = [
    {"name": "tfidf-lr", "family": "tfidf", "params": {"classifier": "lr"}},
    # The last three layers: about three points over the last layer alone on tweets (docs/benchmarks.md §5).
    {"name": "minilm-lr", "family": "encoder", "params": {"layers": 3}},
    # Word grams only: a lexical view unlike the other two, at a fraction of the char-gram cost.
    {"name": "tfidf-nb", "family": "tfidf", "params": {"classifier": "nb", "word_ngrams": [1, 3], "char": False}},
]


def encode_targets(data: LabelledData, labels: Sequence[str], multiple: bool) -> np.ndarray:
    """Label names → indices (single) or a 0/1 matrix (multiple); unknown names are an error, not dropped."""
    index = {normalise_label(x): j for j, x in enumerate(labels)}
    unknown = sorted({x for names in data.labels for x in names if normalise_label(x) not in index})
    if unknown:
        raise ValueError(f"labels {unknown[:10]} in {data.source} are not choices of the control {list(labels)}; "
                         "rename them with --label-map")
    if multiple:
        y = np.zeros((len(data.labels), len(labels)), dtype=np.int64)
        for i, names in enumerate(data.labels):
            for x in names:
                y[i, index[normalise_label(x)]] = 1
        return y
    if any(len(names) != 1 for names in data.labels):
        raise ValueError("a single-choice control needs exactly one label per row")
    return np.array([index[normalise_label(names[0])] for names in data.labels], dtype=np.int64)


def capped_rows(rows: np.ndarray, replayed: np.ndarray, cap: int, seed: int = 0,
                fresh: np.ndarray | None = None) -> np.ndarray:
    """At most `cap` of `rows`: the project's own rows first, replayed rows filling what is left, both drawn at
    random. A transformer fine-tuned on a CPU learns at ~90 texts/s: the full 20,000-row replay would add almost
    4 minutes to every stage, and it keeps what it learnt before because it continues from the served weights.

    With `fresh` (a mask over all rows: the corrections the served weights have not trained on), those come first
    and the rest (older corrections and replayed rows alike) fill what is left at random: a specialist that continues
    from the served weights then sees each correction once, plus a random rehearsal, instead of once a stage.
    """
    if len(rows) <= cap:
        return rows
    rng = np.random.default_rng(seed)
    first = ~replayed[rows] if fresh is None else np.asarray(fresh, dtype=bool)[rows]
    own, old = rows[first], rows[~first]
    if len(own) >= cap:
        return np.sort(rng.choice(own, cap, replace=False))
    return np.sort(np.r_[own, rng.choice(old, cap - len(own), replace=False)])


def _scores(y: np.ndarray, pred: np.ndarray, multiple: bool) -> dict[str, float]:
    if multiple:
        return {"exact_match": float(np.mean(np.all(y == pred, axis=1))),
                "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0))}
    return {"accuracy": float(accuracy_score(y, pred)),
            "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0))}


#: How many held-out corrections the held-out replayed rows count as when both calibrate: the source's evidence
#: decides while a project has few, the project's once it has many (docs/benchmarks.md §5: the financial simulation's
#: stage-1 temperature, fitted on 49 corrections alone, stated 13 points more confidence than the test bore out).
CALIBRATION_PRIOR_ROWS = 100


def _calibrated(probas: list[np.ndarray], weights: list[float], y: np.ndarray, temperature: float,
                multiple: bool, unanimous_temperature: float | None = None
                ) -> tuple[list[Any], np.ndarray, dict[str, float]]:
    """Held-out rows under the temperature: the decisions, their answers, and ECE before and after it."""
    raw = decide(probas, weights, 1.0, multiple)
    cal = decide(probas, weights, temperature, multiple, unanimous_temperature=unanimous_temperature)
    pred = np.array([[int(j in d.labels) for j in range(y.shape[1])] for d in cal]) if multiple \
        else np.array([d.labels[0] for d in cal])
    correct = np.all(pred == y, axis=1) if multiple else pred == y
    return cal, pred, {"ece_before": expected_calibration_error(np.array([d.confidence for d in raw]), correct),
                       "ece_after": expected_calibration_error(np.array([d.confidence for d in cal]), correct)}


def _calibration_rows(probas: list[np.ndarray], y_ho: np.ndarray, cal_probas: list[np.ndarray],
                      cal_y: np.ndarray | None, n_labels: int
                      ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray | None]:
    """Each specialist's probabilities on the rows the vote weights and the temperature are fitted on, their gold
    answers and row weights: the project's held-out corrections (when there are enough) beside the held-out
    replayed rows, which weigh CALIBRATION_PRIOR_ROWS in all; else the held-out rows alone; else nothing."""
    if cal_y is not None and len(cal_y) and (len(y_ho) or len(cal_y) >= max(10, n_labels)):
        if not len(y_ho):
            return cal_probas, cal_y, np.ones(len(cal_y))
        each = [np.concatenate([c, p]) for c, p in zip(cal_probas, probas, strict=True)]
        return each, np.concatenate([cal_y, y_ho]), np.r_[np.ones(len(cal_y)),
                                                          np.full(len(y_ho), CALIBRATION_PRIOR_ROWS / len(y_ho))]
    if len(y_ho):
        return probas, y_ho, None
    return [], y_ho, None


def train_bundle(
    store: BundleStore,
    labels: Sequence[str],
    multiple: bool,
    data: LabelledData,
    specialists: Sequence[dict[str, Any]] | None = None,
    holdout: float = 0.15,
    seed: int = 0,
    promote: bool = True,
    key: str | None = None,
    sample_weight: np.ndarray | None = None,
    data_info: dict[str, Any] | None = None,
    replay_rows: np.ndarray | None = None,
    anchor: dict[str, Any] | None = None,
    domain_texts: Sequence[str] = (),
    calibration: LabelledData | None = None,
    audited: np.ndarray | None = None,
    vote_weights: str = "fitted",
    calibrate_split: str = "off",
    fresh_rows: np.ndarray | None = None,
    **runtime: Any,
) -> tuple[BundleRef, Manifest]:
    """Fit every specialist on the training share, calibrate on the rest, commit (and promote) the bundle.

    `key` overrides the label-set key (project bundles); `sample_weight` weighs rows (in-domain
    corrections above replayed source data); `data_info` is recorded in the manifest as provenance.
    `replay_rows` (a boolean mask) marks rows replayed from earlier data, not the project's own corrections: the
    calibration holdout is drawn from them, so every correction trains (holding 15% of them out cost 1.2 points of
    test accuracy on the financial stream, docs/benchmarks.md §5), and a specialist with params `rows: project`
    trains on the other rows only; one with params `max_rows: N` trains on at most N rows (`capped_rows`).
    `anchor` (key, version, mode, min_auc, cutoff; `finetune.trainer.anchor_for`) fits the domain gate on the
    project's rows and `domain_texts` (its task texts seen by /predict) against the replayed rows
    (backend/domain_gate.py). `calibration` (the project's frozen held-out corrections, none of them trained on)
    joins the held-out rows in fitting the temperature, the latter weighing CALIBRATION_PRIOR_ROWS rows in all: a
    project bundle answers the project's tasks, and calibrated on replayed source rows alone, where it is less
    accurate, its confidence on financial news understated how often it was right (docs/benchmarks.md §5). The same
    rows judge the candidate (finetune.trainer's gate): a single-choice answer never moves with the temperature; a
    multi-label one moves at the 0.5 cut, so there the gate sees one scalar fitted on its own rows.
    `vote_weights` "fitted" (VOTE_WEIGHTS) fits each specialist's voting weight on those rows before the temperature
    (`fit_weights`): the vote leans on what is right on the project's own texts; "recipe" keeps the recipe's weights.
    Fitted weights move answers, so the gate's rows have seen a few fitted numbers; GATE_MARGIN absorbs that.
    `audited` (REVIEW_AUDIT_SHARE > 0) marks the `calibration` rows of the audit, a random sample of the project's
    tasks: the temperature is fitted on those beside the held-out replayed rows, not on the rows the router picked
    for being unsure, which stand for the hard tasks only; while fewer than max(10, labels) are audited, on the
    replayed rows alone. The weights are fitted on every held-out row.
    `calibrate_split` "agreement" (CALIBRATE_SPLIT) fits, on the temperature's rows, one temperature for the tasks
    every specialist answers alike and one for the others (`fit_split_temperature`).
    `fresh_rows` (FINETUNE_ROWS=new) marks the corrections the served weights have not trained on: a specialist with
    params `rows: fresh` and `max_rows` (one that continues from the served weights) takes those first and fills its
    cap from the other rows at random (`capped_rows`).
    """
    labels = list(labels)
    specs = list(specialists or DEFAULT_SPECIALISTS)
    y = encode_targets(data, labels, multiple)
    texts = np.array(data.texts, dtype=object)
    idx = np.arange(len(texts))
    replayed = np.zeros(len(idx), bool) if replay_rows is None else np.asarray(replay_rows, dtype=bool)
    # Too few replayed rows to calibrate on (or none marked): hold out from all rows as before.
    pool = idx[replayed] if int(replayed.sum() * holdout) >= max(10, len(labels)) else idx
    n_hold = int(len(pool) * holdout)
    if n_hold >= max(10, len(labels)):
        yp = y[pool]
        strat = None if multiple or np.min(np.bincount(yp, minlength=len(labels))) < 2 else yp
        _, ho = train_test_split(pool, test_size=n_hold, random_state=seed, stratify=strat)
        tr = np.setdiff1d(idx, ho)
    else:
        tr, ho = idx, idx[:0]
    key = key or bundle_key(labels, multiple)
    weights_all = np.ones(len(texts)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    use_cal = calibration is not None and len(calibration.texts) > 0
    cal_texts = list(calibration.texts) if use_cal else []
    cal_y = encode_targets(calibration, labels, multiple) if use_cal else None
    workdir = store.new_workdir(key)
    entries, probas, cal_probas, metrics = [], [], [], {"specialists": {}}
    try:
        for spec in specs:
            t0 = time.perf_counter()
            sp = registry.create(spec["family"], spec["name"], labels, multiple, spec.get("params"), **runtime)
            rows = tr
            if (spec.get("params") or {}).get("rows") == "project":
                rows = tr[~replayed[tr]]
                if not len(rows):
                    raise ValueError(f"specialist {spec['name']!r} trains on project rows only, and there are none")
            cap = int((spec.get("params") or {}).get("max_rows") or 0)
            fresh = fresh_rows if (spec.get("params") or {}).get("rows") == "fresh" else None
            if cap:
                rows = capped_rows(rows, replayed, cap, seed, fresh)
            w = None if sample_weight is None else weights_all[rows]
            if w is not None and rows is not tr:  # mean 1 on its own rows: they rank there, not set regularisation
                w = w / max(float(np.mean(w)), 1e-12)
            sp.fit(list(texts[rows]), y[rows], w)
            fit_s = time.perf_counter() - t0
            m: dict[str, Any] = {"fit_seconds": round(fit_s, 2)}
            if len(ho):
                p = sp.predict_proba(list(texts[ho]))
                probas.append(p)
                pred = (p >= 0.5).astype(int) if multiple else p.argmax(1)
                m.update(_scores(y[ho], pred, multiple))
            if use_cal:
                cal_probas.append(sp.predict_proba(cal_texts))
            version = sp.save(workdir / "specialists" / spec["name"])
            entries.append(SpecialistEntry(spec["name"], spec["family"], version, float(spec.get("weight", 1.0))))
            metrics["specialists"][spec["name"]] = m
            log.info("trained %s (%s) in %.1fs %s", spec["name"], spec["family"], fit_s, m)
        weights = [e.weight for e in entries]
        held = "replay holdout" if pool is not idx else "holdout"
        each, target, w = _calibration_rows(probas, y[ho], cal_probas, cal_y, len(labels))
        weighed = bool(each)
        if vote_weights == "fitted" and each:
            weights = [round(float(x), 4) for x in fit_weights(each, target, multiple, sample_weight=w)]
            entries = [replace(e, weight=x) for e, x in zip(entries, weights, strict=True)]
        spot = None
        if use_cal and audited is not None:  # the temperature's rows: the audit's only
            spot = np.asarray(audited, dtype=bool)
            if spot.sum() < max(10, len(labels)):
                spot = np.zeros(len(spot), bool)
            each, target, w = _calibration_rows(probas, y[ho], [c[spot] for c in cal_probas], cal_y[spot],
                                                len(labels))
        temperature = fit_temperature(mean_probabilities(each, weights), target, multiple, sample_weight=w) \
            if each else 1.0
        unanimous_t: float | None = None
        split_info: dict[str, Any] = {}
        if calibrate_split == "agreement" and each:
            agree = unanimous(each, multiple)
            unanimous_t, temperature = fit_split_temperature(mean_probabilities(each, weights), target, agree,
                                                             multiple, w, fallback=temperature)
            split_info = {"unanimous_temperature": unanimous_t, "unanimous_rows": int(agree.sum()),
                          "other_rows": int((~agree).sum())}
        project = "project holdout" if spot is None else "project audit"
        on = (f"{project} + {held}" if len(ho) else project) if len(target) > len(ho) else held
        if weighed:
            weights_on = on if spot is None else (f"project holdout + {held}" if len(ho) else "project holdout")
            metrics["vote_weights"] = {"on": weights_on if vote_weights == "fitted" else "recipe",
                                       **{e.name: e.weight for e in entries}}
        if len(target) > len(ho):
            # ECE on the project's held-out corrections: in-sample for the one scalar, a description, not a test
            rows_p = [c if spot is None else c[spot] for c in cal_probas]
            rows_y = cal_y if spot is None else cal_y[spot]
            metrics["calibration"] = {"on": on, "rows": len(target),
                                      "held_out_weight": CALIBRATION_PRIOR_ROWS if len(ho) else 0,
                                      "project_rows": len(rows_y), "temperature": temperature,
                                      **_calibrated(rows_p, weights, rows_y, temperature, multiple, unanimous_t)[2]}
        elif len(ho):
            metrics["calibration"] = {"on": held, "rows": len(ho)}
        if split_info:
            metrics.setdefault("calibration", {}).update(split_info)
        if spot is not None:
            metrics.setdefault("calibration", {})["audit_rows"] = int(np.asarray(audited, dtype=bool).sum())
        if len(ho):
            cal, pred, ece = _calibrated(probas, weights, y[ho], temperature, multiple, unanimous_t)
            metrics["ensemble"] = {**_scores(y[ho], pred, multiple), **ece,
                                   "unanimous_share": float(np.mean([d.unanimous for d in cal]))}
        metrics.update(n_train=len(tr), n_holdout=len(ho))
        gate_info: dict[str, Any] = {}
        if anchor is not None:
            from backend.domain_gate import fit_domain_gate

            gate_info = fit_domain_gate(workdir / "domain", [*texts[~replayed], *domain_texts], list(texts[replayed]),
                                        anchor, seed, **runtime)
        manifest = Manifest(key=key, labels=labels, multiple=multiple, specialists=entries, temperature=temperature,
                            unanimous_temperature=unanimous_t,
                            metrics=metrics, data={"source": data.source, "rows": len(texts), **(data_info or {})},
                            anchor=gate_info)
        ref = store.commit(workdir, manifest, promote=promote)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return ref, manifest
