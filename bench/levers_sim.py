"""Rank continual-learning levers fast, before paying for full `autoannotator evaluate` runs.

This is an approximation, not the harness: it replays the stream protocol (stages, the least confident quarter
reviewed by the oracle, every 5th reviewed item held out, retrain from scratch on replay + corrections, final
re-label) with the default specialists' models fitted directly in sklearn, on MiniLM embeddings read from the
harness's cache and TF-IDF features computed once. A full run takes 20+ minutes here; one variant of this takes
two or three, and its baseline lands within half a point of the real run (docs/benchmarks.md §5). Only the real
harness's figures are quoted as results; this script decides which of them to run.

    .venv/bin/python bench/levers_sim.py financial [variant ...]   # prints one JSON line per variant
    (appends to docs/eval/levers-sim.jsonl with --save)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
from benchlib import EVAL_DATA
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import ComplementNB
from sklearn.neighbors import KNeighborsClassifier

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.decision.voting import (  # noqa: E402
    calibrate,
    expected_calibration_error,
    fit_temperature,
    fit_weights,
)
from backend.evaluation import data as eval_data  # noqa: E402

D = EVAL_DATA
S = D / "semeval2017-task4a" / "Subtask_A__downloaded__twitter"
SOURCE = [Path(f"{S}-{x}-A.tsv") for x in ("2013train 2013dev 2013test 2014sarcasm 2014test 2015train 2015test "
                                           "2016train 2016dev 2016devtest 2016test").split()]
SOURCE_TEST = D / "semeval2017-task4a" / "Subtask_A__gold__SemEval2017-task4-test.subtask-A.english.txt"
FIN_MAP = {"negative": "Bearish", "positive": "Bullish", "neutral": "Neutral", "0": "Bearish", "1": "Bullish",
           "2": "Neutral"}

# name → knobs; "base" is bench/eval_runs.sh as it ran before this session's changes (HUMAN_WEIGHT 10).
VARIANTS: dict[str, dict] = {
    "base": {},
    "backlog": {"backlog": True},  # --review-queue backlog
    "human_weight_3": {"w": 3.0},
    "calibrate_on_replay": {"calib": 0.0},  # every correction trains (train_bundle's replay_rows)
    "project_specialist": {"project": True},  # PROJECT_SPECIALIST_MIN=200
    "project_specialist+calibrate_on_replay": {"project": True, "calib": 0.0},  # the new defaults
    "new_defaults+human_weight_3": {"project": True, "calib": 0.0, "w": 3.0},
    "calibrate_on_replay+human_weight_3": {"calib": 0.0, "w": 3.0},
    "knn_specialist": {"knn": True},
    "reserve_40pct_for_final_models": {"reserve": 0.4},
    "domain_mixture": {"mixture": True},  # P(project|x) mixes adapted and cold-start models
    # The domain router as the service would fit it: replayed source rows against the project's corrections.
    "layers_3+gate_soft": {"project": True, "calib": 0.0, "layers": 3, "mixture": "soft"},
    "layers_3+gate_hard": {"project": True, "calib": 0.0, "layers": 3, "mixture": "hard"},
    # ... against every project text seen so far (a project's tasks reach /predict before anyone reviews them).
    "layers_3+gate_seen_hard": {"project": True, "calib": 0.0, "layers": 3, "mixture": "seen_hard"},
    "layers_3+gate_seen_hard_cut_0.7": {"project": True, "calib": 0.0, "layers": 3, "mixture": "seen_hard",
                                         "cut": 0.7},
    # The temperature: on replayed rows (train_bundle's) against on the frozen held-out corrections.
    "gate_cut_0.7+temp_replay": {"project": True, "calib": 0.0, "layers": 3, "mixture": "seen_hard", "cut": 0.7,
                                 "temp": "replay"},
    "gate_cut_0.7+temp_holdout": {"project": True, "calib": 0.0, "layers": 3, "mixture": "seen_hard", "cut": 0.7,
                                  "temp": "holdout"},
    "gate_cut_0.7+temp_holdout_100": {"project": True, "calib": 0.0, "layers": 3, "mixture": "seen_hard", "cut": 0.7,
                                      "temp": "holdout_100"},
    "gate_cut_0.7+temp_blend_100": {"project": True, "calib": 0.0, "layers": 3, "mixture": "seen_hard", "cut": 0.7,
                                    "temp": "blend_100"},
    "hw3+gate_cut_0.7+temp_blend_100": {"project": True, "calib": 0.0, "layers": 3, "w": 3.0, "mixture": "seen_hard",
                                        "cut": 0.7, "temp": "blend_100"},
    "hw3+gate_cut_0.7+temp_replay": {"project": True, "calib": 0.0, "layers": 3, "w": 3.0, "mixture": "seen_hard",
                                     "cut": 0.7, "temp": "replay"},
    # The voting weights fitted with the temperature on the same rows (train_bundle's VOTE_WEIGHTS=fitted).
    "gate_cut_0.7+temp_blend_100+vote_fitted": {"project": True, "calib": 0.0, "layers": 3, "mixture": "seen_hard",
                                                "cut": 0.7, "temp": "blend_100", "fitw": "blend"},
    # ... on the held-out corrections alone, pulled towards equal weights as much as 100 of them would
    "gate_cut_0.7+temp_blend_100+vote_project": {"project": True, "calib": 0.0, "layers": 3, "mixture": "seen_hard",
                                                 "cut": 0.7, "temp": "blend_100", "fitw": "project"},
    "hw3+gate_cut_0.7+temp_blend_100+vote_project": {"project": True, "calib": 0.0, "layers": 3, "w": 3.0,
                                                     "mixture": "seen_hard", "cut": 0.7, "temp": "blend_100",
                                                     "fitw": "project"},
    "hw3+gate_cut_0.7+temp_blend_100+vote_fitted": {"project": True, "calib": 0.0, "layers": 3, "w": 3.0,
                                                    "mixture": "seen_hard", "cut": 0.7, "temp": "blend_100",
                                                    "fitw": "blend"},
    # A random audit share reviewed whatever its confidence, inside the same 25%: the temperature on it alone.
    "gate_cut_0.7+temp_blend_100+vote_fitted+audit_3pct": {"project": True, "calib": 0.0, "layers": 3,
                                                           "mixture": "seen_hard", "cut": 0.7, "temp": "blend_100",
                                                           "fitw": "blend", "audit": 0.03},
    "hw3+gate_cut_0.7+temp_blend_100+vote_fitted+audit_3pct": {"project": True, "calib": 0.0, "layers": 3, "w": 3.0,
                                                               "mixture": "seen_hard", "cut": 0.7,
                                                               "temp": "blend_100", "fitw": "blend", "audit": 0.03},
    # ... and two temperatures: one where the specialists agree, one where they do not
    "hw3+gate_cut_0.7+temp_blend_100+vote_fitted+split": {"project": True, "calib": 0.0, "layers": 3, "w": 3.0,
                                                          "mixture": "seen_hard", "cut": 0.7, "temp": "blend_100",
                                                          "fitw": "blend", "split": True},
    "hw3+gate_cut_0.7+temp_blend_100+vote_fitted+audit_3pct+split": {
        "project": True, "calib": 0.0, "layers": 3, "w": 3.0, "mixture": "seen_hard", "cut": 0.7, "temp": "blend_100",
        "fitw": "blend", "audit": 0.03, "split": True},
    "hw3+gate_cut_0.7+temp_holdout": {"project": True, "calib": 0.0, "layers": 3, "w": 3.0, "mixture": "seen_hard",
                                      "cut": 0.7, "temp": "holdout"},
    "layers_3+gate_seen_soft": {"project": True, "calib": 0.0, "layers": 3, "mixture": "seen_soft"},
    "layers_3+human_weight_3+gate_seen_hard": {"project": True, "calib": 0.0, "layers": 3, "w": 3.0,
                                               "mixture": "seen_hard"},
    "layers_3+human_weight_3+gate_soft": {"project": True, "calib": 0.0, "layers": 3, "w": 3.0, "mixture": "soft"},
    "layers_3+human_weight_3+gate_hard": {"project": True, "calib": 0.0, "layers": 3, "w": 3.0, "mixture": "hard"},
    "layers_3": {"project": True, "calib": 0.0, "layers": 3},  # minilm heads read the last three layers
    "layers_3+human_weight_3": {"project": True, "calib": 0.0, "layers": 3, "w": 3.0},
    "layers_3+half_stages": {"project": True, "calib": 0.0, "layers": 3, "stages_per": 2},  # retrain twice as often
    "layers_3+quarter_stages": {"project": True, "calib": 0.0, "layers": 3, "stages_per": 4},
    "fitted_weights": {"project": True, "calib": 0.0, "layers": 3, "w": 3.0, "fitw": True},
    "self_training": {"pseudo": 0.5},  # the most confident half of accepted items train with their labels
    "self_training+human_weight_3": {"pseudo": 0.5, "w": 3.0},
}


def load(name: str) -> eval_data.EvalData:
    if name == "tse":
        return eval_data.load(SOURCE, D / "tweet-sentiment-extraction" / "initial__train.csv", None, 0.3, SOURCE_TEST,
                              "text", "sentiment", None, ["negative", "neutral", "positive"], 0, 20000, None, 3000,
                              "2", "1")
    return eval_data.load(SOURCE, D / "twitter-financial-news-sentiment" / "sent_train.csv",
                          D / "twitter-financial-news-sentiment" / "sent_valid.csv", 0.3, SOURCE_TEST, "text",
                          "label", FIN_MAP, ["Bearish", "Bullish", "Neutral"], 0, 20000, None, 3000, "2", "1")


def embeddings(data: eval_data.EvalData, cache_dir: Path, layers: int = 1) -> dict[str, np.ndarray]:
    """Through the encoder specialist and its feature store, so a run here warms a real run."""
    from backend.specialists import registry

    sp = registry.create("encoder", "levers", data.labels, False, {"layers": layers}, cache_dir=str(cache_dir))
    return {p: sp.embeddings(getattr(data, p).texts)
            for p in ("source", "stream", "test", "source_test")}


def simulate(name: str, variant: str, data: eval_data.EvalData, emb: dict[str, np.ndarray], w: float = 10.0,
             share: float = 0.25, holdout_every: int = 5, calib: float = 0.15, backlog: bool = False,
             project: bool = False, knn: bool = False, reserve: float = 0.0, mixture: bool | str = False,
             pseudo: float = 0.0, fitw: bool | str = False, stages_per: int = 1,
             gate_min_auc: float = 0.9, cut: float = 0.5, temp: str | None = None, audit: float = 0.0,
             split: bool = False) -> dict:
    t0 = time.perf_counter()
    index = {x: i for i, x in enumerate(data.labels)}
    k = len(data.labels)
    y = {p: np.array([index[x] for x in getattr(data, p).labels]) for p in emb}
    stage_size = (2000 if name == "tse" else 1000) // stages_per
    word = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b|[!?]",
                           max_features=200_000)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2, max_features=200_000)
    corpus = data.source.texts + data.stream.texts
    word.fit(corpus)
    char.fit(corpus)
    tfidf = {p: sparse.hstack([word.transform(getattr(data, p).texts), char.transform(getattr(data, p).texts)]).tocsr()
             for p in emb}

    def held_out(i: int) -> bool:
        return int(hashlib.md5(str(i).encode()).hexdigest(), 16) % holdout_every == 0

    def audited(i: int) -> bool:  # REVIEW_AUDIT_SHARE: a random spot check, reviewed whatever its confidence
        return audit > 0 and int(hashlib.md5(f"audit:{i}".encode()).hexdigest(), 16) % 10_000 < audit * 10_000

    # temp: the ensemble's temperature, fitted as train_bundle does on 15% of the replayed rows held out ("replay"),
    # or on the frozen held-out corrections ("holdout", the replay until there are 30 of them); None: no scaling.
    cal_rows = np.random.default_rng(7).random(len(y["source"])) < 0.15 if temp else np.zeros(len(y["source"]), bool)

    def fit(own: np.ndarray, extra: np.ndarray | None = None) -> list[tuple[str, object]]:
        rep = np.where(~cal_rows)[0]
        if calib:  # train_bundle before replay_rows: 15% of every row, corrections included, calibrate instead
            rng = np.random.default_rng(len(own))
            rep, own = rep[rng.random(len(rep)) >= calib], own[rng.random(len(own)) >= calib]
        ex = np.array([], dtype=int) if extra is None else extra
        sw = np.r_[np.ones(len(rep)), np.full(len(own), w), np.ones(len(ex))]
        target = np.r_[y["source"][rep], y["stream"][own], final[ex]]
        xe = np.vstack([emb["source"][rep], emb["stream"][own], emb["stream"][ex]])
        xt = sparse.vstack([tfidf["source"][rep], tfidf["stream"][own], tfidf["stream"][ex]])
        models = [("emb", LogisticRegression(C=2.0, max_iter=3000).fit(xe, target, sample_weight=sw)),
                  ("tfidf", LogisticRegression(C=4.0, max_iter=2000, tol=1e-3).fit(xt, target, sample_weight=sw)),
                  ("tfidf", ComplementNB(alpha=0.3).fit(xt, target, sample_weight=sw))]
        if project and len(own) >= 200:
            models.append(("emb", LogisticRegression(C=2.0, max_iter=3000).fit(emb["stream"][own], y["stream"][own])))
        if knn and len(own) >= 50:
            models.append(("emb", KNeighborsClassifier(n_neighbors=10, weights="distance", metric="cosine")
                           .fit(emb["stream"][own], y["stream"][own])))
        return models

    vote = [np.ones(1)]  # the specialists' voting weights; fitted on held-out corrections with fitw
    fitted: dict[int, np.ndarray] = {}  # fitw "blend": each model list's weights, fitted with its temperature

    def mean_proba(models: list, part: str, idx: np.ndarray | None = None, each: bool = False) -> np.ndarray:
        out = []
        for kind, m in models:
            x = (tfidf if kind == "tfidf" else emb)[part]
            x = x if idx is None else x[idx]
            p = np.zeros((x.shape[0], k))
            p[:, m.classes_] = m.predict_proba(x)
            out.append(p)
        if each:
            return np.stack(out)
        wv = fitted.get(id(models), vote[0])
        wv = wv if len(wv) == len(out) else np.ones(len(out))
        return np.tensordot(wv / wv.sum(), np.stack(out), axes=1)

    n = len(y["stream"])
    final = np.full(n, -1)
    conf_at = np.zeros(n)
    cold = models = fit(np.array([], dtype=int))
    domain: list[LogisticRegression | None] = [None]
    gate_auc: list[float] = []

    temps = [1.0, 1.0]  # the project's models, the cold start's

    def temperature(ms: list, held: list[int], spot: list[int] | None = None) -> float:
        """`spot`: the audited rows; the weights are fitted on every held-out row, the temperature on these."""
        if not temp:
            return 1.0
        rows = np.where(cal_rows)[0]
        if temp.startswith("blend") and held and spot is not None and fitw == "blend":
            prior = float(temp.split("_")[1])
            w = np.r_[np.ones(len(held)), np.full(len(rows), prior / len(rows))]
            each = np.concatenate([mean_proba(ms, "stream", np.array(held), each=True),
                                   mean_proba(ms, "source", rows, each=True)], axis=1)
            fitted[id(ms)] = fit_weights(list(each), np.r_[y["stream"][held], y["source"][rows]], sample_weight=w)
            if len(spot) < 10:
                return fit_temperature(mean_proba(ms, "source", rows), y["source"][rows])
            w = np.r_[np.ones(len(spot)), np.full(len(rows), prior / len(rows))]
            mean = np.vstack([mean_proba(ms, "stream", np.array(spot)), mean_proba(ms, "source", rows)])
            return fit_temperature(mean, np.r_[y["stream"][spot], y["source"][rows]], sample_weight=w)
        if temp.startswith("blend") and held:  # the replayed rows count as `prior` held-out corrections' worth
            prior = float(temp.split("_")[1])
            w = np.r_[np.ones(len(held)), np.full(len(rows), prior / len(rows))]
            if fitw == "blend":
                each = np.concatenate([mean_proba(ms, "stream", np.array(held), each=True),
                                       mean_proba(ms, "source", rows, each=True)], axis=1)
                fitted[id(ms)] = fit_weights(list(each), np.r_[y["stream"][held], y["source"][rows]],
                                             sample_weight=w)
            if fitw == "project":
                fitted[id(ms)] = fit_weights(list(mean_proba(ms, "stream", np.array(held), each=True)),
                                             y["stream"][held], prior_rows=prior)
            mean = np.vstack([mean_proba(ms, "stream", np.array(held)), mean_proba(ms, "source", rows)])
            return fit_temperature(mean, np.r_[y["stream"][held], y["source"][rows]], sample_weight=w)
        if fitw in ("blend", "project"):
            fitted[id(ms)] = fit_weights(list(mean_proba(ms, "source", rows, each=True)), y["source"][rows])
        if temp.startswith("holdout") and len(held) >= int(temp.partition("_")[2] or 30):
            return fit_temperature(mean_proba(ms, "stream", np.array(held)), y["stream"][held])
        return fit_temperature(mean_proba(ms, "source", rows), y["source"][rows])

    def unanimous(ms: list, part: str, idx: np.ndarray | None = None) -> np.ndarray:
        votes = mean_proba(ms, part, idx, each=True).argmax(2)
        return np.all(votes == votes[:1], axis=0)

    def scaled(ms: list, part: str, idx: np.ndarray | None, t: float | tuple[float, float]) -> np.ndarray:
        """split: one temperature where the specialists agree, another where they do not."""
        m = mean_proba(ms, part, idx)
        if not isinstance(t, tuple):
            return calibrate(m, t, False)
        return np.where(unanimous(ms, part, idx)[:, None], calibrate(m, t[0], False), calibrate(m, t[1], False))

    def split_temperature(ms: list, held: list[int], spot: list[int] | None, t: float) -> tuple[float, float]:
        prior = float(temp.split("_")[1])
        rows = np.where(cal_rows)[0]
        own = np.array(spot if spot is not None and len(spot) >= 10 else
                       ([] if spot is not None else held), dtype=int)
        m = np.vstack([mean_proba(ms, "stream", own), mean_proba(ms, "source", rows)]) if len(own) else \
            mean_proba(ms, "source", rows)
        yy = np.r_[y["stream"][own], y["source"][rows]]
        w = np.r_[np.ones(len(own)), np.full(len(rows), prior / len(rows))]
        u = np.r_[unanimous(ms, "stream", own) if len(own) else np.zeros(0, bool), unanimous(ms, "source", rows)]
        return tuple(fit_temperature(m[g], yy[g], sample_weight=w[g]) if g.sum() >= 10 else t
                     for g in (u, ~u))  # type: ignore[return-value]

    def proba(part: str, idx: np.ndarray | None = None, at: float | None = None) -> np.ndarray:
        p = scaled(models, part, idx, temps[0])
        if mixture and domain[0] is not None:
            x = emb[part] if idx is None else emb[part][idx]
            d = domain[0].predict_proba(x)[:, 1][:, None]
            if mixture in ("hard", "seen_hard"):
                d = (d >= (cut if at is None else at)).astype(float)
            p = d * p + (1 - d) * calibrate(mean_proba(cold, part, idx), temps[1], False)
        return p

    temps[:] = [temperature(cold, [])] * 2
    source_before = float((proba("source_test").argmax(1) == y["source_test"]).mean())
    hard_test, ece_test, temp_by_stage = [], [], []
    reviewed = np.zeros(n, bool)
    own: list[int] = []
    spot: list[int] = []
    stages = []
    for start in range(0, n, stage_size):
        idx = np.arange(start, min(start + stage_size, n))
        p = proba("stream", idx)
        final[idx] = p.argmax(1)
        conf_at[idx] = p.max(1)
        budget = round(share * (1 - reserve) * len(idx))
        pool = np.where(~reviewed[:idx[-1] + 1])[0] if backlog else idx
        conf = proba("stream", pool).max(1) if backlog else p.max(1)
        spot_now = np.array([i for i in idx if audited(int(i))], dtype=int)
        if len(spot_now):  # the audit comes out of the same budget; the hardest of the rest take what is left
            free = ~np.isin(pool, spot_now)
            pool, conf = pool[free], conf[free]
            budget = max(budget - len(spot_now), 0)
        pick = pool[np.argsort(conf, kind="stable")[:budget]]
        reviewed[pick] = True
        reviewed[spot_now] = True
        spot += [int(i) for i in spot_now]
        own += [int(i) for i in pick if not held_out(int(i))]
        extra = None
        if pseudo:  # accepted, unreviewed items above the pseudo-quantile of their stage's confidence
            seen = np.arange(idx[-1] + 1)
            accepted = seen[~reviewed[seen]]
            extra = accepted[conf_at[accepted] >= np.quantile(conf_at[accepted], 1 - pseudo)]
        models = fit(np.array(own, dtype=int), extra)
        held = sorted({int(i) for i in np.where(reviewed)[0] if held_out(int(i)) and not audited(int(i))} | set(spot))
        if fitw is True and len(held) >= 50:
            vote[0] = fit_vote_weights(mean_proba(models, "stream", np.array(held), each=True), y["stream"][held])
        if mixture is True:
            seen = idx[-1] + 1
            xd = np.vstack([emb["source"][:5000], emb["stream"][:seen]])
            domain[0] = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced").fit(
                xd, np.r_[np.zeros(5000), np.ones(seen)])
        elif mixture:
            # every correction, held-out ones included (only their texts count), or every text seen
            mine = np.arange(idx[-1] + 1) if mixture.startswith("seen") else np.where(reviewed)[0]
            rng = np.random.default_rng(0)
            src = rng.choice(len(y["source"]), min(5000, len(y["source"])), replace=False)
            xd = np.vstack([emb["source"][src], emb["stream"][mine]])
            yd = np.r_[np.zeros(len(src)), np.ones(len(mine))]
            from sklearn.metrics import roc_auc_score
            from sklearn.model_selection import cross_val_predict
            lr = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced")
            auc = roc_auc_score(yd, cross_val_predict(lr, xd, yd, cv=3, method="predict_proba")[:, 1])
            gate_auc.append(round(float(auc), 4))
            domain[0] = lr.fit(xd, yd) if auc >= gate_min_auc else None
        temps[0] = temperature(models, held, spot if audit else None)
        if split:
            temps[0] = split_temperature(models, held, spot if audit else None, temps[0])
        pt = proba("test")
        stages.append(round(float((pt.argmax(1) == y["test"]).mean()), 4))
        hard_test.append(round(float((pt.max(1) < 0.9).mean()), 4))
        ece_test.append(round(expected_calibration_error(pt.max(1), pt.argmax(1) == y["test"]), 4))
        temp_by_stage.append([round(t, 3) for t in temps[0]] if isinstance(temps[0], tuple) else round(temps[0], 3))
    if reserve:
        left = int(share * n) - int(reviewed.sum())
        pool = np.where(~reviewed)[0]
        reviewed[pool[np.argsort(proba("stream", pool).max(1), kind="stable")[:left]]] = True
    todo = np.where(~reviewed)[0]
    final[todo] = proba("stream", todo).argmax(1)
    final[reviewed] = y["stream"][reviewed]
    test = proba("test")
    auto = np.argsort(test.max(1))[int(share * len(test)):]
    source_after = float((proba("source_test").argmax(1) == y["source_test"]).mean())
    cuts = {}
    if mixture in ("hard", "seen_hard") and domain[0] is not None:
        # The final models read at other cut-offs (the stages were routed at `cut`): the in-domain / source trade.
        for c in (0.5, 0.6, 0.7, 0.8, 0.9):
            fc = final.copy()
            fc[todo] = proba("stream", todo, c).argmax(1)
            src = float((proba("source_test", at=c).argmax(1) == y["source_test"]).mean())
            cuts[str(c)] = {
                "final_accuracy": round(float((fc == y["stream"]).mean()), 4),
                "test_accuracy": round(float((proba("test", at=c).argmax(1) == y["test"]).mean()), 4),
                "source_test_change_points": round(100 * (src - source_before), 2)}
    return {"stream": name, "variant": variant, "final_accuracy": round(float((final == y["stream"]).mean()), 4),
            "reviewed_share": round(float(reviewed.mean()), 4), "test_accuracy": stages[-1],
            "test_auto_accuracy_75pct": round(float((test.argmax(1)[auto] == y["test"][auto]).mean()), 4),
            "source_test_change_points": round(100 * (source_after - source_before), 2), "test_by_stage": stages,
            **({"gate_auc": gate_auc} if gate_auc else {}),
            **({"test_hard_below_0.9": hard_test, "test_ece": ece_test, "temperature": temp_by_stage} if temp else {}),
            **({"at_cut": cuts} if cuts else {}),
            "seconds": round(time.perf_counter() - t0)}


def fit_vote_weights(each: np.ndarray, y: np.ndarray, pull: float = 1.0) -> np.ndarray:
    """Weights on the simplex (softmax of free parameters) that minimise held-out log loss, pulled towards equal."""
    from scipy.optimize import minimize

    m = each.shape[0]

    def loss(theta: np.ndarray) -> float:
        w = np.exp(theta - theta.max())
        w /= w.sum()
        p = np.tensordot(w, each, axes=1)[np.arange(len(y)), y]
        return float(-np.mean(np.log(np.clip(p, 1e-9, 1))) + pull * np.mean(theta ** 2) / len(y) ** 0.5)

    theta = minimize(loss, np.zeros(m), method="Nelder-Mead").x
    w = np.exp(theta - theta.max())
    return w / w.sum() * m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stream", choices=("financial", "tse"))
    ap.add_argument("variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--cache-dir", default="/tmp/autoannotator-eval-cache")
    ap.add_argument("--save", action="store_true", help="append each result to docs/eval/levers-sim.jsonl")
    args = ap.parse_args()
    data = load(args.stream)
    emb: dict[int, dict[str, np.ndarray]] = {}
    for v in args.variants:
        knobs = dict(VARIANTS[v])
        layers = knobs.pop("layers", 1)
        if layers not in emb:
            emb[layers] = embeddings(data, Path(args.cache_dir), layers)
        r = simulate(args.stream, v, data, emb[layers], **knobs)
        print(json.dumps(r), flush=True)
        if args.save:
            with (ROOT / "docs" / "eval" / "levers-sim.jsonl").open("a") as fh:
                fh.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
