import numpy as np

from backend.specialists.embedding_cache import EmbeddingCache


def test_each_text_is_computed_once_per_encoder(tmp_path):
    calls: list[list[str]] = []

    def compute(texts):
        calls.append(list(texts))
        return np.array([[len(t), t.count("a"), 1.0] for t in texts], dtype=np.float32)

    cache = EmbeddingCache(tmp_path / "e.sqlite", "enc-1", 3)
    first = cache.encode(["a", "bb", "a", "ccc"], compute)
    assert calls == [["a", "bb", "ccc"]]  # the duplicate "a" is computed once
    again = EmbeddingCache(tmp_path / "e.sqlite", "enc-1", 3).encode(["ccc", "dddd", "a"], compute)
    assert calls[1] == ["dddd"]
    np.testing.assert_array_equal(again[[0, 2]], first[[3, 0]])
    EmbeddingCache(tmp_path / "e.sqlite", "enc-2", 3).encode(["a"], compute)  # another encoder, another space
    assert calls[2] == ["a"]
    assert cache.encode([], compute).shape == (0, 3)
