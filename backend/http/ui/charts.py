"""Small SVG charts drawn on the server: a line chart with markers and a stacked bar chart. Pure stdlib."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

WIDTH, HEIGHT = 640, 220
PAD_L, PAD_R, PAD_T, PAD_B = 44, 12, 26, 34
COLOURS = {"auto": "#4c78a8", "llm": "#f58518", "human": "#54a24b", "pending": "#b7b7b7"}


def _frame(inner: str, title: str) -> str:
    return (f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
            f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>{inner}</svg>')


def _axes(y_max: float, fmt: str) -> str:
    out = []
    for k in range(5):
        v = y_max * k / 4
        y = HEIGHT - PAD_B - (HEIGHT - PAD_T - PAD_B) * k / 4
        out.append(f'<line x1="{PAD_L}" x2="{WIDTH - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>'
                   f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{fmt.format(v)}</text>')
    return "".join(out)


def _x(i: int, n: int) -> float:
    span = WIDTH - PAD_L - PAD_R
    return PAD_L + span * (i + 0.5) / max(n, 1)


def _y(v: float, y_max: float) -> float:
    return HEIGHT - PAD_B - (HEIGHT - PAD_T - PAD_B) * (v / y_max if y_max else 0.0)


def _xlabels(labels: Sequence[str]) -> str:
    n = len(labels)
    step = max(1, n // 10)  # at most ~10 labels, whatever the number of points
    return "".join(f'<text x="{_x(i, n):.1f}" y="{HEIGHT - PAD_B + 16}" text-anchor="middle" font-size="11">'
                   f"{escape(label)}</text>" for i, label in enumerate(labels) if i % step == 0)


def line_chart(title: str, labels: Sequence[str], series: Mapping[str, Sequence[float | None]],
               marks: Sequence[str] = (), y_max: float = 1.0, fmt: str = "{:.0%}") -> str:
    """One line per series over `labels`; `marks` ("promoted" / "kept aside" / "") marks the first series' points."""
    if not labels:
        return ""
    colours = ["#4c78a8", "#9e9e9e", "#72b7b2", "#f58518"]
    parts = [_axes(y_max, fmt), _xlabels(labels)]
    for s, (name, values) in enumerate(series.items()):
        colour = colours[s % len(colours)]
        pts = [(_x(i, len(labels)), _y(v, y_max)) for i, v in enumerate(values) if v is not None]
        if len(pts) > 1:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                         + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
        for i, v in enumerate(values):
            if v is None:
                continue
            mark = marks[i] if s == 0 and i < len(marks) else ""
            fill = {"promoted": "#54a24b", "kept aside": "#e45756"}.get(mark, colour)
            parts.append(f'<circle cx="{_x(i, len(labels)):.1f}" cy="{_y(v, y_max):.1f}" r="4" fill="{fill}">'
                         f"<title>{escape(name)} {escape(labels[i])}: {fmt.format(v)}"
                         f"{' — ' + escape(mark) if mark else ''}</title></circle>")
        parts.append(f'<text x="{PAD_L + 8 + 130 * s}" y="12" font-size="11" fill="{colour}">'
                     f"■ {escape(name)}</text>")
    if any(marks):
        x = PAD_L + 8 + 130 * len(series)
        parts.append(f'<text x="{x}" y="12" font-size="11"><tspan fill="#54a24b">● promoted</tspan> '
                     '<tspan fill="#e45756">● kept aside</tspan></text>')
    return _frame("".join(parts), title)


def stacked_bars(title: str, labels: Sequence[str], stacks: Mapping[str, Sequence[float]]) -> str:
    """Bars over `labels`, each the sum of its `stacks` (counts), coloured by stack name."""
    if not labels:
        return ""
    totals = [sum(v[i] for v in stacks.values()) for i in range(len(labels))]
    y_max = max(totals) or 1.0
    n = len(labels)
    width = max((WIDTH - PAD_L - PAD_R) / n * 0.7, 1.0)
    parts = [_axes(y_max, "{:,.0f}"), _xlabels(labels)]
    for i in range(n):
        base = 0.0
        for name, values in stacks.items():
            v = values[i]
            if v <= 0:
                continue
            y0, y1 = _y(base, y_max), _y(base + v, y_max)
            parts.append(f'<rect x="{_x(i, n) - width / 2:.1f}" y="{y1:.1f}" width="{width:.1f}" '
                         f'height="{y0 - y1:.1f}" fill="{COLOURS.get(name, "#888")}"><title>{escape(labels[i])} '
                         f"{escape(name)}: {v:,.0f}</title></rect>")
            base += v
    for s, name in enumerate(stacks):
        parts.append(f'<text x="{PAD_L + 8 + 80 * s}" y="12" font-size="11" '
                     f'fill="{COLOURS.get(name, "#888")}">■ {escape(name)}</text>')
    return _frame("".join(parts), title)
