"""`exporter inspect OUT_DIR`: per-layer quantization error of a finished run, worst first.

Reads `model.float.onnx`, `model.onnx` and `plan.json` from the run's output folder, opens the
validation data named there (the calibration data when there is none), measures every quantized
layer with `exporter.accuracy.sensitivity.layer_sensitivity`, writes `layers.svg` (the plot) and
`layers.md` (the full table, embedding the plot) beside them, and returns a text table of the worst
layers for the terminal.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import onnx

from exporter.errors import PlanError

FLOAT_FILE = "model.float.onnx"
MODEL_FILE = "model.onnx"
MAX_SAMPLES = 64
PLOT_FILE = "layers.svg"
TABLE_FILE = "layers.md"


def inspect_run(out_dir: Path, top: int = 10) -> str:
    """Measure, write `layers.svg` + `layers.md` into `out_dir` (atomically), return the worst `top` layers."""
    from exporter.accuracy.plot import error_plot_svg
    from exporter.accuracy.sensitivity import layer_sensitivity

    out_dir = Path(out_dir)
    float_path, quant_path, plan_path = out_dir / FLOAT_FILE, out_dir / MODEL_FILE, out_dir / "plan.json"
    missing = [p.name for p in (float_path, quant_path, plan_path) if not p.is_file()]
    if missing:
        raise PlanError(f"{out_dir} is not the output folder of a finished export: {', '.join(missing)} missing")
    if top < 1:
        raise PlanError(f"--top must be at least 1, got {top}")
    quant = onnx.load(str(quant_path), load_external_data=False)
    if not any(node.op_type == "DequantizeLinear" for node in quant.graph.node):
        return f"{quant_path} has no QuantizeLinear/DequantizeLinear nodes: it is not a QDQ int8 model, nothing to inspect"
    settings = _settings(plan_path)
    feeds = _feeds(settings, float_path)
    with tempfile.TemporaryDirectory(prefix="inspect-") as scratch:
        rows = layer_sensitivity(float_path, quant_path, feeds, Path(scratch))
    samples = sum(len(next(iter(f.values()))) for f in feeds)
    title = f"Per-layer int8 error ({samples} samples)"
    _write_atomic(out_dir / PLOT_FILE, error_plot_svg(rows, title))
    _write_atomic(out_dir / TABLE_FILE, layers_markdown(rows, title))
    return layers_text(rows, top) + f"\n\nwrote {out_dir / PLOT_FILE} and {out_dir / TABLE_FILE}"


def layers_text(rows: Sequence[dict[str, Any]], top: int = 10) -> str:
    """Fixed-width table of the `top` worst layers (one line per layer)."""
    from exporter.accuracy.modules import display_name
    from exporter.accuracy.sensitivity import node_ranking

    ranking = node_ranking(rows)
    header = f"{'#':>3}  {'layer':<36} {'op':<10} {'SQNR dB':>8} {'weights':>8} {'inputs':>8} {'output':>8} {'so far':>8}"
    lines = [header, "-" * len(header)]
    for index, row in enumerate(ranking[:top], 1):
        name = display_name(row)
        name = name if len(name) <= 36 else "..." + name[-33:]
        lines.append(
            f"{index:>3}  {name:<36} {row['op_type']:<10} {_fmt(row['worst_sqnr_db'])} {_fmt(row.get('weight_sqnr_db'))} "
            f"{_fmt(row.get('input_sqnr_db'))} {_fmt(row.get('output_sqnr_db'))} {_fmt(row.get('cumulative_sqnr_db'))}"
        )
    if len(ranking) > top:
        lines.append(f"... {len(ranking) - top} more layer(s) in {TABLE_FILE}")
    lines.append(
        "SQNR: the layer alone, fed the float model's activations (weights / inputs / output: each part alone); "
        "'so far': the quantized model's error accumulated up to that layer."
    )
    return "\n".join(lines)


def layers_markdown(rows: Sequence[dict[str, Any]], title: str) -> str:
    """`layers.md`: the plot and every layer's figures, worst first."""
    from exporter.accuracy.sensitivity import node_ranking

    out = [f"# {title}", "", f"![error per layer]({PLOT_FILE})", ""]
    out += [
        "| # | layer | ONNX node | op | SQNR dB | weights | inputs | output | accumulated | relative error |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for index, row in enumerate(node_ranking(rows), 1):
        out.append(
            f"| {index} | `{row.get('module') or '?'}` | `{row['node']}` | {row['op_type']} | {_num(row['worst_sqnr_db'])} | "
            f"{_num(row.get('weight_sqnr_db'))} | {_num(row.get('input_sqnr_db'))} | {_num(row.get('output_sqnr_db'))} | "
            f"{_num(row.get('cumulative_sqnr_db'))} | {_num(row.get('relative_error'), 4)} |"
        )
    out += [
        "",
        "SQNR is measured against each channel's variation (channel mean removed), so a large offset "
        "cannot hide a lost signal. *SQNR*: the layer run alone on the float model's activations with its "
        "int8 inputs, weights and output; *weights* / *inputs* / *output*: each part quantized alone; "
        "*accumulated*: float model vs quantized model at that layer's output.",
    ]
    return "\n".join(out) + "\n"


def _settings(plan_path: Path) -> dict[str, Any]:
    try:
        data = json.loads(plan_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PlanError(f"{plan_path} is not valid JSON: {exc}") from None
    return data.get("settings", data)


def _feeds(settings: dict[str, Any], float_path: Path) -> list[dict]:
    """Batches of the run's validation data (else its calibration data), at most `MAX_SAMPLES` samples."""
    from calibration import DataOptions, ImagePreprocess, bind_to_inputs, infer_input_specs, iter_batches, open_samples

    source = settings.get("val") or settings.get("calib")
    if not source:
        raise PlanError("the run's plan.json names no --val or --calib data: inspect needs samples to measure with")
    image = ImagePreprocess.preset(settings["image_preset"]) if settings.get("image_preset") else ImagePreprocess()
    changes = {k: settings[k] for k in ("resize", "crop", "mean", "std") if settings.get(k) is not None}
    if changes:
        changes = {k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()}
        image = dataclasses.replace(image, **changes)
    names = [i.name for i in onnx.load(str(float_path), load_external_data=False).graph.input]
    samples = bind_to_inputs(open_samples(source, DataOptions(image=image)), names)
    samples = samples.subset(range(min(len(samples), MAX_SAMPLES)))
    specs = infer_input_specs(samples, names)
    batch = int(settings.get("batch_size") or 16)
    return [b.inputs for b in iter_batches(samples, specs, batch)]


def _write_atomic(path: Path, text: str) -> None:
    """Write to a temporary name in the same folder, then rename over `path`."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _fmt(value: float | None) -> str:
    return f"{value:>8.1f}" if value is not None else f"{'-':>8}"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
