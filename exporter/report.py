"""The run's report: `report.json` for machines and `report.md` for people, built from `ExportRun` only."""

from __future__ import annotations

import json
import math
from typing import Any

from exporter import __version__


def build_report(run) -> dict[str, Any]:
    """Collect every figure of the run into one plain-data dict (the content of report.json)."""
    import onnx
    import onnxruntime
    import torch

    target = run.plan.target
    report = {
        "verdict": "pass" if run.passed else "fail",
        "headline": headline(run),
        "warnings": list(run.warnings),
        "target": {"name": target.name, "description": target.description, "source": target.source},
        "model": {
            "path": run.plan.model.path,
            "format": run.model_format,
            "inputs": [s.to_dict() for s in run.specs],
        },
        "data": {
            "calibration": _describe(run.calib),
            "calibration_samples": len(run.calib) if run.calib is not None else 0,
            "validation": _describe(run.val),
            "validation_samples": len(run.val) if run.val is not None else 0,
            "notes": list(run.data_notes),
        },
        "passes": [r.to_dict() for r in run.pass_records],
        "export": {**run.export_info.to_dict(), "check_vs_pytorch": run.export_check},
        "quantization": run.quant_info.to_dict(),
        "accuracy_fallback": _fallback_dict(run.fallback),
        "decisions": [d.to_dict() for d in getattr(run, "layer_decisions", [])],
        "packages": [p.to_dict() for p in run.packages],
        "validation": {
            "outputs": [k.to_dict() for k in run.evaluator.kinds],
            "float_onnx_vs_original": run.float_figures.to_dict(),
            "final_vs_original": run.final_figures.to_dict(),
            "final_vs_exported_model": run.gate_figures.to_dict(),
            "checks": [c.to_dict() for c in run.checks],
        },
        "measurements": run.measurements,
        "stage_seconds": run.stage_seconds,
        "versions": {
            "edge-exporter": __version__,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
    }
    return _finite(report)


def _fallback_dict(fallback) -> dict[str, Any] | None:
    """The mixed-precision search's outcome as plain data (`exporter.accuracy.search.SearchOutcome`)."""
    return None if fallback is None else fallback.to_dict()


def headline(run) -> str:
    """First line of the report: the speed warning if any, else verdict, size, speed and agreement."""
    m = run.measurements
    figures = [f"{m['size_ratio']:.1f}x smaller", f"{m['speedup_vs_float']:.2f}x the float ONNX speed"]
    final = run.final_figures
    if final.value("top1_agreement") is not None:
        figures.append(f"{final.value('top1_agreement'):.1%} top-1 agreement")
    if final.value("decision_agreement") is not None:
        figures.append(f"{final.value('decision_agreement'):.1%} decision agreement")
    figures.append(f"cosine {final.value('cosine'):.4f}")
    verdict = "PASS" if run.passed else "FAIL (" + "; ".join(c.describe() for c in run.checks if not c.passed) + ")"
    line = f"{verdict}: {run.plan.target.name} model.onnx is " + ", ".join(figures)
    if run.warnings:
        line = "WARNING: " + run.warnings[0] + "\n" + line
    return line


def write_report(run, report: dict[str, Any]) -> None:
    """Write plan.json, report.json and report.md into the staging folder."""
    run.outputs.path("plan.json").write_text(run.plan.to_json() + "\n", encoding="utf-8")
    run.outputs.path("report.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    run.outputs.path("report.md").write_text(render_markdown(report), encoding="utf-8")


def render_markdown(report: dict[str, Any]) -> str:
    """The human-readable report."""
    out: list[str] = [f"# Export report: {report['target']['name']}", "", f"**{report['headline'].splitlines()[-1]}**", ""]
    for warning in report["warnings"]:
        out += [f"> **Warning:** {warning}", ""]
    out += [
        f"- Model: `{report['model']['path']}` ({report['model']['format']}); inputs: "
        + ", ".join(f"`{i['name']}` {tuple(i['shape'])} {i['dtype']}" for i in report["model"]["inputs"]),
        f"- Target: {report['target']['description']}",
        f"- Calibration: {report['data']['calibration'] or 'none'}; "
        f"{report['data']['calibration_samples']} samples",
        f"- Validation: {report['data']['validation']}; {report['data']['validation_samples']} held-out samples",
    ]
    out += [f"- Note: {n}" for n in report["data"]["notes"]]
    out += ["", "## Validation gate", ""]
    if report["passes"]:
        out += ["Agreement, cosine, SQNR and errors compare the final file with the compressed PyTorch model it was "
                "exported from (the quantization loss); accuracy_drop compares with the original model.", ""]
    out += _gate_section(report["validation"])
    m = report["measurements"]
    lat = m["latency_ms"]
    out += [
        "",
        "## Size and speed",
        "",
        "| | PyTorch eager | ORT float | final |",
        "|---|---|---|---|",
        f"| latency ms ({m['latency_setup']}) | {lat['pytorch_eager']:.3f} | {lat['ort_float']:.3f} | {lat['final']:.3f} |",
        f"| file size | | {_size(m['size_float_bytes'])} | {_size(m['size_final_bytes'])} |",
        f"| parameters | {_num(m['params_original'])} | | {_num(m['params_final'])} |",
        "",
        f"Final model: {m['size_ratio']:.2f}x smaller and {m['speedup_vs_float']:.2f}x the speed of the float ONNX.",
    ]
    if report["passes"]:
        out += [
            "",
            "## Compression passes",
            "",
            "| pass | params before → after | MACs before → after | agreement | cosine | max error | seconds |",
            "|---|---|---|---|---|---|---|",
        ]
        for p in report["passes"]:
            mt = p["metrics"]
            out.append(
                f"| {p['name']} | {p['params_before']:,} → {p['params_after']:,} | {p['macs_before']:,} → {p['macs_after']:,} | "
                f"{_num(mt.get('top1_agreement'))} | {_num(mt.get('cosine'))} | {_num(mt.get('max_abs_error'))} | {p['seconds']} |"
            )
        for p in report["passes"]:
            figures = {k: v for k, v in p["summary"].items() if isinstance(v, (int, float, str, bool)) and v is not None}
            if p["skipped"] or p["notes"] or figures or p.get("description"):
                out += ["", f"**{p['name']}**: {p.get('description', '')}"]
                if figures:
                    out.append("- " + ", ".join(f"{k} {_num(v)}" for k, v in figures.items()))
                out += [f"- left alone: `{s.get('layer', s)}`: {s.get('reason', '')}" for s in p["skipped"]]
                out += [f"- {n}" for n in p["notes"]]
    out += _decision_section(report.get("accuracy_fallback"))
    if not report.get("accuracy_fallback"):
        out += _plain_decision_section(report.get("decisions") or [])
    ex, q = report["export"], report["quantization"]
    out += [
        "",
        "## How it was made",
        "",
        f"- ONNX export: {ex['exporter']} exporter, opset {ex['opset']}, {ex['node_count']} nodes, "
        f"{ex['seconds']} s; float ONNX vs PyTorch max error {_num(ex['check_vs_pytorch'].get('max_abs_error'))}",
    ]
    if ex.get("fallback_reason"):
        out.append(f"- The dynamo exporter failed, so the TorchScript exporter was used: {ex['fallback_reason']}")
    out.append(f"- Quantization: mode `{q['mode']}`, {q['calibration_batches']} calibration batches, {q['seconds']} s")
    qdq = {k: v for k, v in q["op_counts"].items() if k in ("QuantizeLinear", "DequantizeLinear", "MatMulNBits", "DynamicQuantizeLinear")}
    if qdq:
        out.append("- Quantization nodes: " + ", ".join(f"{k} {v}" for k, v in qdq.items()))
    out += [f"- {n}" for n in q.get("notes", [])]
    for pkg in report["packages"]:
        out.append(f"- Package step `{pkg['name']}`: files {', '.join(pkg['files']) or 'none'}")
        out += [f"  - {note}" for note in pkg.get("notes", [])]
    for rt in report["measurements"].get("runtimes", []):
        label = " ".join(x for x in (rt["runtime"], rt.get("precision") or "") if x)
        out.append(f"- Runtime {label}: {rt['file']} {rt.get('latency_ms')} ms at batch 1"
                   + (f", gate {'pass' if rt['passed'] else 'FAIL'}" if "passed" in rt else ""))
    out += ["- Stage times (s): " + ", ".join(f"{k} {v}" for k, v in report["stage_seconds"].items()),
            "- Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()),
            "- See also: [report.html](report.html) (plots); golden vectors in `golden.json` "
            "(check them on your runtime: `exporter verify OUT_DIR --runtime python|node|web|openvino`)", ""]
    return "\n".join(out)


def _gate_section(validation: dict[str, Any]) -> list[str]:
    """Markdown: each output's kind and why, the gate's checks, and per-output figures against the original."""
    kinds = validation.get("outputs", [])
    out = ["Each output is judged by the rules for its kind:", "", "| output | kind | why |", "|---|---|---|"]
    out += [f"| {k['name']} | {k['kind']} | {k['reason']} |" for k in kinds]
    out += ["", "| output | figure | measured | threshold | result |", "|---|---|---|---|---|"]
    names = {k["name"] for k in kinds}
    for check in validation["checks"]:
        output = check.get("output") or (next(iter(names)) if len(names) == 1 and check["figure"] != "speedup_vs_float" else "")
        out.append(
            f"| {output} | {check['figure']} | {_num(check['measured'])} | {check['rule']} {_num(check['threshold'])} | "
            f"{'pass' if check['passed'] else '**FAIL**'} |"
        )
    out += ["", "## Agreement with the original PyTorch model", "",
            "| output | figure | float ONNX | final model |", "|---|---|---|---|"]
    float_outputs = {o["name"]: o for o in validation["float_onnx_vs_original"].get("outputs", [])}
    for final in validation["final_vs_original"].get("outputs", []):
        floating = float_outputs.get(final["name"], {})
        for key in ("top1_agreement", "decision_agreement", "cosine", "sqnr_db", "max_abs_error", "mean_abs_error",
                    "reference_accuracy", "candidate_accuracy"):
            if final.get(key) is not None or floating.get(key) is not None:
                out.append(f"| {final['name']} | {key} | {_num(floating.get(key))} | {_num(final.get(key))} |")
    return out


def _decision_section(search: dict[str, Any] | None) -> list[str]:
    """`## Mixed precision`: what the search tried, and the per-layer table (int8 or float, and why)."""
    if not search:
        return []
    out = ["", "## Mixed precision: per-layer decisions", "",
           f"Goal {'met' if search.get('met') else 'NOT met'}: {search.get('why', '')}. "
           f"{len(search.get('trials', []))} candidates in {search.get('seconds', 0):.1f} s."]
    out += [f"- {n}" for n in search.get("notes", [])]
    latency = search.get("latency_ms") or {}
    if latency.get("float") is not None:
        out.append(f"- Batch-1 latency (interleaved): float {_num(latency.get('float'))} ms, plain int8 "
                   f"{_num(latency.get('plain'))} ms, written file {_num(latency.get('best'))} ms")
    rows = search.get("decisions") or []
    if rows:
        out += ["", "| layer | op | precision | why | error dB (int8 alone) | int8 ms | float ms | what the algorithms changed |",
                "|---|---|---|---|---|---|---|---|"]
        for row in rows:
            name = f"`{row['module']}`" if row.get("module") else f"`{row['node']}` (ONNX)"
            changed = "; ".join(row.get("algorithms") or []) or "–"
            out.append(f"| {name} | {row['op_type']} | {'**float**' if row['precision'] == 'float' else 'int8'} | {row['why']} | "
                       f"{_num(row.get('error_db'))} | {_num(row.get('int8_ms'))} | {_num(row.get('float_ms'))} | {changed} |")
    trials = search.get("trials") or []
    if trials:
        out += ["", "What was tried:", "", "| # | candidate | layers in float | top-1 | cosine | SQNR dB | latency ms | gate |",
                "|---|---|---|---|---|---|---|---|"]
        for t in trials:
            figures = t.get("figures") or {}
            verdict = "pass" if t.get("passed") else ("error" if t.get("error") else "fail")
            out.append(f"| {t['trial']} | {t['label']} | {len(t.get('float_units', []))} | {_num(figures.get('top1_agreement'))} | "
                       f"{_num(figures.get('cosine'))} | {_num(figures.get('sqnr_db'))} | {_num(t.get('latency_ms'))} | {verdict} |")
    return out


def _plain_decision_section(rows: list[dict[str, Any]]) -> list[str]:
    """`## Per-layer decisions` when no search ran: every quantized layer is int8, and what the algorithms changed."""
    if not rows:
        return []
    out = ["", "## Per-layer decisions", "", f"{len(rows)} quantized layers, all int8: {rows[0]['why']}.", "",
           "| layer | op | precision | what the algorithms changed |", "|---|---|---|---|"]
    for row in rows:
        name = f"`{row['module']}`" if row.get("module") else f"`{row['node']}` (ONNX)"
        out.append(f"| {name} | {row['op_type']} | int8 | {'; '.join(row.get('algorithms') or []) or '–'} |")
    return out


def _describe(samples) -> str | None:
    return None if samples is None else getattr(samples, "description", str(samples))


def _num(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _size(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1024**2 else f"{n / 1024**2:.2f} MiB"


def _finite(value: Any) -> Any:
    """JSON has no inf/nan: write them as strings so report.json stays valid for every parser."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
