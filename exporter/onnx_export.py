"""Trace a PyTorch model to one self-contained, checked, cleaned ONNX file.

Rule: the dynamo exporter (`torch.onnx.export(..., dynamo=True)`) first; if it fails, the
TorchScript-based exporter, and the reason is recorded. Inputs and outputs get stable names
(`InputSpec.name`; `output` or `output_0..n`). The batch axis is dynamic unless asked otherwise.
Weights stay inside the `.onnx` file (external data only past protobuf's 2 GB limit), because
onnxruntime's quantization pre-processing cannot read split files.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from exporter.quiet import quiet_torch_export
from exporter.errors import ExportError
from exporter.inputs import InputSpec

PROTOBUF_LIMIT_BYTES = 2 * 1024**3
MODULE_KEY = "module"
"""Node metadata key holding the dotted PyTorch module path that produced the node."""


@dataclass
class OnnxExportInfo:
    """How the float ONNX file was made; goes into the report."""

    exporter: str
    opset: int
    input_names: list[str]
    output_names: list[str]
    seconds: float
    fallback_reason: str | None = None
    external_data: bool = False
    node_count: int = 0
    op_counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain-data form for report.json."""
        return dict(self.__dict__)


def output_names_for(count: int) -> list[str]:
    """Stable output names: `output` for one output, `output_0..n` for several."""
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def export_onnx(
    model,
    specs: Sequence[InputSpec],
    path: Path,
    opset: int,
    dynamic_batch: bool = True,
    exporter: str = "auto",
) -> OnnxExportInfo:
    """Export `model` to `path`, check it and clean it; raise `ExportError` if both exporters fail.

    `exporter` is `auto` (dynamo, then TorchScript), `dynamo` or `torchscript`.
    """
    import torch

    args = tuple(torch.from_numpy(spec.example(batch=2 if dynamic_batch else spec.shape[0])) for spec in specs)
    with torch.no_grad():
        outputs = model(*args)
    n_outputs = len(outputs) if isinstance(outputs, (tuple, list)) else 1
    input_names = [s.name for s in specs]
    output_names = output_names_for(n_outputs)
    big = _parameter_bytes(model) > PROTOBUF_LIMIT_BYTES * 0.9
    start = time.perf_counter()
    fallback_reason = None
    used = exporter
    if exporter == "auto" and isinstance(model, torch.jit.ScriptModule):
        fallback_reason = "TorchScript archives cannot be traced by torch.export; used the TorchScript-based exporter"
        used = "torchscript"
    elif exporter in ("auto", "dynamo"):
        try:
            _export_dynamo(model, args, path, input_names, output_names, opset, dynamic_batch, big)
            used = "dynamo"
        except Exception as exc:  # the dynamo exporter raises many unrelated types
            if exporter == "dynamo":
                raise ExportError(f"torch.onnx dynamo export failed: {_first_line(exc)}") from exc
            fallback_reason = _first_line(exc)
            used = "torchscript"
    if used == "torchscript":
        try:
            _export_torchscript(model, args, path, input_names, output_names, opset, dynamic_batch)
        except Exception as exc:
            reason = f"dynamo: {fallback_reason}; torchscript: {_first_line(exc)}" if fallback_reason else _first_line(exc)
            raise ExportError(f"could not export the model to ONNX ({reason})") from exc
    onnx_model = clean_graph(onnx.load(str(path)))
    written = next((i.version for i in onnx_model.opset_import if i.domain in ("", "ai.onnx")), None)
    if written != opset:  # torch.onnx falls back to its own opset when it cannot convert, with only a log line
        raise ExportError(
            f"torch.onnx could not write this model at opset {opset} (it wrote opset {written}): "
            f"pass --opset {written} or another opset the target's runtime supports"
        )
    _save(onnx_model, path, external=big)
    check_onnx(path)
    ops: dict[str, int] = {}
    for node in onnx_model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return OnnxExportInfo(
        exporter=used,
        opset=opset,
        input_names=input_names,
        output_names=output_names,
        seconds=round(time.perf_counter() - start, 3),
        fallback_reason=fallback_reason,
        external_data=big,
        node_count=len(onnx_model.graph.node),
        op_counts=dict(sorted(ops.items())),
    )


def _export_dynamo(model, args, path, input_names, output_names, opset, dynamic_batch, big) -> None:
    import torch

    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1, max=4096)
        dynamic_shapes = tuple({0: batch} for _ in args)
    with quiet_torch_export():
        torch.onnx.export(
            model,
            args,
            str(path),
            dynamo=True,
            input_names=input_names,
            output_names=output_names,
            opset_version=opset,
            dynamic_shapes=dynamic_shapes,
            external_data=big,
            verbose=False,
        )


