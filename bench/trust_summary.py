"""Tabulate bench/trust_runs.sh: per stream and LLM quality, the final accuracy beside the plain vote and the
people-reviewed run, who saw what, the LLM's tokens against sending it everything, and the ledger against the truth.

    .venv/bin/python bench/trust_summary.py [docs/eval/trust] [--out docs/eval/trust/summary.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f} %"


def covers(ci: list[float] | None, reviewer: str) -> str:
    """Whether the ledger's interval holds the oracle's P (the accuracy it was built to have)."""
    if not ci:
        return "–"
    p = float(reviewer.removeprefix("noisy-llm-").split("-")[0])
    return "yes" if ci[0] <= p <= ci[1] else "no"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root", nargs="?", default="docs/eval/trust")
    ap.add_argument("--out")
    args = ap.parse_args()
    runs = {p.parent.name: json.loads(p.read_text()) for p in sorted(Path(args.root).glob("*/results.json"))}
    lines = ["| stream | LLM | final | plain vote | people-reviewed | people saw | LLM asked | LLM settled "
             "| tokens below LLM-only | ledger estimate [95 %] | true accuracy on its answers | covers P "
             "| auto-accepted stated → unseen |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        stream, _, reviewer = name.partition("-")
        if reviewer == "oracle" or "target" in reviewer:
            continue
        human = runs.get(f"{stream}-oracle", {})
        run = r["run"]
        t = r.get("trust") or {}
        only = r.get("llm_only_tokens")
        below = 1 - r["llm_tokens"] / only if only else None
        ci = t.get("interval")
        claim = run.get("auto_accuracy_claim") or {}
        lines.append(
            f"| {stream} | P = {reviewer.removeprefix('noisy-llm-')} | {pct(r['final_accuracy'])} "
            f"| {pct(r['vote_accuracy'])} | {pct(human.get('final_accuracy'))} | {pct(r.get('people_share'))} "
            f"| {pct(r.get('llm_asked_share'))} | {pct(r.get('llm_settled_share'))} | {pct(below)} "
            f"| {pct(t.get('estimate'))} [{pct(ci[0]) if ci else '–'}, {pct(ci[1]) if ci else '–'}] "
            f"({t.get('checks', 0)} checks) | {pct(t.get('true_accuracy'))} | "
            f"{covers(ci, reviewer)} "
            f"| {pct(claim.get('stated'))} → {pct(claim.get('unseen'))} |")
    targets = ["| stream | target | threshold | stated lower bound (audited items above it) "
               "| unseen: auto-accepted share / accuracy | holds | final | people saw |",
               "|---|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        t = r.get("target")
        if not t:
            continue
        ev = t["evidence"]
        bound = "none holds yet" if t["stated_lower_bound"] is None else (
            f"{pct(t['stated_lower_bound'])} ({ev['right']}/{ev['at_or_above_threshold']} of {ev['audited_tasks']})")
        holds = "–" if t["holds"] is None else ("yes" if t["holds"] else "no")
        targets.append(f"| {name.partition('-')[0]} | {pct(t['target_accuracy'], 0)} | {t['threshold']:g} | {bound} "
                       f"| {pct(t['unseen_auto_share'])} / {pct(t['unseen_auto_accuracy'])} | {holds} "
                       f"| {pct(r['final_accuracy'])} | {pct(r.get('people_share'))} |")
    if len(targets) > 2:
        lines += ["", *targets]
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
