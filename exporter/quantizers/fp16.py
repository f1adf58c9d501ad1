"""Mode `fp16`: onnxruntime's float16 converter, then a check of what the CPU provider really runs in float16.

`onnxruntime.transformers.float16.convert_float_to_float16` rewrites float32 weights and
activations to float16; with `keep_io_types` the graph's inputs and outputs stay float32 (Cast
nodes at the edges) so application code does not change. onnxruntime's CPU provider has float16
kernels for only some operators on some CPUs; for the others it inserts Casts at session load and
runs the operator in float32 on float16-rounded weights. The file is then half the size but not
faster, and possibly slower. `cpu_fp16_coverage` loads the converted file the way the app will and
counts, from the graph onnxruntime actually executes, which nodes run in float16 and which fell
back to float32; the quantizer reports that in its notes rather than claiming float16 speed.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.errors import PlanError, QuantizationError
from exporter.quantizers.base import QuantizeInfo, QuantizeRequest, register_quantizer
from targets.profile import QuantScheme

INSERTED_CAST_PREFIX = "InsertedPrecisionFreeCast_"
"""Name prefix onnxruntime gives the Casts it inserts around operators without a float16 kernel."""


@dataclass(frozen=True)
class OrtFp16Arguments:
    """Keyword arguments for `convert_float_to_float16`, spelled out."""

    convert: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """Plain form for the report."""
        return {"convert_float_to_float16": dict(self.convert)}


def ort_fp16_arguments(scheme: QuantScheme, nodes_to_exclude: tuple[str, ...] = ()) -> OrtFp16Arguments:
    """Translate our typed `QuantScheme` into `convert_float_to_float16` arguments.

    - `keep_io_types` passes through (True: float32 inputs/outputs, Casts at the edges);
    - `exclude_op_types` is added to onnxruntime's `DEFAULT_OP_BLOCK_LIST` (ops kept in float32);
    - `nodes_to_exclude` (accuracy fallback) -> `node_block_list`;
    - `op_types` cannot be honoured (the converter converts everything not blocked): it raises `PlanError`
      rather than being silently ignored. Types, calibration and `per_channel` do not apply.
    """
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    if scheme.op_types:
        raise PlanError(
            "fp16 conversion converts every operator except a block list: use quantization.exclude_op_types "
            f"to keep some in float32, not quantization.op_types (got {list(scheme.op_types)})"
        )
    block = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(scheme.exclude_op_types))
    return OrtFp16Arguments(
        convert={
            "keep_io_types": scheme.keep_io_types,
            "op_block_list": block,
            "node_block_list": list(nodes_to_exclude) or None,
        }
    )


def cpu_fp16_coverage(path: Path) -> dict[str, Any]:
    """Which nodes onnxruntime's CPU provider runs in float16 for the model at `path`.

    Loads the model with graph optimizations off (so only the provider's own Cast insertion
    changes the graph), saves the graph the session executes, and classifies each compute node
    (not a Cast) by the element type of its float inputs. Returns counts, the op types that fell
    back to float32, and the number of Casts onnxruntime inserted.
    """
    import onnx
    import onnxruntime as ort

    float_types = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16"}
    with tempfile.TemporaryDirectory() as tmp:
        executed = Path(tmp) / "executed.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.optimized_model_filepath = str(executed)
        options.log_severity_level = 3
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        model = onnx.shape_inference.infer_shapes(onnx.load(str(executed)))
    types: dict[str, int] = {}
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        types[value.name] = value.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    fp16_nodes, fp32_nodes, inserted = 0, 0, 0
    fp32_ops: set[str] = set()
    for node in model.graph.node:
        if node.op_type == "Cast":
            inserted += node.name.startswith(INSERTED_CAST_PREFIX)
            continue
        kinds = {float_types.get(types.get(name, 0)) for name in node.input if name} - {None}
        if "float16" in kinds:
            fp16_nodes += 1
        elif "float32" in kinds:
            fp32_nodes += 1
            fp32_ops.add(node.op_type)
    return {
        "nodes_in_float16": fp16_nodes,
        "nodes_in_float32": fp32_nodes,
        "float32_fallback_ops": sorted(fp32_ops),
        "casts_inserted_by_onnxruntime": inserted,
    }


@register_quantizer("fp16")
def convert_to_fp16(request: QuantizeRequest) -> QuantizeInfo:
    """Float16 conversion with onnxruntime's converter, then an honest account of CPU float16 execution."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    args = ort_fp16_arguments(request.scheme, request.nodes_to_exclude)
    try:
        model = convert_float_to_float16(onnx.load(str(request.float_path)), **args.convert)
        onnx.save(model, str(request.out_path))
    except Exception as exc:
        raise QuantizationError(f"onnxruntime float16 conversion failed: {type(exc).__name__}: {exc}") from exc
    notes: list[str] = []
    settings = args.to_dict()
    try:
        coverage = cpu_fp16_coverage(request.out_path)
    except Exception as exc:  # the session itself failing is the validation step's to report
        notes.append(f"could not check float16 execution on onnxruntime's CPU provider: {type(exc).__name__}: {exc}"[:300])
    else:
        settings["cpu_execution"] = coverage
        if coverage["nodes_in_float32"]:
            notes.append(
                f"onnxruntime's CPU provider runs {coverage['nodes_in_float32']} of "
                f"{coverage['nodes_in_float32'] + coverage['nodes_in_float16']} compute nodes in float32 "
                f"({', '.join(coverage['float32_fallback_ops'])}): it has no float16 kernel for them here and "
                f"inserts {coverage['casts_inserted_by_onnxruntime']} Casts; the file is half the size, "
                "but expect float32 speed (or slower) on this CPU"
            )
    return QuantizeInfo(mode="fp16", settings=settings, notes=notes)
