"""The feature store: each text computed once per space, dense and sparse rows read back exactly, shared by
processes through one SQLite file, and bounded on disk."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np
from scipy import sparse

from backend.specialists.feature_store import FeatureStore
from tests.conftest import ROOT, forked_exit_code


def _dense(calls):
    def compute(texts):
        calls.append(list(texts))
        return np.array([[len(t), t.count("a"), 1.0] for t in texts], dtype=np.float32)
    return compute


def test_each_text_is_computed_once_per_space(tmp_path):
    calls: list[list[str]] = []
    store = FeatureStore(tmp_path / "f.sqlite", 2**30)
    first = store.dense("enc-1", 3, ["a", "bb", "a", "ccc"], _dense(calls))
    assert calls == [["a", "bb", "ccc"]]  # the duplicate "a" is computed once
    store.flush()  # written (the writer thread does it within half a second): another instance reads them
    again = FeatureStore(tmp_path / "f.sqlite", 2**30).dense("enc-1", 3, ["ccc", "dddd", "a"], _dense(calls))
    assert calls[1] == ["dddd"]
    np.testing.assert_array_equal(again[[0, 2]], first[[3, 0]])
    store.dense("enc-2", 3, ["a"], _dense(calls))  # another extractor, another space
    assert calls[2] == ["a"]
    assert store.dense("enc-1", 3, [], _dense(calls)).shape == (0, 3)
    lone = "\ud800 odd"  # a lone surrogate is a text like any other
    store.dense("enc-1", 3, [lone], _dense(calls))
    store.dense("enc-1", 3, [lone], _dense(calls))
    assert calls[-1] == [lone] and len(calls) == 4


def test_sparse_rows_come_back_exactly(tmp_path):
    store = FeatureStore(tmp_path / "f.sqlite", 2**30)
    dense = sparse.random(5, 1000, density=0.05, dtype=np.float32, random_state=0).toarray()
    dense[3] = 0  # an empty row
    m = sparse.csr_matrix(dense)
    texts = [f"t{i}" for i in range(5)]
    got = store.sparse("s", 1000, texts, lambda part: m[[texts.index(t) for t in part]])
    again = store.sparse("s", 1000, texts[::-1], lambda part: 1 / 0)  # all stored: nothing computed
    assert (got != m).nnz == 0
    assert (again != m[::-1]).nnz == 0


def test_the_file_stays_within_its_bound(tmp_path):
    store = FeatureStore(tmp_path / "f.sqlite", 2 * 2**20)
    for round_ in range(12):  # 12 x 200 rows of 4 KiB: about 10 MiB offered
        texts = [f"{round_}-{i}" for i in range(200)]
        store.dense("e", 1024, texts, lambda part: np.ones((len(part), 1024), dtype=np.float32))
    size = store.size()
    assert size["bytes"] <= 2 * 2**20
    assert 0 < size["rows"] < 12 * 200
    assert (tmp_path / "f.sqlite").stat().st_size < 4 * 2**20  # freed pages are reused, not appended
    calls: list[list[str]] = []
    store.dense("e", 1024, ["11-5"], lambda part: calls.append(part) or np.ones((1, 1024), np.float32))
    assert calls == []  # the newest rows are the ones kept


def test_processes_share_one_store(tmp_path):
    code = textwrap.dedent(f"""
        import numpy as np
        from pathlib import Path
        from backend.specialists.feature_store import FeatureStore
        s = FeatureStore(Path({str(tmp_path / 'f.sqlite')!r}), 2**30)
        s.dense("e", 2, ["x", "y"], lambda part: np.array([[1, 2]] * len(part), np.float32))
    """)
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    store = FeatureStore(tmp_path / "f.sqlite", 2**30)
    got = store.dense("e", 2, ["y", "x"], lambda part: 1 / 0)
    np.testing.assert_array_equal(got, [[1, 2], [1, 2]])


def test_small_computations_are_read_at_once_and_written_together(tmp_path):
    store = FeatureStore(tmp_path / "f.sqlite", 2**30)
    other = FeatureStore(tmp_path / "f.sqlite", 2**30)  # another process's view: only what is on disk
    first = store.dense("e", 2, ["a", "b"], lambda part: np.array([[1, 2]] * len(part), np.float32))
    again = store.dense("e", 2, ["b", "a"], lambda part: 1 / 0)  # waiting in memory, read from there
    np.testing.assert_array_equal(first, again)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and store._pending:
        time.sleep(0.05)
    assert not store._pending  # the writer thread wrote them in one go, then ended
    np.testing.assert_array_equal(other.dense("e", 2, ["a"], lambda part: 1 / 0), [[1, 2]])
    big = [f"t{i}" for i in range(100)]  # a bulk computation (training, a big retrieve) is written at once
    store.dense("e", 2, big, lambda part: np.zeros((len(part), 2), np.float32))
    assert not store._pending
    assert other.dense("e", 2, big[:3], lambda part: 1 / 0).shape == (3, 2)


def test_a_forked_child_starts_afresh(tmp_path):
    """A gunicorn worker forked from a preloaded app: were the parent's writer holding its lock at the fork, the
    child would wait on it forever. The child gets its own lock, writer and connection, and serves."""
    import os

    calls: list[list[str]] = []
    store = FeatureStore(tmp_path / "f.sqlite", 2**30)
    store.dense("enc-1", 3, ["parent"], _dense(calls))  # waiting in memory, the writer thread started
    with store._pending_lock:  # the parent's writer holds it at the moment of the fork
        child = os.fork()
        if child == 0:
            try:
                rows = store.dense("enc-1", 3, ["child text", "parent"], _dense([]))
                store.flush()
                os._exit(0 if rows.shape == (2, 3) and rows[0, 0] == len("child text") else 1)
            finally:
                os._exit(2)
    assert forked_exit_code(child) == 0
    store.flush()
    assert FeatureStore(tmp_path / "f.sqlite", 2**30).dense("enc-1", 3, ["parent", "child text"],
                                                           _dense(calls)).shape == (2, 3)
    assert calls == [["parent"]]  # both rows on disk: the parent's, and the child's


def test_a_store_of_rows_kept_in_hash_order_is_emptied_and_used(tmp_path):
    import sqlite3

    path = tmp_path / "f.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE feature (space TEXT, key BLOB, used INTEGER, data BLOB, PRIMARY KEY (space, key)) "
               "WITHOUT ROWID")
    db.execute("INSERT INTO feature VALUES ('s', x'00', 1, zeroblob(40000))")
    db.commit()
    db.close()
    calls: list[list[str]] = []
    store = FeatureStore(path, 2**30)
    assert store.dense("enc-1", 3, ["a", "bb"], _dense(calls)).tolist() == [[1, 1, 1], [2, 0, 1]]
    tables = {name for (name,) in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"features"}
    assert store.size()["rows"] == 2 and calls == [["a", "bb"]]
