"""report.html: the run's report as one self-contained page (inline CSS and SVG, no scripts, no network).

Built from the report.json data alone, so `render_html(json.load(open("report.json")))` re-renders any
finished run. Sections (each a `<section id=...>`): verdict, gate, layers (per-layer error plot),
decisions (per-layer int8/float), speed (latency bars), size (size bars), runtimes, passes, details.
A section whose data the run did not produce says so in one line instead of disappearing.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any, Iterable

SECTIONS = ("verdict", "gate", "layers", "decisions", "speed", "size", "runtimes", "passes", "details")
MAX_LAYERS = 40

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:1060px;margin:0 auto;padding:24px}
section{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:16px 20px;margin:0 0 16px}
h1{font-size:22px;margin:0 0 12px}h2{font-size:17px;margin:0 0 10px}
.verdict{font-size:18px;font-weight:600;padding:12px 16px;border-radius:6px}
.pass{background:#e3f5e8;color:#145c2c}.fail{background:#fbe3e3;color:#8a1c1c}
.warn{background:#fff4d6;color:#6b4e00;padding:8px 12px;border-radius:6px;margin:8px 0}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceff3}
th{background:#f2f4f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#145c2c;font-weight:600}.bad{color:#8a1c1c;font-weight:600}.muted{color:#6b7280}
svg text{font:12px system-ui,sans-serif;fill:#1d2330}
"""

PALETTE = {"pytorch": "#8b95a7", "float": "#4c78a8", "final": "#f58518", "other": "#54a24b"}


def write_html_report(path: Path, report: dict[str, Any]) -> None:
    """Write report.html for `report` (the report.json data) to `path`."""
    Path(path).write_text(render_html(report), encoding="utf-8")


def render_html(report: dict[str, Any]) -> str:
    """The whole page as text."""
    target = report.get("target", {}).get("name", "?")
    body = [
        _verdict(report),
        _gate(report),
        _layers(report),
        _decisions(report),
        _speed(report),
        _size(report),
        _runtimes(report),
        _passes(report),
        _details(report),
    ]
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
        f"<title>Export report: {_e(target)}</title><style>{CSS}</style></head>\n<body><main>\n"
        + "\n".join(body)
        + "\n</main></body></html>\n"
    )


# --- sections -------------------------------------------------------------------------------------


def _section(name: str, title: str, content: str) -> str:
    return f'<section id="{name}"><h2>{_e(title)}</h2>\n{content}\n</section>'


def _verdict(report: dict) -> str:
    passed = report.get("verdict") == "pass"
    lines = str(report.get("headline", "")).splitlines()
    out = [f'<h1>Export report: {_e(report.get("target", {}).get("name", "?"))}</h1>',
           f'<div class="verdict {"pass" if passed else "fail"}">{_e(lines[-1] if lines else report.get("verdict", "?"))}</div>']
    out += [f'<div class="warn">Warning: {_e(w)}</div>' for w in report.get("warnings", [])]
    model = report.get("model", {})
    out.append(f'<p class="muted">{_e(model.get("path", ""))} ({_e(model.get("format", ""))}) &rarr; '
               f'{_e(report.get("target", {}).get("description", ""))}</p>')
    return f'<section id="verdict">{"".join(out)}</section>'


def _gate(report: dict) -> str:
    checks = report.get("validation", {}).get("checks", [])
    if not checks:
        return _section("gate", "The gate", "<p>This target gates no figure.</p>")
    rows = [
        [_e(c.get("output") or "final (onnxruntime CPU)"), _e(c.get("figure")), _num(c.get("measured")), _e(c.get("rule")),
         _num(c.get("threshold")), '<span class="ok">pass</span>' if c.get("passed") else '<span class="bad">FAIL</span>']
        for c in checks
    ]
    table = _table(["checked on", "figure", "measured", "rule", "threshold", "verdict"], rows, numeric={2, 4})
    final = report.get("validation", {}).get("final_vs_original", {})
    shown = {k: final.get(k) for k in ("samples", "top1_agreement", "cosine", "sqnr_db", "max_abs_error",
                                       "reference_accuracy", "candidate_accuracy") if final.get(k) is not None}
    extra = "<p class=\"muted\">Final file vs the original model: " + ", ".join(f"{k} {_num(v)}" for k, v in shown.items()) + "</p>"
    return _section("gate", "The gate", table + extra)


