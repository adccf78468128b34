"""`autoannotator plan`: plan every supported control of a label config, print the ensemble, the mappings and the
reasons, write the plans where servers and training stages read them, and optionally build the bundle now."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend.settings import Settings

if TYPE_CHECKING:
    from backend.datasets import LabelledData
    from backend.planning.plan import Plan
    from backend.serving.bundles import BundleRef, BundleStore, Manifest


def read_texts(path: Path, data_key: str, text_col: str = "text") -> list[str]:
    """Texts of a sample: Label Studio tasks (JSON list), JSONL/CSV/TSV rows, or one text a line."""
    suffix = path.suffix.lower()
    if suffix in {".json", ".jsonl", ".ndjson"}:
        raw = path.read_text(encoding="utf-8")
        rows = json.loads(raw) if suffix == ".json" else [json.loads(x) for x in raw.splitlines() if x.strip()]
        rows = rows if isinstance(rows, list) else [rows]
    elif suffix in {".csv", ".tsv", ".tab"}:
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t" if suffix != ".csv" else ","))
    else:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = []
    for row in rows:
        if isinstance(row, str):
            texts.append(row)
            continue
        if not isinstance(row, dict):
            continue
        data = row.get("data") if isinstance(row.get("data"), dict) else row
        value = data.get(data_key, data.get(text_col))
        if isinstance(value, str) and value.strip():
            texts.append(value)
    return texts


def read_labelled(path: Path, control: Any, text_col: str, label_col: str):
    """Labelled rows of a sample (human annotations), or None when the sample has no labels."""
    from backend.datasets import load_labelled

    try:
        data = load_labelled(path, text_col, label_col, control=control.name, multiple=control.multiple)
    except (ValueError, KeyError, TypeError):
        return None
    return data if data.texts else None


def run_plan(args: argparse.Namespace, settings: Settings) -> None:
    from backend.labelstudio.config import LabelConfigError, parse_label_config
    from backend.planning.catalog import CatalogError, load_catalog
    from backend.planning.plan import PlanStore
    from backend.planning.planner import make_plan
    from backend.planning.service import plan_key

    try:
        space = parse_label_config(Path(args.label_config).read_text(encoding="utf-8"))
        catalog = load_catalog(args.catalog or settings.catalog_file)
    except (OSError, LabelConfigError, CatalogError) as exc:
        sys.exit(f"autoannotator plan: {exc}")
    controls = [c for c in space.controls if args.control in (None, c.name)]
    if not controls:
        sys.exit(f"autoannotator plan: no supported control named {args.control!r}; supported: "
                 f"{[c.name for c in space.controls]}")
    store = PlanStore(settings.model_dir)
    for control in controls:
        sample = Path(args.sample) if args.sample else None
        texts = read_texts(sample, control.data_key, args.text_col) if sample else []
        labelled = read_labelled(sample, control, args.text_col, args.label_col) if sample else None
        plan = make_plan(control, plan_key(args.project, control), settings, catalog, texts,
                         use_llm=False if args.no_llm else None, language=args.language)
        if labelled is not None:
            from backend.planning.apply import check_on_annotations

            check_on_annotations(plan, labelled.texts, labelled.labels, settings.plan_min_annotations, catalog,
                                 **settings.runtime)
        if args.build:
            _build(plan, labelled, settings)
        written = None if args.dry_run else store.save(plan)
        if args.json:
            print(json.dumps({**json.loads(plan.to_json()), "written": str(written) if written else None},
                             ensure_ascii=False))
        else:
            print(plan.summary())
            print(f"  written: {written}" if written else "  (dry run: not written)")


def _build(plan: Any, labelled: Any, settings: Settings) -> None:
    from backend.planning.apply import build_zero_shot
    from backend.serving.bundles import BundleStore

    store = BundleStore(settings.model_dir)
    if labelled is not None:
        try:
            build_trained(plan, store, labelled, **settings.runtime)
        except ValueError as exc:
            sys.exit(f"autoannotator plan --build: {exc}")
    elif build_zero_shot(plan, store, **settings.runtime) is None:
        print(f"  nothing built for {plan.control!r}: {plan.applied.get('note')}", file=sys.stderr)


def build_trained(plan: Plan, store: BundleStore, data: LabelledData, promote: bool = True, **runtime: Any
                  ) -> tuple[BundleRef, Manifest]:
    """The whole planned ensemble trained (pretrained ones fine-tuned from their mapped heads) on labelled data."""
    from finetune.training import train_bundle

    ref, manifest = train_bundle(store, plan.labels, plan.multiple, data, plan.recipe(), promote=promote, key=plan.key,
                                 data_info={"plan": plan.key, "plan_source": plan.source}, **runtime)
    plan.applied = {"bundle": ref.version, "at": time.time(), "trained_on": len(data.texts)}
    return ref, manifest
