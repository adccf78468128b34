"""What the domain router costs at prediction time: a gated project bundle against the same bundle ungated.

A gated bundle runs its own specialists, its domain model and its anchor's specialists on every batch. With the
default recipe all the encoder heads read one MiniLM forward pass (the encoder keeps its last batch), so the gate
should add heads and TF-IDF models, not a transformer pass; this measures it.

One run builds, on real data, a shared bundle (the shipped SemEval-2013 sample) and a project bundle (600
financial-news corrections, replay of the sample, 900 more project texts seen, the anchor pinned to the shared
bundle), then times `Ensemble.predict` in interleaved rounds (shared, project ungated, project gated) on batches of
distinct texts, half tweets and half news, so no cache answers and each side of the gate gets work. In-process:
HTTP and JSON cost the same either way (bench/predict_bench.py measures them).

    .venv/bin/python bench/gate_bench.py --out docs/bench-gate.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import EVAL_DATA, REPO, SAMPLE_DATA, load_texts, machine

sys.path.insert(0, str(REPO))

from backend.datasets import LabelledData, load_labelled
from backend.serving.bundles import BundleStore
from backend.serving.ensemble import Ensemble, load_ensemble
from backend.settings import Settings
from finetune.trainer import anchor_for
from finetune.training import ProjectRows, train_bundle

LABELS = ["Positive", "Negative", "Neutral"]
FINANCE = EVAL_DATA / "twitter-financial-news-sentiment"
FINANCE_MAP = {"0": "Negative", "1": "Positive", "2": "Neutral"}


def build(root: Path, settings: Settings) -> tuple[Ensemble, Ensemble, Ensemble]:
    """The shared bundle, the project bundle without its gate, and with it."""
    runtime = settings.runtime
    store = BundleStore(root)
    shared, shared_manifest = train_bundle(store, LABELS, False, load_labelled(SAMPLE_DATA), **runtime)
    news = load_labelled(FINANCE / "sent_valid.csv", label_map=FINANCE_MAP)
    replay = load_labelled(SAMPLE_DATA)
    data = LabelledData(news.texts[:600] + replay.texts, news.labels[:600] + replay.labels, "project corrections")
    replayed = np.r_[np.zeros(600, bool), np.ones(len(replay.texts), bool)]
    key = "project-1-sentiment"
    anchor = anchor_for(shared, shared_manifest, key)  # as the trainer pins a project's first bundle
    ref, manifest = train_bundle(store, LABELS, False, data, promote=False, key=key, project=ProjectRows(
                                 sample_weight=np.where(replayed, 1.0, 10.0), replay_rows=replayed, anchor=anchor,
                                 domain_texts=news.texts[600:1500]), **runtime)
    if not manifest.anchor.get("active"):
        raise SystemExit(f"the gate did not switch on: {manifest.anchor.get('reason', 'no anchor')}")
    gated = load_ensemble(ref, manifest, **runtime)
    alone = Ensemble(manifest, gated.specialists)
    return load_ensemble(shared, shared_manifest, **runtime), alone, gated


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    settings = Settings.from_env()
    with tempfile.TemporaryDirectory() as tmp:
        sides = dict(zip(("shared", "project ungated", "project gated"), build(Path(tmp), settings), strict=True))
        tweets = load_texts()
        news = load_labelled(FINANCE / "sent_train.csv", label_map=FINANCE_MAP).texts
        half = args.batch // 2
        seconds: dict[str, list[float]] = {k: [] for k in sides}
        offset = 0
        for e in sides.values():  # warm-up: load weights, first tokenizer calls
            e.predict(tweets[:8] + news[:8])
        for _ in range(args.rounds):
            for name, ensemble in sides.items():
                batch = tweets[offset:offset + half] + news[offset:offset + half]  # distinct texts each call
                offset += half
                t0 = time.perf_counter()
                ensemble.predict(batch)
                seconds[name].append(time.perf_counter() - t0)
        share = sides["project gated"].project_share(tweets[:500] + news[:500])
    rate = {k: args.batch / statistics.median(v) for k, v in seconds.items()}
    out = {
        "what": "Ensemble.predict, default recipe, in-process; median over interleaved rounds",
        "batch": args.batch, "rounds": args.rounds,
        "texts_per_s": {k: round(v, 1) for k, v in rate.items()},
        "gated_vs_ungated_time": round(rate["project ungated"] / rate["project gated"], 3),
        "project_share_on_500_tweets_500_news": [round(float(share[:500].mean()), 3),
                                                 round(float(share[500:].mean()), 3)],
        "machine": machine(),
    }
    print(json.dumps(out, indent=2))
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
