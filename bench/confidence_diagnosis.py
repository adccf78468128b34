"""Why the hard share moves: calibration or discrimination, stage by stage, on a kept evaluation run.

The share of unseen items under the review threshold can rise for two reasons: the temperature the stage fitted
softens the typical item more than its errors ask (a calibration fault, which a truer temperature would undo), or
the models' confidence ranks right and wrong answers no better than before (discrimination, which no temperature
changes). This reloads every bundle a run promoted, scores the unseen test set as the harness did, and prints both
for each: the share under the threshold at the stage's own temperature and at the temperature that is truest on
the test set itself (an oracle no live project has), and the AUROC of confidence for being right.

    KEEP_WORK=1 bench/eval_runs.sh offensive-vote
    .venv/bin/python bench/confidence_diagnosis.py offensive docs/eval/offensive-vote/work/run [--save FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from benchlib import EVAL_DATA
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backend.decision.voting import expected_calibration_error  # noqa: E402
from backend.evaluation import data as eval_data  # noqa: E402
from backend.evaluation.stream import CONTROL, PROJECT  # noqa: E402
from backend.labelstudio.config import project_bundle_key  # noqa: E402
from backend.serving.bundles import BundleStore  # noqa: E402
from backend.serving.ensemble import load_ensemble  # noqa: E402
from backend.settings import Settings  # noqa: E402

D = EVAL_DATA
S = D / "semeval2017-task4a" / "Subtask_A__downloaded__twitter"
SOURCE = [Path(f"{S}-{x}-A.tsv") for x in ("2013train 2013dev 2013test 2014sarcasm 2014test 2015train 2015test "
                                           "2016train 2016dev 2016devtest 2016test").split()]
FIN_MAP = {"negative": "Bearish", "positive": "Bullish", "neutral": "Neutral", "0": "Bearish", "1": "Bullish",
           "2": "Neutral"}
GRID = np.round(np.arange(0.3, 2.51, 0.05), 2)


def test_split(name: str) -> eval_data.Split:
    """The unseen test set exactly as bench/eval_runs.sh loads it (same files, split, seed and caps)."""
    if name == "offensive":
        off = D / "tweeteval-offensive"
        data = eval_data.load([off / "offensive__val_text.txt"], off / "offensive__train_text.txt",
                              off / "offensive__test_text.txt", 0.3, None, "text", "label", {"0": "not-offensive",
                              "1": "offensive"}, ["not-offensive", "offensive"])
    elif name == "tse":
        data = eval_data.load(SOURCE, D / "tweet-sentiment-extraction" / "initial__train.csv", None, 0.3, None,
                              "text", "sentiment", None, ["negative", "neutral", "positive"], source_rows=20000,
                              test_rows=3000, source_text_col="2", source_label_col="1")
    elif name == "financial":
        fin = D / "twitter-financial-news-sentiment"
        data = eval_data.load(SOURCE, fin / "sent_train.csv", fin / "sent_valid.csv", 0.3, None, "text", "label",
                              FIN_MAP, ["Bearish", "Bullish", "Neutral"], source_rows=20000, test_rows=3000,
                              source_text_col="2", source_label_col="1")
    else:
        raise SystemExit(f"unknown data set {name!r}: offensive, tse or financial")
    return data.test


def _at(ensemble, t: float, texts: list[str], probas: list[np.ndarray], share: np.ndarray | None,
        anchor: list | None, gold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Confidence and rightness of the served decisions (gate included) with the project side at temperature t.
    The anchor's decisions do not move with t: computed once by the caller, not once per temperature."""
    served = ensemble.manifest
    ensemble.manifest = replace(served, temperature=float(t), unanimous_temperature=None)
    try:
        ds = ensemble.decisions(texts, probas, share=share, anchor=anchor)
    finally:
        ensemble.manifest = served
    conf = np.array([d.confidence for d in ds])
    return conf, np.array([served.labels[d.labels[0]] for d in ds], dtype=object) == gold


def diagnose(run_dir: Path, test: eval_data.Split, threshold: float) -> list[dict]:
    settings = Settings.from_env({}, model_dir=run_dir / "models")
    runtime = dict(settings.runtime)
    bundles = BundleStore(run_dir / "models")
    key = project_bundle_key(PROJECT, CONTROL)
    versions = [h["version"] for h in bundles.history(key) if h.get("action") == "promote"]
    gold = np.array(test.labels, dtype=object)
    rows = []
    for stage, version in enumerate(versions, start=1):
        ref = bundles.ref(key, version)
        ensemble = load_ensemble(ref, bundles.manifest(ref), **runtime)
        probas = ensemble.probabilities(test.texts)
        share = ensemble.project_share(test.texts) if ensemble.routed else None
        served = ensemble.manifest
        anchor = ensemble.anchor_decisions(test.texts) if ensemble.routed else None
        args = (test.texts, probas, share, anchor, gold)
        conf, right = _at(ensemble, served.temperature, *args)
        eces = [expected_calibration_error(*_at(ensemble, t, *args)) for t in GRID]
        best = float(GRID[int(np.argmin(eces))])
        oc, _ = _at(ensemble, best, *args)
        rows.append({"stage": stage, "version": version, "accuracy": round(float(right.mean()), 4),
                     "temperature": round(served.temperature, 3), "mean_confidence": round(float(conf.mean()), 4),
                     "ece": round(expected_calibration_error(conf, right), 4),
                     "below_threshold": round(float((conf < threshold).mean()), 4),
                     "oracle_temperature": best, "oracle_ece": round(float(min(eces)), 4),
                     "oracle_below_threshold": round(float((oc < threshold).mean()), 4),
                     "auroc": round(float(roc_auc_score(right, conf)), 4) if 0 < right.mean() < 1 else None,
                     "project_share": None if share is None else round(float(np.mean(share)), 3)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", choices=["offensive", "tse", "financial"])
    ap.add_argument("run_dir", type=Path, help="DIR/work/run of an evaluation run kept with --keep-work")
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--save", type=Path, help="append the rows as one JSON line to this file")
    args = ap.parse_args()
    rows = diagnose(args.run_dir, test_split(args.data), args.threshold)
    cols = ["stage", "accuracy", "temperature", "mean_confidence", "ece", "below_threshold", "oracle_temperature",
            "oracle_ece", "oracle_below_threshold", "auroc"]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r[c]) for c in cols))
    if args.save:
        with args.save.open("a") as f:
            f.write(json.dumps({"data": args.data, "run": str(args.run_dir), "threshold": args.threshold,
                                "stages": rows}) + "\n")


if __name__ == "__main__":
    main()
