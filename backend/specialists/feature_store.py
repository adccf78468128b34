"""What a frozen feature extractor computes for a text, kept on disk by text hash.

A frozen encoder's pooled layers and a TF-IDF specialist's hashed n-gram counts depend on the text alone, never on
the trained heads, so after a promotion (or a Label Studio "Retrieve predictions") a known task only runs the heads.
Training replays the same texts stage after stage and reads them from here too.

One SQLite file per deployment (WAL: every process of the server and the workers shares it), one row per
(space, text hash); a space names the extractor and its settings. It is bounded: past `max_bytes` the rows used
longest ago are dropped, and SQLite reuses their pages, so the file stays about that size.

Rows of small computations (a /predict of a few tasks) wait in memory, where this process reads them too, and one
thread writes them every half second in one transaction: request threads taking SQLite's write lock one after
another would queue behind each other. Rows lost with the process are computed again.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy import sparse

_READ_CHUNK = 900  # keys per SELECT (SQLite's variable limit is 999 on old builds)
_COMPUTE_CHUNK = 4096  # texts per computation: what a long first encoding keeps if interrupted
_TOUCH_AFTER_MS = 3_600_000  # a hit refreshes its row's age at most this often (a write per hit costs)
_EVICT_SHARE = 0.2  # share of the rows dropped when the file is over its bound
DEFAULT_MAX_MB = 2048
_PAGE_SIZE = 32768
_WRITE_NOW = 64  # a computation of at least this many texts is written at once (training, a big retrieve)
_WRITE_EVERY_S = 0.5  # smaller ones (a request of a few tasks) are written together, by one thread
_FORMAT = "rows-1"  # how rows are laid out: a new layout makes new spaces


def text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def space_id(name: str) -> str:
    return hashlib.sha256(f"{_FORMAT}|{name}".encode()).hexdigest()[:16]


class FeatureStore:
    """Rows of float32 features by (space, text), dense or sparse; thread- and process-safe."""

    def __init__(self, path: Path, max_bytes: int):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.max_bytes = path, max_bytes
        self._fresh()
        # A forked child (a gunicorn worker of a preloaded app) starts afresh: no connection of its parent's, no
        # writer thread, and no lock the parent's writer held at the fork; the parent writes what it had waiting.
        fresh = weakref.WeakMethod(self._fresh)
        os.register_at_fork(after_in_child=lambda: (method := fresh()) is not None and method())
        atexit.register(self.flush)  # what still waits when the process ends normally
        db = self._db()
        # Rows go at the table's end in the order they are written, found through an index on (space, key). Kept in
        # text-hash order, the rows of a batch of new texts landed on as many pages as rows, each written out whole:
        # 116 vs 21 ms for 512 encoder rows into a store of 164,000.
        db.execute("DROP TABLE IF EXISTS feature")  # rows kept in that order: a cache, computed again
        db.execute("CREATE TABLE IF NOT EXISTS features (space TEXT, key BLOB, used INTEGER, data BLOB)")
        db.execute("CREATE UNIQUE INDEX IF NOT EXISTS features_key ON features (space, key)")
        db.execute("CREATE INDEX IF NOT EXISTS features_used ON features (used)")
        db.commit()

    def _fresh(self) -> None:
        self._local = threading.local()
        self._pending: dict[tuple[str, bytes], tuple[int, bytes]] = {}
        self._pending_lock = threading.Lock()
        self._writer: threading.Thread | None = None

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
            # Large pages keep a row of a few KiB (a tweet's n-grams, three pooled layers) on its page, not in
            # overflow pages; this takes effect only when the file is created.
            db.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # a cache: a row lost to a power cut is computed again
            self._local.db = db
        return db

    # -- the two shapes ------------------------------------------------------------------------------------------
    def dense(self, space: str, dim: int, texts: Sequence[str],
              compute: Callable[[Sequence[str]], np.ndarray]) -> np.ndarray:
        """(n, dim) float32 rows of `texts`, computing (and storing) only those not stored yet."""
        blobs = self._rows(space_id(space), texts,
                           lambda part: [v.tobytes() for v in np.asarray(compute(part), dtype=np.float32)])
        return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim).copy()

    def sparse(self, space: str, width: int, texts: Sequence[str],
               compute: Callable[[Sequence[str]], sparse.csr_matrix]) -> sparse.csr_matrix:
        """(n, width) CSR rows of `texts` (float32 values), computing only those not stored yet. A row is stored
        as its column indices (int32) followed by its values (float32)."""
        def encode(part: Sequence[str]) -> list[bytes]:
            m = sparse.csr_matrix(compute(part), dtype=np.float32)
            m.sort_indices()
            ind, val = m.indices.astype(np.int32), m.data
            return [ind[a:b].tobytes() + val[a:b].tobytes() for a, b in zip(m.indptr[:-1], m.indptr[1:], strict=True)]

        return _unstack(self._rows(space_id(space), texts, encode), width)

    # -- storage ---------------------------------------------------------------------------------------------
    def _rows(self, space: str, texts: Sequence[str], encode: Callable[[Sequence[str]], list[bytes]]) -> list[bytes]:
        """The stored row of each text, in order; missing ones are computed by `encode` and stored."""
        keys = [text_key(t) for t in texts]
        unique = list(dict.fromkeys(keys))
        db = self._db()
        found: dict[bytes, bytes] = {}
        stale: list[bytes] = []
        now = time.time_ns() // 1_000_000  # ms: the age order of rows
        for start in range(0, len(unique), _READ_CHUNK):
            part = unique[start:start + _READ_CHUNK]
            marks = ",".join("?" * len(part))
            rows = db.execute(f"SELECT key, used, data FROM features WHERE space = ? AND key IN ({marks})",
                              [space, *part]).fetchall()
            found.update((k, blob) for k, _, blob in rows)
            stale.extend(k for k, used, _ in rows if used < now - _TOUCH_AFTER_MS)
        if self._pending and len(found) < len(unique):
            with self._pending_lock:
                for k in unique:
                    if k not in found and (space, k) in self._pending:
                        found[k] = self._pending[(space, k)][1]
        if stale:
            db.executemany("UPDATE features SET used = ? WHERE space = ? AND key = ?", [(now, space, k) for k in stale])
            db.commit()
        first: dict[bytes, int] = {}
        for i, k in enumerate(keys):
            if k not in found and k not in first:
                first[k] = i  # one computation per distinct text
        order = list(first.values())
        for start in range(0, len(order), _COMPUTE_CHUNK):
            part = order[start:start + _COMPUTE_CHUNK]
            blobs = encode([texts[i] for i in part])
            rows = [(space, keys[i], now, b) for i, b in zip(part, blobs, strict=True)]
            if len(order) >= _WRITE_NOW:
                db.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?)", rows)
                db.commit()
            else:
                self._later(rows)
            found.update((keys[i], b) for i, b in zip(part, blobs, strict=True))
        if len(order) >= _WRITE_NOW:
            self._bound(db)
        return [found[k] for k in keys]

    def _later(self, rows: list[tuple[str, bytes, int, bytes]]) -> None:
        with self._pending_lock:
            self._pending.update(((sp, k), (used, blob)) for sp, k, used, blob in rows)
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._write_pending, name="feature-store-writer", daemon=True)
                self._writer.start()

    def _write_pending(self) -> None:
        """The writer thread: every _WRITE_EVERY_S, the rows waiting in memory in one transaction; it ends when
        none are left."""
        while True:
            time.sleep(_WRITE_EVERY_S)
            self.flush()
            with self._pending_lock:
                if not self._pending:
                    self._writer = None
                    return

    def flush(self) -> int:
        """Write the rows waiting in memory now; returns how many."""
        with self._pending_lock:
            rows = [(sp, k, used, blob) for (sp, k), (used, blob) in self._pending.items()]
        if not rows:
            return 0
        db = self._db()
        db.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?)", rows)
        db.commit()
        with self._pending_lock:
            for sp, k, used, _ in rows:
                if self._pending.get((sp, k), (None,))[0] == used:
                    del self._pending[(sp, k)]
        self._bound(db)
        return len(rows)

    def _bound(self, db: sqlite3.Connection) -> None:
        """Drop the rows used longest ago while the file holds more than max_bytes."""
        while self._used_bytes(db) > self.max_bytes:
            (n,) = db.execute("SELECT count(*) FROM features").fetchone()
            if not n:
                return
            db.execute("DELETE FROM features WHERE rowid IN (SELECT rowid FROM features ORDER BY used LIMIT ?)",
                       (max(int(n * _EVICT_SHARE), 1),))
            db.commit()

    @staticmethod
    def _used_bytes(db: sqlite3.Connection) -> int:
        pages, free, size = (db.execute(f"PRAGMA {p}").fetchone()[0]
                             for p in ("page_count", "freelist_count", "page_size"))
        return int((pages - free) * size)

    def size(self) -> dict[str, int]:
        self.flush()
        db = self._db()
        (rows,) = db.execute("SELECT count(*) FROM features").fetchone()
        return {"rows": int(rows), "bytes": self._used_bytes(db), "max_bytes": self.max_bytes}


def _unstack(blobs: list[bytes], width: int) -> sparse.csr_matrix:
    """CSR rows from stored (indices, values) rows, decoded in one pass over their concatenation."""
    nnz = np.fromiter((len(b) // 8 for b in blobs), dtype=np.int64, count=len(blobs))
    indptr = np.zeros(len(blobs) + 1, dtype=np.int64)
    np.cumsum(nnz, out=indptr[1:])
    words = np.frombuffer(b"".join(blobs), dtype=np.int32)
    # Word j of row r (which starts at word 2 * indptr[r]) is an index while j < nnz[r], then a value.
    offset = np.arange(len(words)) - np.repeat(2 * indptr[:-1], 2 * nnz)
    is_index = offset < np.repeat(nnz, 2 * nnz)
    return sparse.csr_matrix((words.view(np.float32)[~is_index], words[is_index], indptr), shape=(len(blobs), width))


_STORES: dict[tuple[str, int], FeatureStore] = {}
_NAMED: dict[tuple[str, int], FeatureStore] = {}  # by the absolute directory as named
_STORES_LOCK = threading.Lock()


def feature_store(directory: str | Path, max_mb: float) -> FeatureStore | None:
    """The deployment's store under `directory` (one per process), or None when FEATURE_STORE_MB is 0."""
    if not directory or max_mb <= 0:
        return None
    asked = (str(directory), int(max_mb * 2**20))
    # Every specialist asks on every call, and resolving the path each time costs; a relative one still is resolved.
    store = _NAMED.get(asked) if os.path.isabs(asked[0]) else None
    if store is not None:
        return store
    key = (str(Path(directory).resolve()), asked[1])
    with _STORES_LOCK:
        if key not in _STORES:
            _STORES[key] = FeatureStore(Path(directory) / "features.sqlite", key[1])
        _NAMED[asked] = _STORES[key]
        return _STORES[key]


def runtime_store(runtime: dict) -> FeatureStore | None:
    """The store a specialist's runtime names (cache_dir, feature_store_mb), or None."""
    return feature_store(str(runtime.get("cache_dir", "")), float(runtime.get("feature_store_mb", DEFAULT_MAX_MB)))