def _export_torchscript(model, args, path, input_names, output_names, opset, dynamic_batch) -> None:
    import torch

    axes = {name: {0: "batch"} for name in [*input_names, *output_names]} if dynamic_batch else None
    with quiet_torch_export():
        torch.onnx.export(
            model,
            args,
            str(path),
            dynamo=False,
            input_names=input_names,
            output_names=output_names,
            opset_version=opset,
            dynamic_axes=axes,
            do_constant_folding=True,
        )


def clean_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """Tidy an exported graph for deployment.

    - keeps only a compact `module` metadata entry per node (the PyTorch module path, used to
      explain per-layer errors in PyTorch terms) and drops the exporter's stack traces;
    - removes initializers no node reads and any that shadow graph inputs;
    - runs onnx shape inference so every intermediate tensor has a type and shape.
    """
    for node in model.graph.node:
        module = _module_path(node)
        del node.metadata_props[:]
        if module:
            entry = node.metadata_props.add()
            entry.key, entry.value = MODULE_KEY, module
    used = {name for node in model.graph.node for name in node.input}
    used |= {o.name for o in model.graph.output}
    inputs = {i.name for i in model.graph.input}
    keep = [init for init in model.graph.initializer if init.name in used and init.name not in inputs]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    try:
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # shape inference is best effort; the checker below is the hard gate
        pass
    return model


def _module_path(node: onnx.NodeProto) -> str:
    """The dotted module path that produced `node`, e.g. `features.0.conv` ('' for top-level ops).

    The dynamo exporter records `name_scopes`: full module paths from the root, ending with the
    aten op's own name; the TorchScript exporter names nodes `/features/features.0/conv/Conv`.
    """
    props = {p.key: p.value for p in node.metadata_props}
    scopes = props.get("pkg.torch.onnx.name_scopes")
    if scopes:
        import ast

        try:
            parts = list(ast.literal_eval(scopes))
        except (ValueError, SyntaxError):
            return ""
        return parts[-2] if len(parts) >= 2 else ""
    if node.name.startswith("/"):
        path = ""
        for segment in (s for s in node.name.split("/")[1:-1] if s):
            path = segment if not path or segment.startswith(path + ".") else f"{path}.{segment}"
        return path
    return ""


def check_onnx(path: Path) -> None:
    """Run `onnx.checker` (by path, so models with external data work); raise `ExportError` on failure."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ExportError(f"the exported ONNX file failed onnx.checker: {_first_line(exc)}") from exc


def compare_with_torch(
    model, onnx_path: Path, batches: Sequence[dict[str, np.ndarray]], atol: float, min_cosine: float
) -> dict[str, float]:
    """Run PyTorch and the float ONNX on the same real batches; raise `ExportError` if they disagree.

    The bound is `max|onnx - torch| <= atol * max(1, max|torch|)` and cosine >= `min_cosine`:
    a float export should match to rounding, so a miss means a tracing bug, not quantization.
    """
    import torch

    from exporter.metrics import cosine_similarity
    from exporter.runtime import run_onnx, session_for

    session = session_for(onnx_path, threads=1)
    worst, scale, cosines = 0.0, 1.0, []
    for feed in batches:
        with torch.no_grad():
            ref = model(*[torch.from_numpy(v) for v in feed.values()])
        refs = [r.numpy() for r in (ref if isinstance(ref, (tuple, list)) else (ref,))]
        outs = run_onnx(session, feed)
        for r, o in zip(refs, outs):
            worst = max(worst, float(np.max(np.abs(r.astype(np.float64) - o))))
            scale = max(scale, float(np.max(np.abs(r))))
            cosines.append(cosine_similarity(r, o))
    cosine = float(min(cosines)) if cosines else 1.0
    if not np.isfinite(worst):
        raise ExportError(
            "PyTorch or the float ONNX file outputs NaN or Inf on finite real inputs, so they cannot be compared: "
            "check the model's weights (a NaN weight or an overflow) before exporting"
        )
    result = {"max_abs_error": worst, "min_cosine": cosine, "samples": int(sum(len(next(iter(b.values()))) for b in batches))}
    if worst > atol * scale or cosine < min_cosine:
        raise ExportError(
            f"the float ONNX file disagrees with PyTorch: max abs error {worst:.3g} (allowed {atol * scale:.3g}), "
            f"cosine {cosine:.6f} (need {min_cosine}); try --exporter torchscript or report the model"
        )
    return result


def _save(model: onnx.ModelProto, path: Path, external: bool) -> None:
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, location=path.name + ".data")
    else:
        onnx.save_model(model, str(path))


def _parameter_bytes(model) -> int:
    try:
        return sum(p.numel() * p.element_size() for p in model.parameters()) + sum(
            b.numel() * b.element_size() for b in model.buffers()
        )
    except Exception:
        return 0


def _first_line(exc: BaseException) -> str:
    """`Type: first meaningful line`, without terminal colour codes; for chained errors, the root cause."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = [line for line in _ANSI.sub("", str(exc)).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}".strip().rstrip(":")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