def layer_rows(report: dict) -> list[dict]:
    """Per-layer error rows (node, module, sqnr_db) from the report, worst first; [] when the run made none."""
    candidates: list[Any] = []
    fb = report.get("accuracy_fallback") or {}
    for key in ("sensitivity", "layers", "decisions"):
        candidates.append(fb.get(key))
    for key in ("layers", "sensitivity", "decisions"):
        candidates.append(report.get(key))
    for rows in candidates:
        if not (isinstance(rows, list) and rows and isinstance(rows[0], dict)):
            continue
        key = next((k for k in ("sqnr_db", "error_db") if any(_float(r.get(k)) is not None for r in rows)), None)
        if key is not None:
            worst: dict[str, dict] = {}
            for row in rows:
                name = str(row.get("node") or row.get("name") or "?")
                value = _float(row.get(key))
                if value is None:
                    continue
                if name not in worst or value < worst[name]["sqnr_db"]:
                    worst[name] = {"node": name, "module": row.get("module") or "", "sqnr_db": value}
            return sorted(worst.values(), key=lambda r: r["sqnr_db"])
    return []


def _layers(report: dict) -> str:
    rows = layer_rows(report)
    if not rows:
        return _section("layers", "Error per layer",
                        "<p>No per-layer analysis in this run: it runs when the gate needs the mixed-precision search "
                        "(<code>--accuracy-budget</code>), or afterwards with <code>exporter inspect OUT_DIR</code>.</p>")
    shown = rows[:MAX_LAYERS]
    bars = [(f"{r['module'] or r['node']}", r["sqnr_db"], "final" if r["sqnr_db"] < 20 else "float") for r in shown]
    note = "<p class=\"muted\">SQNR (dB) each quantized layer adds alone, worst first; higher is better"
    note += f" ({len(rows) - len(shown)} more layers not shown).</p>" if len(rows) > len(shown) else ".</p>"
    return _section("layers", "Error per layer", _bar_chart(bars, unit="dB", chart_id="layer-plot") + note)


def decision_rows(report: dict) -> list[dict]:
    """Per-layer int8/float decisions: explicit decision rows when the report has them, else the layers kept in float."""
    fb = report.get("accuracy_fallback") or {}
    for rows in (fb.get("decisions"), report.get("decisions"), (report.get("search") or {}).get("decisions")
                 if isinstance(report.get("search"), dict) else None):
        if isinstance(rows, list) and rows and isinstance(rows[0], dict):
            return rows
    return [{**row, "precision": "float"} for row in fb.get("nodes_in_float", []) or []]


