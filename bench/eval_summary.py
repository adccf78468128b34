"""One markdown table over every evaluation run in docs/eval/*/results.json (for docs/benchmarks.md §5).

    .venv/bin/python bench/eval_summary.py
"""

from __future__ import annotations

import json
from pathlib import Path

from backend.evaluation.stream import auto_claim

REPO = Path(__file__).resolve().parent.parent


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def claim(run: dict) -> str:
    """The stated auto-accepted accuracy, recomputed from the stored stages so every run reads by today's rule."""
    if not run.get("auto_accuracy_claim") or "auto_items" not in run["stages"][-1]:
        return "not stated (run before the claim existed)"
    c = auto_claim(run["stages"], run["test_auto_accuracy"])
    if c.get("met") is None:
        return "n/a"
    out = f"{pct(c['stated'])} → {pct(c['unseen'])}, {'met' if c['met'] else 'missed'}"
    old = run["auto_accuracy_claim"]  # the last stage's bound alone, as runs before the change stated it
    if "per_stage" not in old and old.get("met") is not None:
        out += f" (last stage alone {pct(old['stated'])}, {'met' if old['met'] else 'missed'})"
    a = run.get("audit_claim")  # runs with REVIEW_AUDIT_SHARE: the claim a live project can make from its audit
    if a and a.get("met") is not None:
        out += f"; from the audit {pct(a['stated'])}, {'met' if a['met'] else 'missed'}"
    return out


def test_below(stages: list[dict]) -> str:
    if "test_hard_share_before_cap" not in stages[0]:
        return ""  # runs made before the harness measured it
    return f" / {pct(stages[0]['test_hard_share_before_cap'])} → {pct(stages[-1]['test_hard_share_before_cap'])}"


def rule(run: dict) -> str:
    """What the hard-share column measures for this run: the share under its threshold, or the paper's disagreement."""
    st = run.get("settings") or {}
    if st.get("review_rule", "confidence") == "confidence":
        return ""
    under = ""
    if "test_below_reference_share" in run["stages"][0]:
        s = run["stages"]
        under = (f"; under 0.9: {pct(s[0]['below_reference_share'])} → {pct(s[-1]['below_reference_share'])}"
                 f" / {pct(s[0]['test_below_reference_share'])} → {pct(s[-1]['test_below_reference_share'])}")
    threshold = st.get("review_confidence_threshold")
    kind = "disagreement" if not threshold else f"disagreement or under {threshold}"
    return f" ({kind}{under})"


def test_ece(stages: list[dict]) -> str:
    if "test_ece" not in stages[0]:
        return "n/a"  # runs made before the harness measured it
    return f"{100 * stages[0]['test_ece']:.1f} → {100 * stages[-1]['test_ece']:.1f} pt"


def main() -> None:
    print("| run | reviewer | stream items | final acc. | reviewed | auto-accepted acc. (stream / unseen test) | "
          "auto-accepted acc. stated (lowest 95% bound of the last 3 stages) → unseen | "
          "plain vote | no learning, same review | "
          "hard share before the cap (under the threshold unless said), first → last stage (stream / unseen test) | "
          "unseen test ECE, first → last | "
          "source test change |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for path in sorted((REPO / "docs" / "eval").glob("*/results.json")):
        r = json.loads(path.read_text())
        run, stages = r["run"], r["run"]["stages"]
        src = run.get("source_test")
        print(f"| {r['name']} | {run['reviewer']}{' (SIMULATION)' if r['simulation'] else ''} | {run['items']} | "
              f"{pct(run['final_accuracy'])} | {pct(run['reviewed_share'])} | "
              f"{pct(run['auto_accuracy'])} / {pct(run['test_auto_accuracy'])} | {claim(run)} | "
              f"{pct(run['vote_accuracy'])} | "
              f"{pct(r['no_learning']['final_accuracy'])} | "
              f"{pct(stages[0]['hard_share_before_cap'])} → {pct(stages[-1]['hard_share_before_cap'])}"
              f"{test_below(stages)}{rule(run)} | {test_ece(stages)} | "
              f"{'n/a' if not src else format(src['change_points'], '+.2f') + ' pt'} |")


if __name__ == "__main__":
    main()
