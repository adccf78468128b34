"""Hashed n-grams against a fitted vocabulary: do the TF-IDF specialists keep their accuracy when their features
become cacheable? Trains each TF-IDF specialist of the default bundle both ways on the same sample and scores them
on the TweetEval sentiment validation and test splits, with their cold transform speed side by side. Then counts
the test tweets' character n-grams with scikit-learn's HashingVectorizer and with `CharGrams`, alternated in
batches of 512, and checks that the counts are the same.

    python bench/tfidf_hashing.py [--sample samples/sentiment-semeval2013-16.csv] [--out docs/bench-tfidf-hashing.json]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer, TfidfVectorizer
from sklearn.pipeline import FeatureUnion, Pipeline

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.datasets import load_labelled
from backend.specialists import registry
from backend.specialists.char_grams import CharGrams
from bench.benchlib import machine
from bench.default_bundle import sample_parser, split
from finetune.training import encode_targets

LABELS = ["Negative", "Neutral", "Positive"]
MEMBERS = {"tfidf-lr": {"classifier": "lr"}, "tfidf-nb": {"classifier": "nb", "word_ngrams": [1, 3], "char": False}}


def fitted_vocabulary(params: dict, clf: object) -> Pipeline:
    """The same specialist with TfidfVectorizer's fitted vocabulary (what bundles held before hashing)."""
    word, char = tuple(params.get("word_ngrams", (1, 2))), tuple(params.get("char_ngrams", (2, 5)))
    parts = [("word", TfidfVectorizer(ngram_range=word, sublinear_tf=True, min_df=1, max_features=200_000,
                                      lowercase=True, token_pattern=r"(?u)\b\w+\b|[!?]"))]
    if params.get("char", True):
        parts.append(("char", TfidfVectorizer(analyzer="char_wb", ngram_range=char, sublinear_tf=True, min_df=2,
                                              max_features=200_000, lowercase=True)))
    return Pipeline([("features", FeatureUnion(parts)), ("clf", clf)])


def main() -> None:
    a = sample_parser(__doc__).parse_args()
    data = load_labelled(a.sample)
    y = encode_targets(data, LABELS, False)
    splits = {name: split(a.tweeteval, name) for name in ("val", "test")}
    result: dict = {"machine": machine(), "sample": a.sample.name, "rows": len(data.texts), "members": {}}
    for name, params in MEMBERS.items():
        hashed = registry.create("tfidf", name, LABELS, False, params)  # no feature store: every text computed
        hashed.fit(data.texts, y)
        fitted = fitted_vocabulary(params, hashed._classifier()).fit(data.texts, y)
        row: dict = {}
        for part, (texts, gold) in splits.items():
            truth = np.array([LABELS.index(g) for g in gold])
            t0 = time.perf_counter()
            ph = hashed.predict_proba(texts).argmax(1)
            th = time.perf_counter() - t0
            t0 = time.perf_counter()
            pf = fitted.predict_proba(texts).argmax(1)
            tf = time.perf_counter() - t0
            row[part] = {"hashed": round(float((ph == truth).mean()), 4),
                         "fitted_vocabulary": round(float((pf == truth).mean()), 4),
                         "agreement": round(float((ph == pf).mean()), 4),
                         "hashed_texts_per_s": round(len(texts) / th), "fitted_texts_per_s": round(len(texts) / tf)}
        result["members"][name] = row
        print(name, json.dumps(row), flush=True)
    result["char_grams"] = char_gram_speed(splits["test"][0])
    print("char n-grams", json.dumps(result["char_grams"]), flush=True)
    if a.out:
        a.out.write_text(json.dumps(result, indent=1) + "\n")


def char_gram_speed(texts: list[str], batch: int = 512, rounds: int = 5) -> dict:
    """ms per batch of tweets for scikit-learn's char_wb counts and `CharGrams`' (best of `rounds`, alternated)."""
    reference = HashingVectorizer(analyzer="char_wb", ngram_range=(2, 5), n_features=2**28, alternate_sign=False,
                                  norm=None, lowercase=True, dtype=np.float32)
    ways = {"scikit_learn": reference.transform, "char_grams": CharGrams((2, 5), 2**28).transform}
    batches = [texts[i:i + batch] for i in range(0, len(texts) - batch + 1, batch)]
    same = all((abs(ways["scikit_learn"](b) - ways["char_grams"](b)) != 0).nnz == 0 for b in batches)
    best = {name: float("inf") for name in ways}
    for r in range(rounds):
        for name in (list(ways) if r % 2 == 0 else list(reversed(ways))):
            t0 = time.perf_counter()
            for b in batches:
                ways[name](b)
            best[name] = min(best[name], (time.perf_counter() - t0) / len(batches))
    return {"batch": batch, "batches": len(batches), "same_counts": same,
            **{f"{name}_ms": round(t * 1000, 1) for name, t in best.items()},
            "speedup": round(best["scikit_learn"] / best["char_grams"], 2)}


if __name__ == "__main__":
    main()
