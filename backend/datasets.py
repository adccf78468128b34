"""Read labelled text from CSV, TSV, JSONL or a Label Studio JSON export into (texts, labels)."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

csv.field_size_limit(10_000_000)


@dataclass
class LabelledData:
    texts: list[str]
    labels: list[list[str]]  # one or more label names per text
    source: str


def _split_multi(value: str) -> list[str]:
    return [x.strip() for x in str(value).replace("|", ",").split(",") if x.strip()] if value else []


def _rows(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".ndjson"}:
        with path.open(encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, list) else [data]
    delimiter = "\t" if suffix in {".tsv", ".tab"} else ","
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter=delimiter))


def _from_ls_export(rows: list[dict], control: str | None, text_key: str | None) -> tuple[list[str], list[list[str]]]:
    texts, labels = [], []
    for task in rows:
        anns = [a for a in task.get("annotations", []) if not a.get("was_cancelled")]
        if not anns:
            continue
        data = task.get("data", {})
        key = text_key or next((k for k, v in data.items() if isinstance(v, str)), None)
        if key is None or not str(data.get(key, "")).strip():
            continue
        latest = max(anns, key=lambda a: a.get("updated_at") or a.get("created_at") or "")
        for region in latest.get("result", []):
            if region.get("type") == "choices" and (control is None or region.get("from_name") == control):
                texts.append(str(data[key]))
                labels.append(list(region.get("value", {}).get("choices", [])))
                break
    return texts, labels


def load_labelled(
    path: str | Path,
    text_col: str = "text",
    label_col: str = "label",
    label_map: Mapping[str, str] | None = None,
    control: str | None = None,
    multiple: bool = False,
) -> LabelledData:
    """`label_map` renames labels as read (e.g. {"0": "Negative"}); empty texts and labels are skipped."""
    path = Path(path)
    rows = _rows(path)
    if rows and isinstance(rows[0], dict) and "data" in rows[0] and "annotations" in rows[0]:
        texts, labels = _from_ls_export(rows, control, text_col if text_col != "text" else None)
    else:
        texts, labels = [], []
        for row in rows:
            if text_col not in row or label_col not in row:
                raise ValueError(f"{path}: rows need columns {text_col!r} and {label_col!r}; found {sorted(row)}")
            text, value = row[text_col], row[label_col]
            if text is None or not str(text).strip() or value is None or str(value).strip() == "":
                continue
            names = value if isinstance(value, list) else (_split_multi(value) if multiple else [str(value).strip()])
            texts.append(str(text))
            labels.append([str(x) for x in names])
    if label_map:
        labels = [[label_map.get(x, x) for x in names] for names in labels]
    return LabelledData(texts, labels, str(path))
