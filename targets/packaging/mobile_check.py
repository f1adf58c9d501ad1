"""Package step `mobile_check`: onnxruntime's mobile usability check, summarised per provider.

Uses `onnxruntime.tools.mobile_helpers.usability_checker` the way its own `analyze_model` does
(basic graph optimization first, as the ORT-format conversion would, then ONNX shape inference),
but collects the figures instead of logging them. For each of NNAPI (Android), CoreML MLProgram
and CoreML NeuralNetwork (iOS) it reports: nodes the provider could take out of the total, the
number of partitions (each partition boundary is a device copy; more than two usually makes the
provider slower than the CPU), the partition sizes, the ops it lacks, onnxruntime's verdict
(`YES` / `MAYBE` / `NO`), and how many nodes only fail because a shape is dynamic (NNAPI needs
fixed shapes). When shapes are dynamic it also reports what fixing them would give.

Nothing is written: `files` is empty. The check is by operator type only, as onnxruntime's is;
per-operator caveats (e.g. NNAPI Conv must be 2-D) are listed, not verified.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Callable

from exporter.errors import QuantizationError
from targets.packaging.base import PackageInfo, PackageRequest, register_package_step

PROVIDERS: dict[str, str] = {
    "nnapi": "NNAPI",
    "coreml_mlprogram": "CoreML MLProgram",
    "coreml_neuralnetwork": "CoreML NeuralNetwork",
}


def _checkers() -> dict[str, Callable[[Any, bool], Any]]:
    from onnxruntime.tools.mobile_helpers import usability_checker as uc

    return {
        "nnapi": uc.check_nnapi_partitions,
        "coreml_mlprogram": lambda model, fixed: uc.check_coreml_partitions(model, fixed, "coreml_supported_mlprogram_ops.md"),
        "coreml_neuralnetwork": lambda model, fixed: uc.check_coreml_partitions(
            model, fixed, "coreml_supported_neuralnetwork_ops.md"
        ),
    }


def partition_summary(info: Any) -> dict[str, Any]:
    """Plain-data figures of one `usability_checker.PartitioningInfo`."""
    return {
        "nodes_supported": int(info.num_supported_nodes),
        "nodes_total": int(info.num_nodes),
        "partitions": int(info.num_partitions),
        "partition_sizes": [len(group) for group in info.supported_groups],
        "unsupported_ops": sorted(info.unsupported_ops),
        "nodes_blocked_by_dynamic_shapes": int(info.nodes_unsupported_due_to_dynamic_input),
        "suitability": info.suitability().name,
        "caveats": info.supported_ops_checker.get_caveats(),
    }


def check_model(model_path: Path) -> dict[str, Any]:
    """Run onnxruntime's usability checks on `model_path` and return the per-provider summary."""
    from onnxruntime.tools.mobile_helpers import usability_checker as uc
    from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model

    quiet = logging.getLogger("exporter.mobile_check")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    with tempfile.TemporaryDirectory(prefix="mobile_check_") as tmp:
        optimized = Path(tmp) / "model.onnx"
        optimize_model(Path(model_path), optimized, use_external_initializers=True)
        model = ModelProtoWithShapeInfo(optimized).model_with_shape_info
        dynamic_inputs, dynamic_values = uc.check_shapes(model.graph, quiet)
        providers: dict[str, Any] = {}
        for key, check in _checkers().items():
            entry = partition_summary(check(model, True))
            if dynamic_inputs and entry["suitability"] != "YES":
                entry["if_shapes_were_fixed"] = partition_summary(check(model, False))
            providers[key] = entry
    return {
        "dynamic_inputs": [value.name for value in dynamic_inputs],
        "dynamic_values": int(dynamic_values),
        "providers": providers,
    }


def summary_line(provider: str, entry: dict[str, Any]) -> str:
    """One report line, e.g. `NNAPI: 21/23 nodes in 2 partitions (MAYBE)`."""
    return (
        f"{PROVIDERS[provider]}: {entry['nodes_supported']}/{entry['nodes_total']} nodes in "
        f"{entry['partitions']} partition{'s' if entry['partitions'] != 1 else ''} ({entry['suitability']})"
    )


@register_package_step("mobile_check")
def check_mobile_usability(request: PackageRequest) -> PackageInfo:
    """Summarise how NNAPI and CoreML would partition the final model; writes no file."""
    try:
        summary = check_model(request.model_path)
    except Exception as exc:
        raise QuantizationError(f"onnxruntime's mobile usability check failed: {type(exc).__name__}: {exc}") from exc
    notes = [summary_line(name, entry) for name, entry in summary["providers"].items()]
    if summary["dynamic_inputs"]:
        notes.append(
            f"inputs with dynamic shapes ({', '.join(summary['dynamic_inputs'])}) keep NNAPI off those nodes: "
            "export with fixed shapes (--input-shape)"
        )
    return PackageInfo(name="mobile_check", files=[], summary=summary, notes=notes)
