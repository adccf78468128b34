"""How good is the default bundle a fresh install trains from `samples/`? Trains it from a sample CSV in a fresh
model folder through `ensure_default_bundle` (what `autoannotator serve` does on first start) and scores the
ensemble and each specialist on the TweetEval sentiment validation and test splits. The sample is chosen on
validation; test is reported.

    python bench/default_bundle.py [--sample samples/sentiment-semeval2013-16.csv] [--tweeteval DIR] [--out F]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.serving.bundles import BundleStore
from backend.serving.ensemble import load_ensemble
from backend.settings import Settings
from bench.benchlib import EVAL_DATA
from finetune.bootstrap import SAMPLE_DATA, ensure_default_bundle

TWEETEVAL_NAMES = {"0": "Negative", "1": "Neutral", "2": "Positive"}


def split(folder: Path, name: str) -> tuple[list[str], list[str]]:
    texts = (folder / f"sentiment__{name}_text.txt").read_text(encoding="utf-8").splitlines()
    labels = [TWEETEVAL_NAMES[x.strip()] for x in (folder / f"sentiment__{name}_labels.txt").read_text().splitlines()]
    return texts, labels


def sample_parser(doc: str | None) -> argparse.ArgumentParser:
    """--sample (what is trained on), --tweeteval (where it is scored) and --out."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sample", type=Path, default=SAMPLE_DATA)
    ap.add_argument("--tweeteval", type=Path, default=EVAL_DATA / "tweeteval-sentiment")
    ap.add_argument("--out", type=Path)
    return ap


def main() -> None:
    a = sample_parser(__doc__).parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.from_env(model_dir=Path(tmp))
        t0 = time.perf_counter()
        ref = ensure_default_bundle(settings, a.sample)  # what the first start does
        assert ref is not None
        train_seconds = round(time.perf_counter() - t0, 1)
        manifest = BundleStore(settings.model_dir).manifest(ref)
        result: dict = {"sample": a.sample.name, "rows": manifest.data["rows"], "train_seconds": train_seconds}
        ensemble = load_ensemble(ref, manifest, **settings.runtime)
        for name in ("val", "test"):
            texts, gold = split(a.tweeteval, name)
            y = np.array([ensemble.labels.index(g) for g in gold])
            pred = np.array([d.labels[0] for d in ensemble.predict(texts)])
            scores = {"ensemble": round(float((pred == y).mean()), 4)}
            for entry, probs in zip(manifest.specialists, ensemble.probabilities(texts), strict=True):
                scores[entry.name] = round(float((probs.argmax(1) == y).mean()), 4)
            result[name] = scores
    print(json.dumps(result))
    if a.out:
        with a.out.open("a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
