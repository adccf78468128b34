"""The HTML of the team's page: the projects, and one project's loop (versions, routes, trust, budgets, jobs)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from html import escape
from typing import Any

from backend.decision.states import RouteName
from backend.http.ui.charts import line_chart, stacked_bars

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f2937;color:#fff;padding:10px 24px}header a{color:#fff;text-decoration:none;font-weight:600}
main{max-width:1180px;margin:0 auto;padding:16px 24px}
section{background:#fff;border:1px solid #e5e5e5;border-radius:6px;padding:12px 16px;margin:0 0 16px}
h1{font-size:20px;margin:8px 0 16px}h2{font-size:15px;margin:0 0 8px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px}
.tile{border:1px solid #eee;border-radius:6px;padding:8px 10px}.tile b{display:block;font-size:20px}
.two{display:grid;grid-template-columns:1fr 1fr;gap:16px}@media(max-width:900px){.two{grid-template-columns:1fr}}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eee}
.chart{width:100%;max-width:760px;height:auto;display:block}.empty{color:#777;font-style:italic}.trusted{color:#2e7d32}.distrusted{color:#c62828}
.probation{color:#8d6e00}code{font-size:12px}form input{padding:4px 6px}
"""


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{STYLE}</style></head>"
            f"<body><header><a href='/ui'>AutoAnnotator</a> · the loop at a glance</header><main>{body}</main>"
            "</body></html>")


def _when(t: float | None) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M") if t else "–"


