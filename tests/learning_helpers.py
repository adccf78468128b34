"""Webhook payloads shaped like Label Studio 1.23.2's, and real in-domain texts to annotate."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

from tests.conftest import DATA

_ids = itertools.count(1000)
TWEETS = DATA / "tweet-sentiment-extraction-train.csv"


def stream(n: int, skip: int = 0) -> list[tuple[str, str]]:
    """(text, Label) pairs from tweet-sentiment-extraction: another domain than the shipped sample."""
    out = []
    with Path(TWEETS).open(encoding="utf-8", newline="") as fh:
        for row in itertools.islice(csv.DictReader(fh), skip, None):
            text = (row["text"] or "").strip()
            if text:
                out.append((text, row["sentiment"].capitalize()))
            if len(out) == n:
                break
    return out


def annotation_event(project_id: int, task_id: int, text: str, label: str | list[str], config: str = "...",
                     action: str = "ANNOTATION_CREATED", annotation_id: int | None = None,
                     control: str = "sentiment") -> dict:
    choices = label if isinstance(label, list) else [label]
    ann_id = annotation_id if annotation_id is not None else next(_ids)
    return {
        "action": action,
        "annotation": {"id": ann_id, "result": [{"from_name": control, "to_name": "text", "type": "choices",
                                                 "value": {"choices": choices}}],
                       "was_cancelled": False, "task": task_id, "project": project_id, "completed_by": 1},
        "task": {"id": task_id, "data": {"text": text}, "project": project_id},
        "project": {"id": project_id, "label_config": config},
    }
