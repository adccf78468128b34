"""Continual-learning stages on this CPU: seconds per stage against stage size, and what the stages
do to accuracy on the source domain (forgetting) and on the target domain (learning).

It runs the service's own code path — corrections recorded as the webhook records them, then
`finetune.trainer.run_stage` (training set, replay, fit, gate, promotion) — on real data:
cold start from SemEval 2013–16 tweets (the source), stream tweet-sentiment-extraction (the target)
as human corrections in stages. Results go to a JSON file; docs/benchmarks.md quotes them.

    .venv/bin/python bench/stage_bench.py --out docs/bench-stages.json
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import EVAL_DATA

REPO = Path(__file__).resolve().parent.parent
DATA = EVAL_DATA
LABELS = ["Positive", "Negative", "Neutral"]
CONFIG = (REPO / "samples" / "sentiment.xml").read_text()


def semeval(files: list[str], limit: int | None = None) -> tuple[list[str], list[str]]:
    texts, labels, seen = [], [], set()
    for name in files:
        for line in (DATA / "semeval2017-task4a" / name).read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            if len(parts) < 3 or parts[1] not in ("positive", "negative", "neutral"):
                continue
            text = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), "\t".join(parts[2:])).strip()
            if text and text not in seen:
                seen.add(text)
                texts.append(text)
                labels.append(parts[1].capitalize())
    return (texts[:limit], labels[:limit]) if limit else (texts, labels)


def tse(split: str, limit: int | None = None, skip: int = 0) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    with (DATA / "tweet-sentiment-extraction" / f"initial__{split}.csv").open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            if (row.get("text") or "").strip():
                texts.append(row["text"].strip())
                labels.append(row["sentiment"].capitalize())
    texts, labels = texts[skip:], labels[skip:]
    return (texts[:limit], labels[:limit]) if limit else (texts, labels)


def accuracy(settings, ref, texts: list[str], labels: list[str]) -> float:
    from backend.serving.bundles import BundleStore
    from backend.serving.ensemble import load_ensemble

    manifest = BundleStore(settings.model_dir).manifest(ref)
    decisions = load_ensemble(ref, manifest, **settings.runtime).predict(texts)
    return float(np.mean([manifest.labels[d.labels[0]] == y for d, y in zip(decisions, labels, strict=True)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source-rows", type=int, default=20000)
    ap.add_argument("--stage-sizes", default="250,500,1000,2000")
    ap.add_argument("--stages", type=int, default=3, help="stages of the largest size, for forgetting")
    ap.add_argument("--test-rows", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench-stages.json")
    args = ap.parse_args()

    from backend.datasets import LabelledData
    from backend.labelstudio.config import parse_label_config, project_bundle_key
    from backend.serving.bundles import BundleStore
    from backend.settings import Settings
    from backend.store import Store
    from finetune.corrections import CorrectionLog
    from finetune.trainer import run_stage
    from finetune.training import train_bundle

    work = Path(tempfile.mkdtemp(prefix="aa-stage-bench-"))
    source_file = work / "source.csv"
    src_texts, src_labels = semeval([f"Subtask_A__downloaded__twitter-{y}-A.tsv" for y in
                                     ("2013train", "2013dev", "2013test", "2014test", "2015train", "2015test",
                                      "2016train", "2016dev", "2016devtest", "2016test")], args.source_rows)
    with source_file.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(zip(src_texts, src_labels, strict=True))
    src_test = semeval(["Subtask_A__gold__SemEval2017-task4-test.subtask-A.english.txt"], args.test_rows)
    tgt_test = tse("test", args.test_rows)

    settings = Settings.from_env({}, data_dir=work, bundle_refresh_seconds=0.0)
    store = Store(settings.database_url)
    space = parse_label_config(CONFIG)
    control = space.controls[0]
    t0 = time.perf_counter()
    base, _ = train_bundle(BundleStore(settings.model_dir), LABELS, False,
                           LabelledData(src_texts, [[x] for x in src_labels], str(source_file)), **settings.runtime)
    base_seconds = time.perf_counter() - t0
    base_src, base_tgt = accuracy(settings, base, *src_test), accuracy(settings, base, *tgt_test)
    print(f"cold start on {len(src_texts)} source tweets: {base_seconds:.1f}s; source test {base_src:.4f}, "
          f"target test {base_tgt:.4f}")

    results: dict = {"machine_cpus": __import__("os").cpu_count(), "source_rows": len(src_texts),
                     "cold_start_seconds": round(base_seconds, 1), "base_source_accuracy": base_src,
                     "base_target_accuracy": base_tgt, "replay_size": settings.replay_size,
                     "timing": [], "stages": []}
    corrections = CorrectionLog(store, settings.holdout_every)
    seq = 0
    offset = 0

    def stage(project: str, size: int) -> tuple[float, dict]:
        nonlocal seq, offset
        texts, labels = tse("train", size, skip=offset)
        offset += size
        seq += 1
        corrections.record(project, [{"control": control.name, "choices": [y], "text": x, "task_id": offset + i,
                                      "annotation_id": offset + i} for i, (x, y) in enumerate(zip(texts, labels,
                                                                                                  strict=True))], seq)
        t = time.perf_counter()
        outcome = run_stage(project, settings, store)
        return time.perf_counter() - t, {"status": outcome.status, "notes": outcome.notes}

    for size in [int(x) for x in args.stage_sizes.split(",")]:
        project = f"timing-{size}"
        store.note_project(project, space.config_hash, None, [], [], CONFIG)
        seconds, info = stage(project, size)
        results["timing"].append({"stage_size": size, "seconds": round(seconds, 1), **info})
        print(f"stage of {size} corrections: {seconds:.1f}s ({info['status']})")

    largest = max(int(x) for x in args.stage_sizes.split(","))
    store.note_project("stream", space.config_hash, None, [], [], CONFIG)
    bundles = BundleStore(settings.model_dir)
    for n in range(1, args.stages + 1):
        seconds, info = stage("stream", largest)
        ref = bundles.current(project_bundle_key("stream", control.name))
        src, tgt = accuracy(settings, ref, *src_test), accuracy(settings, ref, *tgt_test)
        results["stages"].append({"stage": n, "corrections_so_far": n * largest, "seconds": round(seconds, 1),
                                  "source_accuracy": src, "target_accuracy": tgt,
                                  "source_change_points": round(100 * (src - base_src), 2), **info})
        print(f"after stage {n} ({n * largest} corrections, {seconds:.1f}s): source {src:.4f} "
              f"({100 * (src - base_src):+.2f} pt), target {tgt:.4f} ({100 * (tgt - base_tgt):+.2f} pt)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
