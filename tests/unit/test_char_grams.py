"""Hashed character n-grams: the counts scikit-learn's HashingVectorizer(analyzer="char_wb") gives, to the entry."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from sklearn.feature_extraction.text import HashingVectorizer

from backend.datasets import load_labelled
from backend.specialists.char_grams import CharGrams
from tests.conftest import SENTIMENT

ODD = ["", " ", "a", "ab", "I", "Ünïcödé café", "日本語のテキスト", "emoji 😀🎉 ok",
       "tabs\tand\nnewlines\r\n  many   spaces", "\u2003em space\u00a0nbsp", "x\x1c\x1dy", "ΣΊΣΥΦΟΣ", "İstanbul",
       "ﬁne ligature", "a" * 300, "🙂", "\u0301accent",
       "@user #tag http://t.co/x?y=1 RT!!!"]


def _scikit_learn(ngram_range: tuple[int, int], width: int) -> HashingVectorizer:
    return HashingVectorizer(analyzer="char_wb", ngram_range=ngram_range, n_features=width, alternate_sign=False,
                             norm=None, lowercase=True, dtype=np.float32)


def _same(a: sparse.spmatrix, b: sparse.spmatrix) -> bool:
    a, b = sparse.csr_matrix(a), sparse.csr_matrix(b)
    a.sum_duplicates()
    return (a.shape == b.shape and b.dtype == np.float32 and np.array_equal(a.indptr, b.indptr)
            and np.array_equal(a.indices, b.indices) and np.array_equal(a.data, b.data))


@pytest.mark.parametrize("ngram_range", [(2, 5), (1, 3), (3, 3), (4, 6)])
def test_the_counts_are_scikit_learns(ngram_range):
    grams, reference = CharGrams(ngram_range, 2**28), _scikit_learn(ngram_range, 2**28)
    tweets = load_labelled(SENTIMENT).texts[:400]
    for texts in (ODD, tweets, ODD + tweets):
        assert _same(reference.transform(texts), grams.transform(texts))


def test_a_narrow_width_folds_hashes_as_scikit_learn_does():
    assert _same(_scikit_learn((2, 4), 97).transform(ODD), CharGrams((2, 4), 97).transform(ODD))


def test_a_text_numpy_cannot_encode_goes_through_scikit_learn():
    grams = CharGrams((2, 5), 2**28)
    with pytest.raises(UnicodeEncodeError):  # what scikit-learn does with a lone surrogate, as before
        grams.transform(["ok \ud800 lone"])
    assert grams.transform([]).shape == (0, 2**28)
