"""Build a bundle from labelled data in three steps: `fit` each specialist on the training share, `calibrate` the
ensemble (vote weights, temperature) on held-out rows and measure it, `commit` the versioned result (with the
domain router of a project bundle). `train_bundle` runs the three; a training stage, `autoannotator train` and the
first-run default bundle use it."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split

from backend.datasets import LabelledData
from backend.decision.voting import (
    decide,
    expected_calibration_error,
    fit_temperature,
    fit_weights,
    mean_probabilities,
)
from backend.labelstudio.config import bundle_key, normalise_label
from backend.serving.bundles import BundleRef, BundleStore, Manifest, SpecialistEntry
from backend.specialists import registry

log = logging.getLogger(__name__)

DEFAULT_SPECIALISTS: list[dict[str, Any]] = [
    {"name": "tfidf-lr", "family": "tfidf", "params": {"classifier": "lr"}},
    # The last three layers: MiniLM's last layer alone is tuned for similarity, not tone.
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
#: decides while a project has few, the project's once it has many: a temperature fitted on a few dozen corrections
#: alone overstates how sure the ensemble may be.
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


@dataclass(frozen=True)
class ProjectRows:
    """What a project's training stage knows beyond the labelled rows.

    `sample_weight` weighs rows (in-domain corrections above replayed source data). `replay_rows` (a boolean mask)
    marks rows replayed from earlier data: the calibration holdout is drawn from them, so every correction trains,
    and a specialist with params `rows: project` trains on the other rows only. `fresh_rows` marks the corrections
    the served weights have not trained on: a specialist with params `rows: fresh` and `max_rows` takes those first.
    `calibration` holds the project's frozen held-out corrections (never trained on): they join the held-out rows
    in fitting the vote weights and the temperature, the latter weighing CALIBRATION_PRIOR_ROWS rows in all, and
    the same rows judge the candidate at the promotion gate. `audited` marks the `calibration` rows of the random
    audit (REVIEW_AUDIT_SHARE): the temperature is fitted on those, not on the rows the router picked for being
    unsure. `anchor` (`finetune.trainer.anchor_for`) fits the domain router on the project's rows and
    `domain_texts` (its task texts seen by /predict) against the replayed rows.
    """

    sample_weight: np.ndarray | None = None
    replay_rows: np.ndarray | None = None
    fresh_rows: np.ndarray | None = None
    calibration: LabelledData | None = None
    audited: np.ndarray | None = None
    anchor: dict[str, Any] | None = None
    domain_texts: Sequence[str] = ()


NO_PROJECT = ProjectRows()


@dataclass
class Fitted:
    """Specialists fitted and saved in `workdir`, with their probabilities on the rows calibration reads."""

    key: str
    labels: list[str]
    multiple: bool
    workdir: Path
    texts: np.ndarray
    replayed: np.ndarray
    n_train: int
    held: str  # where the holdout came from: "replay holdout" or "holdout"
    y_ho: np.ndarray
    cal_y: np.ndarray | None
    entries: list[SpecialistEntry] = field(default_factory=list)
    probas: list[np.ndarray] = field(default_factory=list)  # on the held-out rows
    cal_probas: list[np.ndarray] = field(default_factory=list)  # on the project's held-out corrections
    metrics: dict[str, Any] = field(default_factory=lambda: {"specialists": {}})


@dataclass
class Calibration:
    entries: list[SpecialistEntry]  # with their vote weights
    temperature: float
    metrics: dict[str, Any]


def fit(store: BundleStore, labels: Sequence[str], multiple: bool, data: LabelledData,
        specialists: Sequence[dict[str, Any]] | None = None, key: str | None = None, project: ProjectRows = NO_PROJECT,
        holdout: float = 0.15, seed: int = 0, **runtime: Any) -> Fitted:
    """Hold out a share (of the replayed rows when there are enough), fit every specialist on the rest in a new
    work directory, and keep each one's probabilities on the held-out rows and the project's corrections."""
    labels = list(labels)
    specs = list(specialists or DEFAULT_SPECIALISTS)
    y = encode_targets(data, labels, multiple)
    texts = np.array(data.texts, dtype=object)
    idx = np.arange(len(texts))
    replayed = np.zeros(len(idx), bool) if project.replay_rows is None else np.asarray(project.replay_rows, bool)
    # Too few replayed rows to calibrate on (or none marked): hold out from all rows.
    pool = idx[replayed] if int(replayed.sum() * holdout) >= max(10, len(labels)) else idx
    n_hold = int(len(pool) * holdout)
    if n_hold >= max(10, len(labels)):
        yp = y[pool]
        strat = None if multiple or np.min(np.bincount(yp, minlength=len(labels))) < 2 else yp
        _, ho = train_test_split(pool, test_size=n_hold, random_state=seed, stratify=strat)
        tr = np.setdiff1d(idx, ho)
    else:
        tr, ho = idx, idx[:0]
    weights_all = np.ones(len(texts)) if project.sample_weight is None else np.asarray(project.sample_weight, float)
    cal = project.calibration if project.calibration is not None and len(project.calibration.texts) else None
    out = Fitted(key=key or bundle_key(labels, multiple), labels=labels, multiple=multiple, workdir=Path(),
                 texts=texts, replayed=replayed, n_train=len(tr),
                 held="replay holdout" if pool is not idx else "holdout",
                 y_ho=y[ho], cal_y=encode_targets(cal, labels, multiple) if cal is not None else None)
    out.workdir = store.new_workdir(out.key)
    try:
        for spec in specs:
            t0 = time.perf_counter()
            params = spec.get("params") or {}
            sp = registry.create(spec["family"], spec["name"], labels, multiple, spec.get("params"), **runtime)
            rows = tr
            if params.get("rows") == "project":
                rows = tr[~replayed[tr]]
                if not len(rows):
                    raise ValueError(f"specialist {spec['name']!r} trains on project rows only, and there are none")
            cap = int(params.get("max_rows") or 0)
            if cap:
                rows = capped_rows(rows, replayed, cap, seed,
                                   project.fresh_rows if params.get("rows") == "fresh" else None)
            w = None if project.sample_weight is None else weights_all[rows]
            if w is not None and rows is not tr:  # mean 1 on its own rows: they rank there, not set regularisation
                w = w / max(float(np.mean(w)), 1e-12)
            sp.fit(list(texts[rows]), y[rows], w)
            fit_s = time.perf_counter() - t0
            m: dict[str, Any] = {"fit_seconds": round(fit_s, 2)}
            if len(ho):
                p = sp.predict_proba(list(texts[ho]))
                out.probas.append(p)
                pred = (p >= 0.5).astype(int) if multiple else p.argmax(1)
                m.update(_scores(y[ho], pred, multiple))
            if cal is not None:
                out.cal_probas.append(sp.predict_proba(list(cal.texts)))
            version = sp.save(out.workdir / "specialists" / spec["name"])
            out.entries.append(SpecialistEntry(spec["name"], spec["family"], version, float(spec.get("weight", 1.0))))
            out.metrics["specialists"][spec["name"]] = m
            log.info("trained %s (%s) in %.1fs %s", spec["name"], spec["family"], fit_s, m)
    except BaseException:
        shutil.rmtree(out.workdir, ignore_errors=True)
        raise
    return out


def calibrate(fitted: Fitted, audited: np.ndarray | None = None, vote_weights: str = "fitted") -> Calibration:
    """Each specialist's vote weight ("fitted" on the held-out rows: the vote leans on what is right on the project's
    texts; "recipe": the recipe's), then the temperature, then the ensemble's held-out figures.

    Fitted weights move answers, so the promotion gate's rows have seen a few fitted numbers; GATE_MARGIN absorbs
    that. With `audited`, the temperature is fitted on the audited corrections beside the held-out replayed rows
    (on the replayed rows alone while fewer than max(10, labels) are audited); the weights on every held-out row.
    """
    f, multiple, n_labels = fitted, fitted.multiple, len(fitted.labels)
    metrics: dict[str, Any] = {}
    entries, weights = list(f.entries), [e.weight for e in f.entries]
    each, target, w = _calibration_rows(f.probas, f.y_ho, f.cal_probas, f.cal_y, n_labels)
    weighed = bool(each)
    if vote_weights == "fitted" and each:
        weights = [round(float(x), 4) for x in fit_weights(each, target, multiple, sample_weight=w)]
        entries = [replace(e, weight=x) for e, x in zip(entries, weights, strict=True)]
    spot = None
    if f.cal_y is not None and audited is not None:  # the temperature's rows: the audit's only
        spot = np.asarray(audited, dtype=bool)
        if spot.sum() < max(10, n_labels):
            spot = np.zeros(len(spot), bool)
        each, target, w = _calibration_rows(f.probas, f.y_ho, [c[spot] for c in f.cal_probas], f.cal_y[spot],
                                            n_labels)
    temperature = fit_temperature(mean_probabilities(each, weights), target, multiple, sample_weight=w) \
        if each else 1.0
    n_ho, held = len(f.y_ho), f.held
    project = "project holdout" if spot is None else "project audit"
    on = (f"{project} + {held}" if n_ho else project) if len(target) > n_ho else held
    if weighed:
        weights_on = on if spot is None else (f"project holdout + {held}" if n_ho else "project holdout")
        metrics["vote_weights"] = {"on": weights_on if vote_weights == "fitted" else "recipe",
                                   **{e.name: e.weight for e in entries}}
    if len(target) > n_ho:
        # ECE on the project's held-out corrections: in-sample for the one scalar, a description, not a test
        assert f.cal_y is not None
        rows_p = [c if spot is None else c[spot] for c in f.cal_probas]
        rows_y = f.cal_y if spot is None else f.cal_y[spot]
        metrics["calibration"] = {"on": on, "rows": len(target),
                                  "held_out_weight": CALIBRATION_PRIOR_ROWS if n_ho else 0,
                                  "project_rows": len(rows_y), "temperature": temperature,
                                  **_calibrated(rows_p, weights, rows_y, temperature, multiple)[2]}
    elif n_ho:
        metrics["calibration"] = {"on": held, "rows": n_ho}
    if spot is not None:
        metrics.setdefault("calibration", {})["audit_rows"] = int(np.asarray(audited, dtype=bool).sum())
    if n_ho:
        cal, pred, ece = _calibrated(f.probas, weights, f.y_ho, temperature, multiple)
        metrics["ensemble"] = {**_scores(f.y_ho, pred, multiple), **ece,
                               "unanimous_share": float(np.mean([d.unanimous for d in cal]))}
    return Calibration(entries, temperature, metrics)


def commit(store: BundleStore, fitted: Fitted, calibration: Calibration, data: LabelledData,
           data_info: dict[str, Any] | None = None, project: ProjectRows = NO_PROJECT, promote: bool = True,
           seed: int = 0, **runtime: Any) -> tuple[BundleRef, Manifest]:
    """Fit a project bundle's domain router (with an anchor), write the manifest, and commit the version."""
    f = fitted
    try:
        router: dict[str, Any] = {}
        if project.anchor is not None:
            from backend.specialists.domain import fit_domain_model

            router = fit_domain_model(f.workdir / "domain", [*f.texts[~f.replayed], *project.domain_texts],
                                      list(f.texts[f.replayed]), project.anchor, seed, **runtime)
        metrics = {**f.metrics, **calibration.metrics, "n_train": f.n_train, "n_holdout": len(f.y_ho)}
        manifest = Manifest(key=f.key, labels=f.labels, multiple=f.multiple, specialists=calibration.entries,
                            temperature=calibration.temperature, metrics=metrics,
                            data={"source": data.source, "rows": len(f.texts), **(data_info or {})}, anchor=router)
        ref = store.commit(f.workdir, manifest, promote=promote)
    except BaseException:
        shutil.rmtree(f.workdir, ignore_errors=True)
        raise
    return ref, manifest


def train_bundle(store: BundleStore, labels: Sequence[str], multiple: bool, data: LabelledData,
                 specialists: Sequence[dict[str, Any]] | None = None, *, key: str | None = None, promote: bool = True,
                 data_info: dict[str, Any] | None = None, project: ProjectRows = NO_PROJECT,
                 vote_weights: str = "fitted", holdout: float = 0.15, seed: int = 0, **runtime: Any
                 ) -> tuple[BundleRef, Manifest]:
    """Fit, calibrate and commit (and promote) a bundle. `key` overrides the label-set key (project bundles);
    `data_info` is recorded in the manifest as provenance; `runtime` is the process's (device, dtype, …)."""
    fitted = fit(store, labels, multiple, data, specialists, key, project, holdout, seed, **runtime)
    try:
        calibration = calibrate(fitted, project.audited, vote_weights)
    except BaseException:
        shutil.rmtree(fitted.workdir, ignore_errors=True)
        raise
    return commit(store, fitted, calibration, data, data_info, project, promote, seed, **runtime)