def _decisions(report: dict) -> str:
    rows = decision_rows(report)
    if not rows:
        note = "every quantizable layer is int8" if (report.get("quantization", {}).get("mode") in ("static", "dynamic")) else \
            "this target does not quantize"
        return _section("decisions", "Per-layer int8 / float decisions", f"<p>No layer was kept in float: {note}.</p>")
    numbers = ("sqnr_db", "error_db", "int8_ms", "float_ms", "saved_ms", "latency_cost_ms")
    keys = [k for k in ("node", "module", "op_type", "precision", "decision", "why", "reason", *numbers)
            if any(r.get(k) is not None for r in rows)]
    cells = [[_num(r.get(k)) if isinstance(r.get(k), (int, float)) else
              (f'<span class="{"ok" if r.get(k) == "int8" else "bad"}">{_e(r.get(k))}</span>' if k == "precision" else _e(r.get(k, "")))
              for k in keys] for r in rows]
    kept = sum(1 for r in rows if r.get("precision", "float") == "float")
    table = f"<p>{kept} of {len(rows)} layers listed run in float.</p>" + _table(
        keys, cells, numeric={i for i, k in enumerate(keys) if k in numbers})
    timed = [r for r in rows[:MAX_LAYERS // 2] if _float(r.get("int8_ms")) is not None and _float(r.get("float_ms")) is not None]
    if timed:
        bars = []
        for r in timed:
            name = str(r.get("module") or r.get("node"))
            bars += [(f"{name} int8", float(r["int8_ms"]), "final"), (f"{name} float", float(r["float_ms"]), "float")]
        table += "<p class=\"muted\">Per-layer latency in each precision (ms, lower is better):</p>" + _bar_chart(
            bars, unit="ms", chart_id="decision-plot")
    return _section("decisions", "Per-layer int8 / float decisions", table)


def latency_bars(report: dict) -> list[tuple[str, float, str]]:
    """(label, milliseconds, colour key) for every latency the run measured, PyTorch first."""
    m = report.get("measurements", {})
    lat = m.get("latency_ms", {})
    bars = []
    for key, label, colour in (("pytorch_eager", "PyTorch eager", "pytorch"), ("ort_float", "float ONNX (onnxruntime CPU)", "float"),
                               ("final", "final (onnxruntime CPU)", "final")):
        if _float(lat.get(key)) is not None:
            bars.append((label, float(lat[key]), colour))
    for rt in m.get("runtimes", []) or []:
        if _float(rt.get("latency_ms")) is not None:
            bars.append((f"{rt.get('file', 'final')} ({rt.get('runtime')})", float(rt["latency_ms"]), "other"))
    return bars


def _speed(report: dict) -> str:
    bars = latency_bars(report)
    if not bars:
        return _section("speed", "Latency", "<p>No latency was measured.</p>")
    setup = report.get("measurements", {}).get("latency_setup", "")
    return _section("speed", "Latency (batch 1, lower is better)",
                    _bar_chart(bars, unit="ms", chart_id="latency-plot") + f'<p class="muted">{_e(setup)}</p>')


def _size(report: dict) -> str:
    m = report.get("measurements", {})
    bars = []
    if _float(m.get("size_pytorch_bytes")) is not None:
        bars.append(("PyTorch model file", m["size_pytorch_bytes"] / 1024, "pytorch"))
    elif _float(m.get("params_original")) is not None:
        bars.append(("PyTorch (float32 parameters)", m["params_original"] * 4 / 1024, "pytorch"))
    if _float(m.get("size_float_bytes")) is not None:
        bars.append(("model.float.onnx", m["size_float_bytes"] / 1024, "float"))
    if _float(m.get("size_final_bytes")) is not None:
        bars.append(("model.onnx (final)", m["size_final_bytes"] / 1024, "final"))
    if not bars:
        return _section("size", "Size", "<p>No size was measured.</p>")
    return _section("size", "File size (KiB, lower is better)", _bar_chart(bars, unit="KiB", chart_id="size-plot"))


def _runtimes(report: dict) -> str:
    m = report.get("measurements", {})
    rows = []
    for rt in m.get("runtimes", []) or []:
        figs = rt.get("figures", {})
        rows.append([_e(rt.get("runtime")), _e(rt.get("file")), _e(rt.get("precision", "")), _num(rt.get("latency_ms")),
                     _num(figs.get("top1_agreement")), _num(figs.get("cosine")), _num(figs.get("sqnr_db")),
                     ('<span class="ok">pass</span>' if rt.get("passed") else '<span class="bad">FAIL</span>') if "passed" in rt else ""])
    golden = m.get("golden_vectors") or {}
    out = []
    if rows:
        out.append(_table(["runtime", "file", "precision", "latency ms", "top-1 agr.", "cosine", "SQNR dB", "gate"], rows,
                          numeric={3, 4, 5, 6}))
    if golden:
        figs = golden.get("figures_at_export", {})
        out.append(f"<p>Golden vectors: <code>{_e(golden.get('file', 'golden.json'))}</code>, {_num(golden.get('samples'))} samples "
                   f"({_e(golden.get('selection', ''))}); on onnxruntime CPU at export: "
                   + ", ".join(f"{k} {_num(figs.get(k))}" for k in ("top1_agreement", "cosine", "sqnr_db", "max_abs_error")
                               if figs.get(k) is not None)
                   + ". Check them on your runtime with <code>exporter verify OUT_DIR --runtime node|web|openvino|python</code>.</p>")
    if not out:
        out.append("<p>Only onnxruntime's CPU provider ran this model (see Latency).</p>")
    return _section("runtimes", "Runtimes and golden vectors", "\n".join(out))


def _passes(report: dict) -> str:
    passes = report.get("passes", [])
    if not passes:
        return _section("passes", "Compression passes", "<p>No compression pass ran.</p>")
    rows = []
    for p in passes:
        metrics = p.get("metrics", {})
        rows.append([_e(p.get("name")), _num(p.get("params_before")), _num(p.get("params_after")), _num(p.get("macs_before")),
                     _num(p.get("macs_after")), _num(metrics.get("top1_agreement")), _num(metrics.get("cosine")),
                     _num(p.get("seconds")), _e("; ".join(p.get("notes", [])[:2]))])
    return _section("passes", "Compression passes, one row each",
                    _table(["pass", "params before", "params after", "MACs before", "MACs after", "top-1 agr. vs original",
                            "cosine", "s", "notes"], rows, numeric={1, 2, 3, 4, 5, 6, 7}))


def _details(report: dict) -> str:
    ex, q = report.get("export", {}), report.get("quantization", {})
    items = [
        f"ONNX export: {_e(ex.get('exporter'))} exporter, opset {_e(ex.get('opset'))}, {_e(ex.get('node_count'))} nodes",
        f"Quantization: mode {_e(q.get('mode'))}, {_e(q.get('calibration_batches'))} calibration batches",
        f"Data: {_e(report.get('data', {}).get('calibration'))} / validation {_e(report.get('data', {}).get('validation'))}",
        "Stage times (s): " + ", ".join(f"{_e(k)} {_num(v)}" for k, v in report.get("stage_seconds", {}).items()),
        "Versions: " + ", ".join(f"{_e(k)} {_e(v)}" for k, v in report.get("versions", {}).items()),
    ]
    return _section("details", "How it was made", "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>")


# --- drawing --------------------------------------------------------------------------------------


def _bar_chart(bars: Iterable[tuple[str, float, str]], unit: str, chart_id: str) -> str:
    """A horizontal bar chart as inline SVG: one row per (label, value, colour key)."""
    bars = [(label, float(value), colour) for label, value, colour in bars if math.isfinite(float(value))]
    label_w, bar_w, row_h = 300, 560, 22
    low = min([0.0] + [v for _, v, _ in bars])
    high = max([0.0] + [v for _, v, _ in bars]) or 1.0
    span = (high - low) or 1.0
    zero = label_w + (0 - low) / span * bar_w
    height = row_h * len(bars) + 10
    parts = [f'<svg id="{chart_id}" class="chart" role="img" xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 90}" '
             f'height="{height}" viewBox="0 0 {label_w + bar_w + 90} {height}">']
    for i, (label, value, colour) in enumerate(bars):
        y = 5 + i * row_h
        x0 = zero if value >= 0 else label_w + (value - low) / span * bar_w
        w = max(1.0, abs(value) / span * bar_w)
        short = label if len(label) <= 44 else label[:41] + "..."
        parts.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{_e(short)}<title>{_e(label)}</title></text>')
        parts.append(f'<rect class="bar" x="{x0:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" '
                     f'fill="{PALETTE.get(colour, colour)}"><title>{_e(label)}: {_num(value)} {unit}</title></rect>')
        parts.append(f'<text x="{max(x0 + w, zero) + 6:.1f}" y="{y + 15}">{_num(value)} {unit}</text>')
    parts.append(f'<line x1="{zero:.1f}" y1="0" x2="{zero:.1f}" y2="{height}" stroke="#9aa3b2"/></svg>')
    return "".join(parts)


def _table(head: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f'<td{" class=num" if i in numeric else ""}>{c}</td>' for i, c in enumerate(r)) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _num(value: Any) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6f}" if 0.99 <= value < 1.0 else f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return _e(value)


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))
