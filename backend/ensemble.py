"""A loaded bundle: its specialists, each run once per batch, combined by the pure voting rules."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from backend.bundles import BundleRef, Manifest
from backend.decision.voting import Decision, decide, restrict
from backend.specialists import registry
from backend.specialists.base import Specialist


class Ensemble:
    def __init__(self, manifest: Manifest, specialists: Sequence[Specialist]):
        self.manifest = manifest
        self.specialists = list(specialists)
        self.weights = [e.weight for e in manifest.specialists]

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    def probabilities(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Each specialist's (n, k) probabilities: one batched pass per specialist."""
        return [s.predict_proba(texts) for s in self.specialists]

    def predict(self, texts: Sequence[str], columns: Sequence[int] | None = None) -> list[Decision]:
        """Decisions over all labels, or over `columns` only (label indices into the decision's labels)."""
        if not texts:
            return []
        m = self.manifest
        probas = self.probabilities(texts)
        if columns is not None and list(columns) != list(range(len(self.labels))):
            probas = restrict(probas, columns, m.multiple)
        return decide(probas, self.weights, m.temperature, m.multiple, m.threshold)


def load_ensemble(ref: BundleRef, manifest: Manifest, **runtime: Any) -> Ensemble:
    specialists = [registry.load(Path(ref.path) / "specialists" / e.name, **runtime) for e in manifest.specialists]
    return Ensemble(manifest, specialists)