def _num(key: str, value: Any, fmt: str = "{}") -> str:
    """A figure the page shows, tagged so a test can read it back and compare it with the API."""
    shown = "–" if value is None else fmt.format(value)
    raw = "" if value is None else json.dumps(value)
    return f"<span data-k='{escape(key)}' data-v='{escape(raw)}'>{escape(shown)}</span>"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> str:
    if not rows:
        return f"<p class='empty'>{escape(empty)}</p>"
    return ("<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows) + "</table>")


def index(projects: Sequence[dict[str, Any]]) -> str:
    rows = [[f"<a href='/ui/projects/{escape(p['project_id'])}'>{escape(p['project_id'])}</a>",
             escape(", ".join(c["control"] for c in p.get("controls") or []) or "–"),
             escape(str(p.get("model_version") or "–")), _when(p.get("updated_at"))] for p in projects]
    body = ("<h1>Projects</h1><section>"
            + _table(["project", "controls", "model version", "last seen"], rows,
                     "No project yet: connect this backend to a Label Studio project (Settings → Model) and "
                     "its projects appear here.") + "</section>")
    return _page("AutoAnnotator", body)


def project(o: dict[str, Any], task: dict[str, Any] | None = None) -> str:
    pid = o["project"]
    u = o["usage"]
    routes = o["routes"]
    total = sum(routes.values())
    tiles = [("tasks predicted", _num("tasks", o["tasks"], "{:,}")),
             ("auto-accepted", _num("routes.auto", routes["auto"], "{:,}")),
             ("settled by the LLM", _num("routes.llm", routes["llm"], "{:,}")),
             ("handed to people", _num("routes.human", routes["human"], "{:,}")),
             ("LLM calls", _num("llm.calls", u.get("calls"), "{:,}")),
             ("LLM cost (USD)", _num("cost_usd", round(o["cost_usd"], 6), "{:.4f}")),
             ("USD per 1,000 tasks", _num("cost_per_1000", None if o["cost_per_1000"] is None
                                          else round(o["cost_per_1000"], 6), "{:.4f}"))]
    body = [f"<h1>Project {escape(pid)}</h1>"]
    if not total and not o["stages"]:
        body.append("<section><p class='empty'>Nothing predicted for this project yet. Open a task in Label "
                    "Studio, or use <em>Retrieve predictions</em>, and the loop shows up here.</p></section>")
    body.append("<section><h2>So far</h2><div class='grid'>"
                + "".join(f"<div class='tile'>{escape(k)}<b>{v}</b></div>" for k, v in tiles) + "</div></section>")
    st = o["stages"]
    labels = [f"{i + 1}" for i in range(len(st))]
    versions_chart = line_chart("held-out macro-F1 per stage", labels,
                                {"candidate": [s["candidate_f1"] for s in st],
                                 "served before": [s["current_f1"] for s in st]},
                                marks=["promoted" if s["promoted"] else "kept aside" for s in st])
    stage_rows = [[str(i + 1), _when(s["at"]), f"<code>{escape(s['version'])}</code>", escape(s["control"]),
                   "promoted" if s["promoted"] else "<b>kept aside</b>", escape(s["reason"])]
                  for i, s in enumerate(st)][::-1][:20]
    body.append("<section><h2>Model versions</h2>"
                + (versions_chart or "<p class='empty'>No stage has trained yet: stages start after "
                   "TRAIN_EVERY_N annotations (START_TRAINING starts one at once).</p>")
                + _table(["stage", "when", "version", "control", "gate", "why"], stage_rows, "") + "</section>")
    vs = o["versions"]
    vlabels = [f"v{i + 1}" for i in range(len(vs))]
    routes_chart = stacked_bars("tasks per route and model version", vlabels,
                                {r: [v[r] for v in vs] for r in RouteName})
    hard_chart = line_chart("share sent for review (LLM or people) per model version", vlabels,
                            {"sent for review": [v["reviewed_share"] for v in vs]})
    body.append("<div class='two'><section><h2>Routes over time</h2>"
                + (routes_chart or "<p class='empty'>No prediction yet.</p>") + "</section>"
                + "<section><h2>Hard share trend</h2>"
                + (hard_chart or "<p class='empty'>No prediction yet.</p>") + "</section></div>")
    body.append("<section><h2>LLM trust ledger</h2>" + _trust(o["trust"]) + "</section>")
    body.append("<div class='two'><section><h2>Budgets</h2>" + _budgets(u) + "</section>"
                + "<section><h2>Queue and jobs</h2>" + _jobs(o) + "</section></div>")
    body.append("<section><h2>Recent errors</h2>"
                + _table(["when", "what", "error"], [[_when(e["at"]), escape(e["what"]),
                                                      f"<code>{escape(str(e['error'])[:300])}</code>"]
                                                     for e in o["errors"]], "No errors.") + "</section>")
    body.append("<section><h2>Find a task</h2><form method='get'><input name='task' type='number' min='0' "
                "placeholder='task id' aria-label='task id'> <button>Show provenance</button></form>"
                + (_task(task) if task is not None else "") + "</section>")
    return _page(f"AutoAnnotator · project {pid}", "".join(body))


def _trust(ledgers: Sequence[dict[str, Any]]) -> str:
    if not ledgers:
        return "<p class='empty'>No LLM is configured or checked on this project yet.</p>"
    out = []
    for led in ledgers:
        rows = []
        for c in led["classes"]:
            ci = c["llm_interval"]
            key = f"trust.{led['control']}.{led['llm_model']}.{c['label']}"
            rows.append([escape(c["label"]), f"<span class='{c['state']}'>{escape(c['state'])}</span>",
                         _num(key + ".n", c["n"]), _num(key + ".llm_accuracy", c["llm_accuracy"], "{:.1%}"),
                         "–" if not ci else f"{ci[0]:.1%} – {ci[1]:.1%}",
                         _num(key + ".ensemble_accuracy", c["ensemble_accuracy"], "{:.1%}")])
        out.append(f"<p><b>{escape(led['control'])}</b> · <code>{escape(led['llm_model'])}</code> · "
                   f"{_num('trust.' + led['control'] + '.' + led['llm_model'] + '.checks', led['checks'])} checks"
                   f"{' · new: every review is audited' if led['new'] else ''} · audit rate {led['audit_rate']:g}</p>"
                   + _table(["class", "state", "checks", "LLM accuracy", "95 % interval",
                             "ensemble on the same tasks"], rows, ""))
    return "".join(out)


def _budgets(u: dict[str, Any]) -> str:
    def left(used: float, cap: float) -> str:
        return "no cap" if not cap else f"{max(cap - used, 0):,.4g} left of {cap:,.4g}"

    tasks = u.get("tasks") or 0
    share = u.get("human_max_share", 1.0)
    rows = [["LLM calls", _num("llm.calls", u.get("calls"), "{:,}"), left(u.get("calls", 0), u.get("max_calls", 0))],
            ["LLM USD", _num("llm.usd", u.get("usd"), "{:.4f}"), left(u.get("usd", 0.0), u.get("max_usd", 0.0))],
            ["calls refused (budget)", _num("llm.denied", u.get("denied"), "{:,}"), ""],
            ["tasks handed to people", _num("human_tasks", u.get("human_tasks"), "{:,}"),
             "no cap" if share >= 1 else left(u.get("human_tasks", 0), share * tasks)],
            ["tasks reviewed (LLM or people)", _num("reviews", u.get("reviews"), "{:,}"),
             "no cap" if u.get("review_max_share", 1.0) >= 1 else left(u.get("reviews", 0),
                                                                       u["review_max_share"] * tasks)]]
    return _table(["", "used", "left"], rows, "")


def _jobs(o: dict[str, Any]) -> str:
    rows = [["training", escape(s), _num(f"jobs.{s}", n)] for s, n in sorted(o["jobs"].items())]
    rows += [["review", escape(s), _num(f"review_jobs.{s}", n)] for s, n in sorted(o["review_jobs"].items())]
    return _table(["queue", "state", "jobs"], rows, "No jobs yet.")


def _task(task: dict[str, Any]) -> str:
    records = task.get("records") or []
    if not records:
        return f"<p class='empty'>No prediction recorded for task {escape(str(task.get('task')))}.</p>"
    rows = []
    for r in records:
        llm = r.get("llm") or {}
        rows.append([escape(r["control"]), f"<code>{escape(r['model_version'])}</code>",
                     f"<b data-k='task.route'>{escape(r['route'])}</b>", escape(", ".join(r.get("labels") or [])),
                     escape(", ".join(r.get("ensemble_labels") or [])),
                     escape(" | ".join(", ".join(v) for v in r.get("votes") or [])),
                     escape(f"{r.get('confidence') or 0:.3f}"),
                     escape(str(llm.get("raw") or "–"))[:200], escape(f"{llm.get('cost_usd') or 0:.6f}"),
                     escape(r.get("reason") or "")])
    return _table(["control", "version", "route", "label", "ensemble", "votes", "confidence", "LLM answer",
                   "LLM USD", "reason"], rows, "")
