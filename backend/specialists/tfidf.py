"""TF-IDF word + character n-grams with a linear classifier: fast (≈1 ms a text), robust to slang
and typos through the character grams, and a lexical view that disagrees usefully with encoders.

The n-grams are hashed (no vocabulary is fitted), so what is counted in a text depends on the text alone and is
kept in the feature store: a known text costs only the bundle's own part, which is the columns it keeps (min_df,
max_features, as TfidfVectorizer chooses them) with their idf, and the classifier. Bundles saved with a fitted
TfidfVectorizer pipeline still load and serve as they were trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.naive_bayes import ComplementNB

from backend.specialists.base import Specialist, pad_columns
from backend.specialists.char_grams import CharGrams
from backend.specialists.feature_store import runtime_store

_WEIGHTS = "tfidf.joblib"
_LEGACY_WEIGHTS = "pipeline.joblib"
_HASH_WIDTH = 2**28  # per block: two n-grams of a million share a bucket about once in 500
_TABLE_BITS = 21  # an 8 MB lookup table per TF-IDF specialist, built when it first serves
_TABLE_MASK = (1 << _TABLE_BITS) - 1
_TOKENS = r"(?u)\b\w+\b|[!?]"


def _columns_first(clf: Any) -> None:
    """Lay a linear classifier's (classes, features) weights out column by column. Predicting is `rows @ W.T`,
    and scipy copies a W.T that is not contiguous on every call: for one tweet that copy of a few MB was most of
    the classifier's time. The values, and so the probabilities, are the same."""
    for est in getattr(clf, "estimators_", [clf]):
        for attr in ("coef_", "feature_log_prob_"):
            w = getattr(est, attr, None)
            if isinstance(w, np.ndarray) and w.ndim == 2:
                setattr(est, attr, np.asfortranarray(w))


class HashedTfidf:
    """The fitted part of TF-IDF over hashed counts: per block, the columns kept and their idf (sublinear tf,
    smooth idf, each block's part of a row l2-normalised: what a FeatureUnion of TfidfVectorizers computes)."""

    def __init__(self, blocks: Sequence[tuple[int, int]]):
        self.blocks = list(blocks)  # (min_df, max_features) per block of _HASH_WIDTH columns
        self.columns = np.zeros(0, dtype=np.int32)
        self.idf = np.zeros(0)
        self._table: np.ndarray | None = None  # kept column by low hash bits
        self._shared = np.zeros(0, dtype=np.int32)

    def fit(self, counts: sparse.csr_matrix) -> HashedTfidf:
        counts = sparse.csr_matrix(counts)
        n = counts.shape[0]
        present, df = np.unique(counts.indices, return_counts=True)  # a row holds each column once
        tf = np.bincount(np.searchsorted(present, counts.indices), weights=counts.data, minlength=len(present))
        keep = []
        for b, (min_df, max_features) in enumerate(self.blocks):
            inside = (present >= b * _HASH_WIDTH) & (present < (b + 1) * _HASH_WIDTH) & (df >= max(min_df, 1))
            chosen = np.flatnonzero(inside)
            if len(chosen) > max_features:
                chosen = np.sort(chosen[np.argsort(-tf[chosen], kind="stable")[:max_features]])
            keep.append(chosen)
        chosen = np.concatenate(keep)
        self.columns = present[chosen].astype(np.int32)  # < 2**31: blocks of 2**28
        self.idf = np.log((1 + n) / (1 + df[chosen])) + 1
        self._table = None
        return self

    def transform(self, counts: sparse.csr_matrix) -> sparse.csr_matrix:
        counts = sparse.csr_matrix(counts)
        n, k = counts.shape[0], len(self.columns)
        if k == 0:
            return sparse.csr_matrix((n, 0))
        hashed = counts.indices.astype(np.int32, copy=False)
        pos = self._positions(hashed)
        hit = pos >= 0
        # The kept entries stay in their rows' order, so the rows' bounds are counts of kept entries: the matrix is
        # built as CSR directly, without sorting a COO matrix into one (most of the time for 10,000 known tweets).
        kept = np.zeros(len(hit) + 1, dtype=np.int64)
        np.cumsum(hit, out=kept[1:])
        indptr = kept[counts.indptr]
        cols = pos[hit]
        data = (1 + np.log(counts.data[hit].astype(np.float64))) * self.idf[cols]  # fits as float64
        # Each block is l2-normalised on its own, as each vectorizer of a FeatureUnion is.
        cell = np.repeat(np.arange(n) * len(self.blocks), np.diff(indptr)) + hashed[hit] // _HASH_WIDTH
        norms = np.sqrt(np.bincount(cell, weights=data**2, minlength=n * len(self.blocks)))
        data /= norms[cell]
        return sparse.csr_matrix((data, cols.astype(np.int32), indptr), shape=(n, k))

    def _positions(self, hashed: np.ndarray) -> np.ndarray:
        """Each hashed column's position among the kept ones, or -1. The kept columns are hashes, so their low
        bits index a table directly; the few kept columns that share low bits with another are binary-searched."""
        if self._table is None:
            table = np.full(1 << _TABLE_BITS, -1, dtype=np.int32)
            table[self.columns & _TABLE_MASK] = np.arange(len(self.columns), dtype=np.int32)
            shared = table[self.columns & _TABLE_MASK] != np.arange(len(self.columns))
            self._table, self._shared = table, np.sort(self.columns[shared])
        pos = self._table[hashed & _TABLE_MASK].astype(np.int64)
        miss = np.flatnonzero((pos < 0) | (self.columns[np.maximum(pos, 0)] != hashed))
        pos[miss] = -1
        if len(self._shared) and len(miss):
            at = np.minimum(np.searchsorted(self._shared, hashed[miss]), len(self._shared) - 1)
            found = self._shared[at] == hashed[miss]
            pos[miss[found]] = np.searchsorted(self.columns, hashed[miss[found]])
        return pos

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_table": None, "_shared": None}  # rebuilt on first use, not saved

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"_table": None, "_shared": None, **state})
        self.columns = np.asarray(self.columns, dtype=np.int32)


