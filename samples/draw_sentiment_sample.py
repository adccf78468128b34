"""Draw the shipped sentiment sample from the SemEval 2013–2016 Task 4A tweets (a development-time tool; nothing
reads the source at run or test time).

    python samples/draw_sentiment_sample.py SEMEVAL_DIR --exclude TWEETEVAL_DIR --n 5000 --out samples/x.csv

SEMEVAL_DIR holds `*-A.tsv` files (`id<TAB>label<TAB>text`) as in cbaziotis/datastories-semeval2017-task4
(dataset/Subtask_A/downloaded). Every tweet that also appears in the TweetEval sentiment validation or test split
(EXCLUDE dir) is left out, so the bundle can be scored on both. The draw keeps the source's own class mix."""

from __future__ import annotations

import argparse
import csv
import random
import re
from pathlib import Path

_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")


def _clean(text: str) -> str:
    return " ".join(_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text).split())


def draw(semeval: Path, exclude: Path | None, n: int, seed: int) -> list[tuple[str, str]]:
    held_out: set[str] = set()
    if exclude is not None:
        for split in ("val", "test"):
            held_out |= {_clean(t) for t in (exclude / f"sentiment__{split}_text.txt").read_text().splitlines()}
    rows: dict[str, str] = {}
    for path in sorted(semeval.glob("*-A.tsv")):
        if "2017" in path.name or "sarcasm" in path.name:
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            if len(parts) < 3 or parts[1] not in ("positive", "negative", "neutral"):
                continue
            text = _clean("\t".join(parts[2:]))
            if text and text != "Not Available" and text not in held_out:
                rows.setdefault(text, parts[1].capitalize())
    pool = sorted(rows.items())
    random.Random(seed).shuffle(pool)
    return pool[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("semeval", type=Path)
    ap.add_argument("--exclude", type=Path, help="the TweetEval sentiment folder (val and test texts left out)")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    sample = draw(a.semeval, a.exclude, a.n, a.seed)
    with a.out.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(sample)
    print(f"{len(sample)} tweets -> {a.out}")


if __name__ == "__main__":
    main()
