"""First run on a fresh machine: train the default sentiment bundle from the shipped sample so the
server answers with real predictions before anyone has trained anything."""

from __future__ import annotations

import logging
from pathlib import Path

from backend.serving.bundles import BundleRef, BundleStore
from backend.settings import Settings

log = logging.getLogger(__name__)

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
SAMPLE_DATA = SAMPLES / "sentiment-semeval2013-16.csv"
SAMPLE_CONFIG = SAMPLES / "sentiment.xml"


def ensure_default_bundle(settings: Settings, sample: Path = SAMPLE_DATA) -> BundleRef | None:
    """Train the sample bundle unless one for its label set already exists; returns what serves it."""
    from backend.labelstudio.config import parse_label_config

    control = parse_label_config(SAMPLE_CONFIG.read_text()).controls[0]
    store = BundleStore(settings.model_dir)
    ref = store.current(control.bundle_key)
    if ref is not None:
        return ref
    from backend.datasets import load_labelled
    from finetune.training import train_bundle

    log.info("no bundle for %s yet: training the default one from %s", control.bundle_key, sample.name)
    ref, manifest = train_bundle(store, control.labels, control.multiple, load_labelled(sample),
                                 **settings.runtime)
    log.info("default bundle %s ready: %s", ref.version, manifest.metrics.get("ensemble"))
    return ref