class TfidfSpecialist(Specialist):
    """params: classifier "lr" (default) or "nb", C, word_ngrams, char_ngrams, max_features."""

    family = "tfidf"

    def __init__(self, name: str, labels: Sequence[str], multiple: bool, params: dict[str, Any] | None = None,
                 **runtime: Any):
        super().__init__(name, labels, multiple, params, **runtime)
        self.features: HashedTfidf | None = None
        self.pipeline: Any = None  # a bundle saved with a fitted TfidfVectorizer

    def _analyzers(self) -> list[tuple[str, HashingVectorizer | CharGrams, int, int]]:
        """(store space, hashing vectorizer, min_df, max_features) per block: word grams, then char grams."""
        p = self.params
        word = tuple(int(x) for x in p.get("word_ngrams", (1, 2)))
        char = tuple(int(x) for x in p.get("char_ngrams", (2, 5)))
        max_features = int(p.get("max_features", 200_000))
        common = {"n_features": _HASH_WIDTH, "alternate_sign": False, "norm": None, "lowercase": True,
                  "dtype": np.float32}
        out = [(f"tfidf|word|{word}|{_TOKENS}|{_HASH_WIDTH}",
                HashingVectorizer(analyzer="word", ngram_range=word, token_pattern=_TOKENS, **common), 1,
                max_features)]
        if p.get("char", True):  # character grams catch slang and typos, and cost most of the time
            out.append((f"tfidf|char_wb|{char}|{_HASH_WIDTH}", CharGrams(char, _HASH_WIDTH), 2, max_features))
        return out

    def counts(self, texts: Sequence[str]) -> sparse.csr_matrix:
        """Hashed n-gram counts, one block per analyzer, through the feature store when the runtime has one."""
        store = runtime_store(self.runtime)
        blocks = []
        for space, vectorizer, _, _ in self._analyzers():
            if store is None:
                blocks.append(vectorizer.transform(list(texts)))
            else:
                blocks.append(store.sparse(space, _HASH_WIDTH, texts, lambda part, v=vectorizer: v.transform(part)))
        return sparse.hstack(blocks, format="csr")

    def _classifier(self) -> Any:
        p = self.params
        if p.get("classifier", "lr") == "nb":
            clf: Any = ComplementNB(alpha=float(p.get("alpha", 0.3)))
        else:
            # tol 1e-3: a third of lbfgs's time at 1e-4 on 20k tweets, same held-out accuracy (0.725 vs 0.718).
            clf = LogisticRegression(C=float(p.get("C", 4.0)), max_iter=2000, tol=float(p.get("tol", 1e-3)),
                                     class_weight=p.get("class_weight"))
        return OneVsRestClassifier(clf) if self.multiple else clf

    def fit(self, texts: Sequence[str], y: np.ndarray, sample_weight: np.ndarray | None = None) -> None:
        counts = self.counts(texts)
        self.features = HashedTfidf([(min_df, mf) for _, _, min_df, mf in self._analyzers()]).fit(counts)
        self.pipeline = None
        self.clf = self._classifier()
        kwargs = {} if sample_weight is None or self.multiple else {"sample_weight": np.asarray(sample_weight)}
        self.clf.fit(self.features.transform(counts), np.asarray(y), **kwargs)
        _columns_first(self.clf)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        if self.pipeline is not None:
            proba, classes = self.pipeline.predict_proba(list(texts)), self.pipeline.classes_
        else:
            assert self.features is not None, "predict before fit"
            proba, classes = self.clf.predict_proba(self.features.transform(self.counts(texts))), self.clf.classes_
        if self.multiple:
            return np.asarray(proba, dtype=np.float64)
        return pad_columns(proba, classes, len(self.labels))

    def _save_weights(self, path: Path) -> None:
        joblib.dump({"features": self.features, "classifier": self.clf}, path / _WEIGHTS)

    def _load_weights(self, path: Path) -> None:
        # joblib is pickle: bundles are trusted files written by our own `train`, never user uploads.
        if (path / _LEGACY_WEIGHTS).exists():
            self.pipeline = joblib.load(path / _LEGACY_WEIGHTS)
            return
        saved = joblib.load(path / _WEIGHTS)
        self.features, self.clf = saved["features"], saved["classifier"]
        _columns_first(self.clf)
