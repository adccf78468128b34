"""results.json → a markdown table and PNG plots, so a run can be read without opening JSON.

matplotlib is imported here only, with the headless Agg backend: the harness runs on servers and in CI. It is not a
runtime requirement (the server never plots): without it `evaluate` writes the table and JSON and says so.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SIMULATION_BANNER = ("**SIMULATION**: the reviewer is simulated (right with probability P); "
                     "these are not measured labels.")


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _ece(x: float | None) -> str:
    """Expected calibration error, in points: how far stated confidence is from accuracy (runs before it: n/a)."""
    return "n/a" if x is None else f"{100 * x:.1f} pt"


def _claim(main: dict[str, Any], key: str = "auto_accuracy_claim") -> str:
    c = main.get(key) or {}
    if c.get("met") is None:
        return "n/a"
    return f"{_pct(c['stated'])} → {_pct(c['unseen'])}: {'met' if c['met'] else 'missed'}"


def markdown(results: dict[str, Any]) -> str:
    main = results["run"]
    cold = results["cold_start"]
    lines = [f"# Evaluation: {results['name']}", ""]
    if main["simulation"]:
        lines += [SIMULATION_BANNER, ""]
    data = results["data"]
    files = data["source"].split(" + ")
    source = files[0] if len(files) == 1 else f"{len(files)} files: {files[0]} … {files[-1]}"
    lines += [f"Source {data['source_rows']} rows ({source}); stream {data['stream_rows']} items "
              f"({data['stream']}); test {data['test_rows']} items ({data['test']}). Reviewer `{main['reviewer']}`, "
              f"stages of {results['config']['stage_size']}, rule `{main['settings']['review_rule']}`, threshold "
              f"{main['settings']['review_confidence_threshold']}, max review share "
              f"{main['settings']['review_max_share']}.", ""]
    rows = [
        ("final accuracy (stream's final labels)", _pct(main["final_accuracy"])),
        ("final accuracy without the final re-label pass", _pct(main["final_accuracy_without_relabel"])),
        ("reviewed share", _pct(main["reviewed_share"])),
        ("sent for review, left to humans (not settled)", _pct(main["human_share"])),
        ("auto-accepted share / accuracy (stream)", f"{_pct(main['auto_share'])} / {_pct(main['auto_accuracy'])}"),
        ("auto-accepted share / accuracy (unseen test, final models)",
         f"{_pct(main['test_auto_share'])} / {_pct(main['test_auto_accuracy'])}"),
        ("auto-accepted accuracy stated (lowest 95% lower bound of the last 3 stages) → unseen test", _claim(main)),
        *([("auto-accepted accuracy stated from the audit (95% lower bound, last 3 stages) → unseen test",
            _claim(main, "audit_claim"))] if main.get("audit_claim") else []),
        ("reviewer accuracy on what it settled", _pct(main["reviewer_accuracy"])),
        ("plain vote, no review, no learning (stream)", _pct(main["vote_accuracy"])),
        ("same router and reviewer, no learning (oracle)",
         f"{_pct(results['no_learning']['final_accuracy'])} at {_pct(results['no_learning']['reviewed_share'])} "
         "reviewed"),
        ("best single specialist at cold start (stream)", _pct(max(cold["stream_specialists"].values()))),
        ("ensemble on test: cold start → end", f"{_pct(cold['test_accuracy'])} → {_pct(main['test_accuracy'])}"),
        ("LLM calls / tokens / USD", f"{main['llm_calls']} / {main['llm_tokens']} / {main['llm_cost_usd']}"),
    ]
    if results.get("llm_only"):
        lo = results["llm_only"]
        rows.append(("LLM-only tokens (every item, same prompt)",
                     f"{lo['llm_only_tokens']} ({lo['method']})"))
    if main.get("source_test"):
        st = main["source_test"]
        rows.append(("source test: cold start → end", f"{_pct(st['before'])} → {_pct(st['after'])} "
                                                      f"({st['change_points']:+.2f} pt)"))
    lines += ["| measure | value |", "|---|---|", *[f"| {a} | {b} |" for a, b in rows], ""]
    names = list(main["specialists"])
    lines += ["| stage | items | hard share (before cap) | unseen test hard (before cap) | unseen test below 0.9 | "
              "test ECE | auto acc. | " + " | ".join(f"test {n}" for n in names) + " | test ensemble | training |",
              "|---" * (8 + len(names)) + "|---|"]
    for s in main["stages"]:
        lines.append(f"| {s['stage']} | {s['items']} | {_pct(s['hard_share'])} ({_pct(s['hard_share_before_cap'])}) | "
                     f"{_pct(s.get('test_hard_share_before_cap'))} | {_pct(s.get('test_below_reference_share'))} | "
                     f"{_ece(s.get('test_ece'))} | "
                     f"{_pct(s['auto_accuracy'])} | "
                     + " | ".join(_pct(s["test_specialists"].get(n)) for n in names)
                     + f" | {_pct(s['test_accuracy'])} | {s['training']} |")
    if results.get("sweep"):
        lines += ["", "| threshold | reviewed share | final accuracy | auto-accepted accuracy |", "|---|---|---|---|"]
        for p in results["sweep"]:
            lines.append(f"| {p['threshold']} | {_pct(p['reviewed_share'])} | {_pct(p['final_accuracy'])} | "
                         f"{_pct(p['auto_accuracy'])} |")
    lines += ["", f"Cold start {cold['seconds']} s; whole run {results['seconds']} s on {results['machine']}."]
    return "\n".join(lines) + "\n"


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    try:
        import matplotlib
    except ImportError:
        log.warning("no plots: matplotlib is not installed (pip install matplotlib, or `make install`)")
        return []

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = results["run"]
    title = results["name"] + (" (SIMULATION)" if main["simulation"] else "")
    written = []

    fig, ax = plt.subplots(figsize=(7, 4.5))
    stages = main["stages"]
    xs = [0] + [s["stage"] for s in stages]
    cold = results["cold_start"]
    for name in main["specialists"]:
        ax.plot(xs, [cold["test_specialists"].get(name)] + [s["test_specialists"].get(name) for s in stages],
                marker="o", label=f"{name} (test)")
    ax.plot(xs, [cold["test_accuracy"]] + [s["test_accuracy"] for s in stages], marker="s", lw=2,
            label="ensemble (test)")
    ax.plot([s["stage"] for s in stages], [s["hard_share"] for s in stages], ls="--", color="black",
            label="reviewed share (stream)")
    ax.plot([s["stage"] for s in stages], [s.get("hard_share_before_cap", s["hard_share"]) for s in stages],
            ls=":", color="gray", label="below the threshold, before REVIEW_MAX_SHARE")
    if all("test_hard_share_before_cap" in s for s in stages):
        ax.plot([s["stage"] for s in stages], [s["test_hard_share_before_cap"] for s in stages], ls="-.",
                color="tab:red", label="unseen test below the threshold")
    written.append(_save(fig, ax, f"{title}: per stage", "stage (0 = cold start)", "accuracy / share",
                         out / "stages.png"))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    points = results.get("sweep") or [{"threshold": main["settings"]["review_confidence_threshold"],
                                       "reviewed_share": main["reviewed_share"],
                                       "final_accuracy": main["final_accuracy"]}]
    points = sorted(points, key=lambda p: p["reviewed_share"])
    ax.plot([p["reviewed_share"] for p in points], [p["final_accuracy"] for p in points], marker="o", lw=2,
            label="stream final accuracy (learning on)")
    for p in points:
        ax.annotate(f"t={p['threshold']}", (p["reviewed_share"], p["final_accuracy"]), fontsize=7,
                    textcoords="offset points", xytext=(3, -10))
    curve = main["test_tradeoff"]
    ax.plot([c["reviewed_share"] for c in curve], [c["accuracy"] for c in curve], ls="--",
            label="unseen test, final models, least confident reviewed")
    written.append(_save(fig, ax, f"{title}: accuracy against review effort", "share of items reviewed",
                         "final accuracy", out / "tradeoff.png"))
    return written


def _save(fig: Any, ax: Any, title: str, xlabel: str, ylabel: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
