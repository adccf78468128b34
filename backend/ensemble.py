"""A loaded bundle: its specialists, each run once per batch, combined by the pure voting rules."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from backend.bundles import BundleRef, Manifest
from backend.decision.voting import Decision, decide
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

    def predict(self, texts: Sequence[str]) -> list[Decision]:
        if not texts:
            return []
        m = self.manifest
        return decide(self.probabilities(texts), self.weights, m.temperature, m.multiple, m.threshold)


def load_ensemble(ref: BundleRef, manifest: Manifest, **runtime: Any) -> Ensemble:
    specialists = [registry.load(Path(ref.path) / "specialists" / e.name, **runtime) for e in manifest.specialists]
    return Ensemble(manifest, specialists)
