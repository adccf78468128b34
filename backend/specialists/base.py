"""The small protocol every specialist family implements, and the on-disk spec they share.

A specialist is trained on texts with label indices (single choice: shape (n,); multiple choice:
a 0/1 matrix (n, k)), answers with an (n, k) probability matrix over the project's labels in their
order, and saves itself to a directory that `load` can read back in another process.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

SPEC_FILE = "specialist.json"


class Specialist(ABC):
    family: ClassVar[str]

    def __init__(
        self,
        name: str,
        labels: Sequence[str],
        multiple: bool,
        params: dict[str, Any] | None = None,
        **runtime: Any,
    ):
        self.name = name
        self.runtime = runtime  # process-local knobs (device, dtype, batch size), never saved
        self.labels = list(labels)
        self.multiple = multiple
        self.params = dict(params or {})
        self.version = f"{self.family}-untrained"

    @abstractmethod
    def fit(self, texts: Sequence[str], y: np.ndarray, sample_weight: np.ndarray | None = None) -> None:
        """Train (or continue training) on labelled texts."""

    @abstractmethod
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), len(labels)) probabilities in `self.labels` order; one batched pass."""

    @abstractmethod
    def _save_weights(self, path: Path) -> None: ...

    @abstractmethod
    def _load_weights(self, path: Path) -> None: ...

    def save(self, path: Path) -> str:
        """Write weights and spec; the version is a digest of what was written, so equal weights share it."""
        path.mkdir(parents=True, exist_ok=True)
        self._save_weights(path)
        self.version = f"{self.family}-{_digest_dir(path, exclude={SPEC_FILE})[:10]}"
        spec = {
            "family": self.family,
            "name": self.name,
            "labels": self.labels,
            "multiple": self.multiple,
            "params": self.params,
            "version": self.version,
        }
        (path / SPEC_FILE).write_text(json.dumps(spec, indent=2))
        return self.version

    @classmethod
    def load(cls, path: Path, **runtime: Any) -> Specialist:
        spec = read_spec(path)
        obj = cls(spec["name"], spec["labels"], spec["multiple"], spec.get("params"), **runtime)
        obj._load_weights(path)
        obj.version = spec["version"]
        return obj


def read_spec(path: Path) -> dict[str, Any]:
    return json.loads((path / SPEC_FILE).read_text())


def _digest_dir(path: Path, exclude: set[str]) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and p.name not in exclude):
        h.update(str(f.relative_to(path)).encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def one_hot(y: np.ndarray, k: int) -> np.ndarray:
    """Targets as a (n, k) matrix whatever the mode: indices become one-hot rows."""
    y = np.asarray(y)
    if y.ndim == 2:
        return y.astype(np.float32)
    out = np.zeros((len(y), k), dtype=np.float32)
    out[np.arange(len(y)), y.astype(int)] = 1.0
    return out


def pad_columns(proba: np.ndarray, classes: Sequence[int], k: int) -> np.ndarray:
    """Put a classifier's columns (over the classes it saw) into all k label columns."""
    out = np.zeros((proba.shape[0], k), dtype=np.float64)
    out[:, list(classes)] = proba
    return out
