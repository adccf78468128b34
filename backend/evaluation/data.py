"""The three data sets of a run — source, stream, test — read once, labels mapped, leaks removed.

Every file goes through `backend.datasets.load_labelled` (CSV, TSV, JSONL, Label Studio export,
TweetEval text/label pairs, headerless TSV by column position), so `evaluate` reads what `train` reads.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from backend.datasets import load_labelled
from backend.labelstudio.config import normalise_label


@dataclass
class Split:
    texts: list[str]
    labels: list[str]  # one project choice per text (the harness evaluates single-choice controls)
    origin: str

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, idx: Sequence[int], origin: str | None = None) -> Split:
        return Split([self.texts[i] for i in idx], [self.labels[i] for i in idx], origin or self.origin)


@dataclass
class EvalData:
    labels: list[str]
    source: Split
    stream: Split
    test: Split
    source_test: Split | None
    notes: list[str]


def read(paths: Sequence[Path], text_col: str, label_col: str, label_map: Mapping[str, str] | None,
         dedupe: bool = False) -> Split:
    texts, labels, seen = [], [], set()
    for path in paths:
        data = load_labelled(path, text_col, label_col, label_map)
        for text, names in zip(data.texts, data.labels, strict=True):
            if len(names) != 1:
                raise ValueError(f"{path}: the harness evaluates single-choice labels; a row has {names}")
            text = text.strip()
            if dedupe:
                if text in seen:
                    continue
                seen.add(text)
            texts.append(text)
            labels.append(names[0])
    return Split(texts, labels, " + ".join(str(p) for p in paths))


def parse_label_map(value: str | None) -> dict[str, str] | None:
    """--label-map: a JSON object or a file holding one ({"negative": "Bearish", "0": "Bearish"})."""
    if not value:
        return None
    text = Path(value).read_text(encoding="utf-8") if Path(value).is_file() else value
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--label-map is not a JSON object or a file holding one: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError('--label-map must be a JSON object like {"negative": "Bearish"}')
    return {str(k): str(v) for k, v in data.items()}


def subsample(split: Split, rows: int | None, seed: int) -> Split:
    if not rows or rows >= len(split):
        return split
    idx = sorted(random.Random(seed).sample(range(len(split)), rows))
    return split.take(idx)


def load(source: Sequence[Path], stream: Path, test: Path | None, test_split: float, source_test: Path | None,
         text_col: str = "text", label_col: str = "label", label_map: Mapping[str, str] | None = None,
         labels: Sequence[str] | None = None, seed: int = 0, source_rows: int | None = None,
         stream_rows: int | None = None, test_rows: int | None = None, source_text_col: str | None = None,
         source_label_col: str | None = None, shuffle: bool = True) -> EvalData:
    """Read and check the run's data. Without `test`, a seeded `test_split` share of the stream is the test.

    The source files (and `source_test`) may have their own columns: cold-start data usually comes from elsewhere.
    The stream is shuffled (seeded) unless `shuffle` is off: public files are often grouped by label or topic
    (twitter-financial-news-sentiment has a block of 1,000 Neutral rows), and stages of one class say little.

    Texts of the stream and the test are removed from the source (a cold start must not have seen them), and
    every label must be one of the project's choices after `label_map`: a silent drop would flatter the figures.
    """
    notes: list[str] = []
    src_cols = (source_text_col or text_col, source_label_col or label_col)
    src = read(source, *src_cols, label_map, dedupe=True)
    stm = read([stream], text_col, label_col, label_map)
    if test is not None:
        tst = read([test], text_col, label_col, label_map)
    else:
        if not 0.0 < test_split < 1.0:
            raise ValueError("without --test, --test-split must be within (0, 1)")
        order = list(range(len(stm)))
        random.Random(seed).shuffle(order)
        n_test = round(len(order) * test_split)
        tst = stm.take(sorted(order[:n_test]), f"{stream} ({test_split:g} split, seed {seed})")
        stm = stm.take(sorted(order[n_test:]), f"{stream} ({1 - test_split:g} split, seed {seed})")
        notes.append(f"test = a seeded {test_split:.0%} split of the stream file")
    stm = subsample(stm, stream_rows, seed)
    if shuffle:
        order = list(range(len(stm)))
        random.Random(seed + 1).shuffle(order)
        stm = stm.take(order)
        notes.append(f"stream shuffled (seed {seed})")
    tst = subsample(tst, test_rows, seed)
    src_tst = subsample(read([source_test], *src_cols, label_map), test_rows, seed) if source_test else None
    # Sampled before the leak check, so runs on different streams share (and cache) the same source rows.
    src = subsample(src, source_rows, seed)
    held = set(stm.texts) | set(tst.texts) | (set(src_tst.texts) if src_tst else set())
    keep = [i for i, t in enumerate(src.texts) if t not in held]
    if len(keep) < len(src):
        notes.append(f"{len(src) - len(keep)} source texts also in the stream or a test set were removed")
        src = src.take(keep)
    choices = list(labels) if labels else sorted(set(src.labels), key=normalise_label)  # what a cold start can say
    by_norm = {normalise_label(c): c for c in choices}
    for name, split in (("source", src), ("stream", stm), ("test", tst), ("source test", src_tst)):
        if split is None:
            continue
        unknown = sorted({y for y in split.labels if normalise_label(y) not in by_norm})
        if unknown:
            raise ValueError(f"{name} labels {unknown[:10]} are not among the choices {choices}; "
                             "rename them with --label-map (e.g. '{\"0\": \"Bearish\"}')")
        split.labels = [by_norm[normalise_label(y)] for y in split.labels]
    for name, split in (("source", src), ("stream", stm), ("test", tst)):
        if not len(split):
            raise ValueError(f"the {name} set is empty")
    return EvalData(choices, src, stm, tst, src_tst, notes)
