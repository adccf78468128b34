"""Embeddings of a frozen encoder, kept on disk between training stages.

A stage replays thousands of earlier texts; with a frozen encoder their embeddings never change, so
each is computed once per encoder and read back afterwards (SQLite, one row per text hash). Training
uses it, and the evaluation harness, which scores the same test texts after every stage; serving texts
are new and skip it.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

_CHUNK = 500
_COMPUTE_CHUNK = 4096


class EmbeddingCache:
    def __init__(self, path: Path, encoder_id: str, dim: int):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.dim = path, dim
        self.space = hashlib.sha256(encoder_id.encode()).hexdigest()[:16]
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS emb (space TEXT, key TEXT, vec BLOB, PRIMARY KEY (space, key))")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]

    def encode(self, texts: Sequence[str], compute: Callable[[Sequence[str]], np.ndarray]) -> np.ndarray:
        """Embeddings of `texts`, computing (and storing) only those not cached yet."""
        keys = [self._key(t) for t in texts]
        found: dict[str, np.ndarray] = {}
        with self._lock, self._connect() as db:
            unique = list(dict.fromkeys(keys))
            for start in range(0, len(unique), _CHUNK):
                part = unique[start : start + _CHUNK]
                marks = ",".join("?" * len(part))
                for key, blob in db.execute(f"SELECT key, vec FROM emb WHERE space = ? AND key IN ({marks})",
                                            [self.space, *part]):
                    found[key] = np.frombuffer(blob, dtype=np.float32)
            missing = [i for i, k in enumerate(keys) if k not in found]
            first = {keys[i]: i for i in reversed(missing)}  # one computation per distinct text
            order = sorted(first.values())
            # Stored chunk by chunk: a long first encoding that is interrupted keeps what it computed.
            for start in range(0, len(order), _COMPUTE_CHUNK):
                part = order[start : start + _COMPUTE_CHUNK]
                vectors = compute([texts[i] for i in part])
                db.executemany("INSERT OR IGNORE INTO emb VALUES (?, ?, ?)",
                               [(self.space, keys[i], vectors[j].astype(np.float32).tobytes())
                                for j, i in enumerate(part)])
                db.commit()
                for j, i in enumerate(part):
                    found[keys[i]] = vectors[j].astype(np.float32)
        return np.stack([found[k] for k in keys]) if keys else np.zeros((0, self.dim), dtype=np.float32)
