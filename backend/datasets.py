"""Read labelled text from CSV, TSV, JSONL, a Label Studio JSON export, or line-aligned text/label files
(TweetEval's layout) into (texts, labels).

Public data sets come in these shapes; reading them all here keeps every command (train, evaluate)
on one loader rather than a converter per data set.
"""

from __future__ import annotations

import csv
import json
import re
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


_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")


def unescape(text: str) -> str:
    """Literal `\\uXXXX` sequences (SemEval's TSV files hold them for commas and quotes) → characters."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)


def labels_file_for(path: Path) -> Path:
    """TweetEval keeps texts in `x_text.txt` and labels, one per line, in `x_labels.txt`."""
    name = path.name.replace("text", "labels")
    if name == path.name:
        raise ValueError(f"{path}: a .txt file holds one text per line and needs a labels file named like it with "
                         "'text' replaced by 'labels' (TweetEval's layout)")
    return path.with_name(name)


def _txt_rows(path: Path, text_col: str, label_col: str) -> list[dict]:
    labels_path = labels_file_for(path)
    if not labels_path.exists():
        raise ValueError(f"{path}: its labels file {labels_path.name} is missing")
    texts = path.read_text(encoding="utf-8").splitlines()
    labels = labels_path.read_text(encoding="utf-8").splitlines()
    if len(texts) != len(labels):
        raise ValueError(f"{path}: {len(texts)} texts but {len(labels)} labels in {labels_path.name}")
    return [{text_col: t.strip(), label_col: y.strip()} for t, y in zip(texts, labels, strict=True)]


def _positional_rows(path: Path, text_col: str, label_col: str) -> list[dict]:
    """A file without a header, columns named by position; the last column keeps any extra delimiters."""
    delimiter = "\t" if path.suffix.lower() in {".tsv", ".tab", ".txt"} else ","
    ti, li = int(text_col), int(label_col)
    width = max(ti, li) + 1
    rows = []
    with path.open(encoding="utf-8", newline="") as fh:
        for line in fh:
            parts = line.rstrip("\r\n").split(delimiter, width - 1)
            if len(parts) == width:
                rows.append({text_col: unescape(parts[ti]).strip(), label_col: parts[li].strip()})
    return rows


def _rows(path: Path, text_col: str = "text", label_col: str = "label") -> list[dict]:
    if text_col.isdigit() and label_col.isdigit():
        return _positional_rows(path, text_col, label_col)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return _txt_rows(path, text_col, label_col)
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
    """`label_map` renames labels as read (e.g. {"0": "Negative"}); empty texts and labels are skipped.

    Digits for both `text_col` and `label_col` read a file without a header by column position
    (SemEval's `id<TAB>label<TAB>text` is text_col "2", label_col "1"), decoding `\\uXXXX` escapes.
    """
    path = Path(path)
    rows = _rows(path, text_col, label_col)
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
