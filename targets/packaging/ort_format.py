"""Package step `ort_format`: onnxruntime's ORT format (`model.ort`) and its reduced-operator configuration.

Runs onnxruntime's own converter (`onnxruntime.tools.convert_onnx_models_to_ort`) with the
`Fixed` optimization style: graph optimizations are applied once, now, and baked into the file,
which is what onnxruntime's CPU and XNNPACK providers on a phone run (the `Runtime` style only pays
off for NNAPI/CoreML partitions). For an `arm64` target the converter is told so
(`target_platform="arm"`), which keeps int8 QDQ groups fused into int8 kernels
(`session.qdqisint8allowed`) and leaves out x86-only layout changes; for `x86_64` it may use them.

Writes into `out_dir`:
- `model.ort`: load it with `onnxruntime.InferenceSession` like an `.onnx` file, or in a minimal build;
- `required_operators.config`: the operators (per domain and opset) the model needs, the input to
  onnxruntime's minimal build (`build.py --minimal_build --include_ops_by_config required_operators.config`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from pathlib import Path

from exporter.errors import QuantizationError
from targets.packaging.base import PackageInfo, PackageRequest, register_package_step

ORT_FILE = "model.ort"
CONFIG_FILE = "required_operators.config"
PLATFORMS = {"arm64": "arm", "x86_64": "amd64", "any": None}


def ort_converter_arguments(arch: str) -> dict:
    """Keyword arguments for `convert_onnx_models_to_ort` for a target of CPU family `arch`."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle

    return {
        "optimization_styles": [OptimizationStyle.Fixed],
        "target_platform": PLATFORMS[arch],
        "save_optimized_onnx_model": False,
        "enable_type_reduction": False,
    }


def parse_operator_config(text: str) -> dict[str, list[str]]:
    """`{"ai.onnx;18": ["Conv", ...], ...}` from a required-operators config (lines `domain;opset;Op1,Op2`)."""
    required: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        domain, opset, ops = line.split(";", 2)
        required[f"{domain};{opset}"] = sorted(op for op in ops.split(",") if op)
    return required


@register_package_step("ort_format")
def convert_to_ort_format(request: PackageRequest) -> PackageInfo:
    """Convert the final model to `model.ort` plus `required_operators.config` and check the `.ort` file loads."""
    import onnxruntime as ort
    from onnxruntime.tools.convert_onnx_models_to_ort import convert_onnx_models_to_ort

    args = ort_converter_arguments(request.target.arch)
    with tempfile.TemporaryDirectory(prefix="ort_format_") as tmp:
        # The converter converts every .onnx file of a folder and names outputs after the input, so it
        # gets a private copy called model.onnx (-> model.ort, model.required_operators.config).
        work = Path(tmp)
        source = work / "model.onnx"
        shutil.copyfile(request.model_path, source)
        converted = work / "converted"
        # The converter prints progress and its config writer logs at INFO: keep both off the terminal.
        config_log = logging.getLogger("ort_format_model.utils")
        level = config_log.level
        config_log.setLevel(logging.WARNING)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                convert_onnx_models_to_ort(source, output_dir=converted, **args)
        except Exception as exc:
            raise QuantizationError(f"onnxruntime could not convert the model to ORT format: {type(exc).__name__}: {exc}") from exc
        finally:
            config_log.setLevel(level)
        ort_path = request.out_dir / ORT_FILE
        config_path = request.out_dir / CONFIG_FILE
        shutil.move(str(converted / ORT_FILE), ort_path)
        config_text = (converted / f"model.{CONFIG_FILE}").read_text(encoding="utf-8")
        # The header names the converter's temporary file; name the shipped one instead.
        lines = [f"# - {ORT_FILE}" if line.startswith("# - ") else line for line in config_text.splitlines()]
        config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        ort.InferenceSession(str(ort_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise QuantizationError(f"the converted {ORT_FILE} does not load in onnxruntime: {exc}") from exc
    operators = parse_operator_config(config_text)
    notes = []
    if request.target.arch == "any":
        notes.append("target arch is 'any': the .ort file carries only optimizations valid on every CPU")
    return PackageInfo(
        name="ort_format",
        files=[ORT_FILE, CONFIG_FILE],
        summary={
            "ort_bytes": ort_path.stat().st_size,
            "onnx_bytes": request.model_path.stat().st_size,
            "optimization_style": "Fixed",
            "target_platform": args["target_platform"] or "any",
            "operators": operators,
            "operator_count": sum(len(ops) for ops in operators.values()),
            "loads_in_onnxruntime": True,
            "minimal_build": f"./build.sh --minimal_build --include_ops_by_config {CONFIG_FILE}",
        },
        notes=notes,
    )
