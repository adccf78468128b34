"""Re-predicting known tasks: what the feature store saves after a promotion or a Label Studio "Retrieve
predictions". Trains the default bundle in a fresh model folder, then, in one process, side by side:

* cold: the ensemble on N texts it has never seen (every encoder layer and n-gram count computed and stored);
* warm: the same N texts again (read back from the feature store; only the heads run);
* after a promotion: every specialist's head refitted (a later stage's bundle), then the N texts again;
* the service's whole /predict path (budgets, routing, provenance) on the N known tasks in one request.

The last three are each the median of 3 passes.

Labels read back from the store must equal the cold ones. N = 10,000 TweetEval tweets take about 3 minutes cold on
2 slow AVX2 cores.

    python bench/repredict_bench.py [--tasks 10000] [--out docs/bench-repredict.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.datasets import load_labelled
from backend.service import AnnotationService
from backend.serving.bundles import BundleStore
from backend.serving.ensemble import load_ensemble
from backend.settings import Settings
from bench.benchlib import LABEL_CONFIG_FILE, PROJECT, load_texts, machine
from finetune.bootstrap import SAMPLE_DATA, ensure_default_bundle
from finetune.training import encode_targets


def timed(fn, *args):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def median_of(rounds: int, fn, *args):  # type: ignore[no-untyped-def]
    """(the last output, the median time, every time): a warm pass lasts under a second, and single ones varied by
    a third on a quiet machine."""
    runs = [timed(fn, *args) for _ in range(rounds)]
    times = [t for _, t in runs]
    return runs[-1][0], float(np.median(times)), times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    texts = list(dict.fromkeys(load_texts()))[: a.tasks]
    n = len(texts)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.from_env(data_dir=Path(tmp), model_dir=Path(tmp) / "models", log_level="WARNING")
        ref = ensure_default_bundle(settings)
        assert ref is not None
        manifest = BundleStore(settings.model_dir).manifest(ref)
        ensemble = load_ensemble(ref, manifest, **settings.runtime)
        ensemble.predict(texts[:64])  # load the encoder and warm the kernels on texts outside the measured ones
        cold, cold_s = timed(ensemble.predict, texts)
        warm, warm_s, warm_runs = median_of(3, ensemble.predict, texts)
        # A later stage's bundle: every head refitted on the sample (its texts are in the store from training).
        sample = load_labelled(SAMPLE_DATA)
        y = encode_targets(sample, manifest.labels, False)
        for sp in ensemble.specialists:
            sp.fit(sample.texts, y)
        _, promoted_s, promoted_runs = median_of(3, ensemble.predict, texts)
        service = AnnotationService(settings)
        tasks = [{"id": 10_000_000 + i, "data": {"text": t}} for i, t in enumerate(texts)]
        config = LABEL_CONFIG_FILE.read_text()
        service.predict(tasks[:64], config, PROJECT)
        _, service_s, service_runs = median_of(3, service.predict, tasks, config, PROJECT)
        result = {
            "machine": machine(), "tasks": n,
            "cold_tasks_per_s": round(n / cold_s, 1),
            "warm_tasks_per_s": round(n / warm_s, 1),
            "after_promotion_tasks_per_s": round(n / promoted_s, 1),
            "service_predict_known_tasks_per_s": round(n / service_s, 1),
            "rounds_tasks_per_s": {name: [round(n / t, 1) for t in runs] for name, runs in
                                   (("warm", warm_runs), ("after_promotion", promoted_runs),
                                    ("service_predict_known", service_runs))},
            "warm_over_cold": round(cold_s / warm_s, 1),
            "labels_equal_cold_and_warm": float(np.mean([c.labels == w.labels
                                                          for c, w in zip(cold, warm, strict=True)])),
            "store_file_mb": round((Path(settings.model_dir) / "cache" / "features.sqlite").stat().st_size / 2**20, 1),
        }
    print(json.dumps(result, indent=1))
    if a.out:
        a.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
