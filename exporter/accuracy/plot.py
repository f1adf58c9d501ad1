"""Error per layer as an SVG bar chart: one horizontal bar per layer, worst first, no dependencies.

Each bar is the layer's worst SQNR (dB) over its rows (`exporter.accuracy.sensitivity`), labelled
with the PyTorch module path (the ONNX node name when unknown). Red below 10 dB, amber below 20 dB,
green above; a dashed line marks `threshold_db` when given. The SVG embeds in HTML as is and in
Markdown as `![per-layer error](layers.svg)`.
"""

from __future__ import annotations

from typing import Any, Sequence
from xml.sax.saxutils import escape

from exporter.accuracy.modules import display_name

ROW_HEIGHT = 18
LABEL_WIDTH = 260
BAR_WIDTH = 420
VALUE_WIDTH = 70
TOP = 40
COLORS = ((10.0, "#d9534f"), (20.0, "#f0ad4e"), (float("inf"), "#5cb85c"))


def error_plot_svg(rows: Sequence[dict[str, Any]], title: str, top: int = 30, threshold_db: float | None = None) -> str:
    """SVG text of the `top` worst layers' SQNR, worst first (see the module docstring)."""
    bars = _worst_per_layer(rows)[:top]
    height = TOP + ROW_HEIGHT * max(len(bars), 1) + 34
    width = LABEL_WIDTH + BAR_WIDTH + VALUE_WIDTH + 20
    values = [b[1] for b in bars]
    low = min([0.0, *values, *( [threshold_db] if threshold_db is not None else [])])
    high = max([1.0, *values, *([threshold_db] if threshold_db is not None else [])])
    span = high - low

    def x(value: float) -> float:
        return LABEL_WIDTH + (value - low) / span * BAR_WIDTH

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="sans-serif" font-size="12">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2:.1f}" y="20" text-anchor="middle" font-size="14" font-weight="bold">{escape(title)}</text>',
    ]
    if not bars:
        parts.append(f'<text x="{width / 2:.1f}" y="{TOP + 12}" text-anchor="middle">no quantized layer measured</text>')
    for index, (label, value) in enumerate(bars):
        y = TOP + index * ROW_HEIGHT
        start, end = sorted((x(0.0), x(value)))
        color = next(c for limit, c in COLORS if value < limit)
        short = label if len(label) <= 38 else "..." + label[-35:]
        parts.append(
            f'<text x="{LABEL_WIDTH - 6}" y="{y + 13}" text-anchor="end"><title>{escape(label)}</title>{escape(short)}</text>'
        )
        parts.append(
            f'<rect x="{start:.1f}" y="{y + 3}" width="{max(end - start, 1.0):.1f}" height="{ROW_HEIGHT - 6}" fill="{color}">'
            f"<title>{escape(label)}: {value:.1f} dB</title></rect>"
        )
        parts.append(f'<text x="{LABEL_WIDTH + BAR_WIDTH + 6}" y="{y + 13}">{value:.1f} dB</text>')
    axis_y = TOP + ROW_HEIGHT * max(len(bars), 1)
    parts.append(f'<line x1="{x(0.0):.1f}" y1="{TOP}" x2="{x(0.0):.1f}" y2="{axis_y}" stroke="#333"/>')
    parts.append(f'<line x1="{LABEL_WIDTH}" y1="{axis_y}" x2="{LABEL_WIDTH + BAR_WIDTH}" y2="{axis_y}" stroke="#333"/>')
    for tick in _ticks(low, high):
        parts.append(f'<text x="{x(tick):.1f}" y="{axis_y + 14}" text-anchor="middle" font-size="10">{tick:g}</text>')
    parts.append(
        f'<text x="{LABEL_WIDTH + BAR_WIDTH / 2:.1f}" y="{axis_y + 28}" text-anchor="middle" font-size="11">'
        "SQNR of the layer's output in isolation, dB (higher is better)</text>"
    )
    if threshold_db is not None:
        parts.append(
            f'<line x1="{x(threshold_db):.1f}" y1="{TOP}" x2="{x(threshold_db):.1f}" y2="{axis_y}" '
            'stroke="#333" stroke-dasharray="4 3"/>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _worst_per_layer(rows: Sequence[dict[str, Any]]) -> list[tuple[str, float]]:
    worst: dict[str, tuple[str, float]] = {}
    for row in rows:
        key = row.get("node") or row.get("tensor", "?")
        value = float(row["sqnr_db"])
        if key not in worst or value < worst[key][1]:
            worst[key] = (display_name(row), value)
    return sorted(worst.values(), key=lambda item: item[1])


def _ticks(low: float, high: float) -> list[float]:
    span = high - low
    step = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200) if span / s <= 8)
    first = (low // step) * step
    ticks, value = [], first
    while value <= high + 1e-9:
        if value >= low - 1e-9:
            ticks.append(round(value, 6))
        value += step
    return ticks
