"""Package steps: the registry, and mobile-int8's ORT-format file and mobile usability summary on the sample."""

from __future__ import annotations

import dataclasses

import onnxruntime as ort
import pytest

from exporter.errors import PlanError
from targets import get_target
from targets.packaging import PACKAGE_STEPS, PackageInfo, run_package_steps
from targets.packaging.mobile_check import check_model
from targets.packaging.ort_format import CONFIG_FILE, ORT_FILE, parse_operator_config
from tests.quantizers import sample_models as sm


@pytest.fixture(scope="module")
def mobile_package(digits_fixed_onnx, tmp_path_factory):
    """mobile-int8 on the fixed-shape sample: (staging folder, package records, quantize info)."""
    target = get_target("mobile-int8")
    work = tmp_path_factory.mktemp("mobile")
    stage = work / "stage"
    stage.mkdir()
    data = sm.digits_data()
    model, info = sm.quantize(target.quantization, digits_fixed_onnx, work, sm.DIGITS_SPECS, calib=data["calib"][:100])
    (stage / "model.onnx").write_bytes(model.read_bytes())
    records = run_package_steps(target, stage / "model.onnx", stage, sm.DIGITS_SPECS)
    return stage, records, info


def test_registry_names_and_unknown_step():
    assert PACKAGE_STEPS.names() == ["mobile_check", "ort_format"]
    target = dataclasses.replace(get_target("cpu-fp32"), package_steps=("zip",), source="t.toml")
    with pytest.raises(PlanError) as info:
        run_package_steps(target, sm.digits_onnx(), sm.scratch(), sm.DIGITS_SPECS)
    assert str(info.value) == "t.toml: package_steps: unknown package step 'zip': valid: mobile_check, ort_format"


def test_operator_config_parsing():
    text = "# Generated from model/s:\n# - model.ort\nai.onnx;13;Relu,Conv\ncom.microsoft;1;QLinearConv\n"
    assert parse_operator_config(text) == {"ai.onnx;13": ["Conv", "Relu"], "com.microsoft;1": ["QLinearConv"]}


def test_ort_file_and_reduced_operator_config(mobile_package):
    stage, records, _ = mobile_package
    assert [r.name for r in records] == ["ort_format", "mobile_check"]
    ort_record = records[0]
    assert ort_record.files == [ORT_FILE, CONFIG_FILE]
    assert sorted(p.name for p in stage.iterdir()) == ["model.onnx", ORT_FILE, CONFIG_FILE]
    config = (stage / CONFIG_FILE).read_text()
    assert "# - model.ort" in config and "/tmp" not in config
    operators = parse_operator_config(config)
    assert ort_record.summary["operators"] == operators
    assert ort_record.summary["target_platform"] == "arm" and ort_record.summary["optimization_style"] == "Fixed"
    # The S8S8 QDQ convolutions are fused into int8 kernels in the .ort file.
    assert "QLinearConv" in operators["com.microsoft;1"]
    # The .ort file loads in onnxruntime's InferenceSession and gives the .onnx file's outputs.
    x = sm.digits_data()["val"][:16]
    from_ort = sm.run(stage / ORT_FILE, x, batch=1)
    from_onnx = sm.run(stage / "model.onnx", x, batch=1)
    assert ort.InferenceSession(str(stage / ORT_FILE), providers=["CPUExecutionProvider"]).get_inputs()[0].shape == [1, 1, 16, 16]
    figures = sm.agreement(from_onnx, from_ort)
    assert figures["top1_agreement"] == 1.0 and figures["cosine"] > 0.999, figures
    assert ort_record.to_dict()["files"] == [ORT_FILE, CONFIG_FILE]


def test_mobile_check_summary_with_fixed_shapes(mobile_package):
    _, records, _ = mobile_package
    check: PackageInfo = records[1]
    assert check.files == []
    summary = check.summary
    assert summary["dynamic_inputs"] == []
    nnapi = summary["providers"]["nnapi"]
    # Every node of the fixed-shape S8S8 QDQ sample is an NNAPI op: one partition covering everything.
    assert nnapi["nodes_supported"] == nnapi["nodes_total"] > 0
    assert nnapi["partitions"] == 1 and nnapi["suitability"] == "YES"
    assert nnapi["nodes_blocked_by_dynamic_shapes"] == 0
    coreml = summary["providers"]["coreml_mlprogram"]
    assert coreml["nodes_total"] == nnapi["nodes_total"]
    assert coreml["partitions"] == len(coreml["partition_sizes"])
    assert sum(coreml["partition_sizes"]) == coreml["nodes_supported"]
    assert check.notes[0] == f"NNAPI: {nnapi['nodes_total']}/{nnapi['nodes_total']} nodes in 1 partition (YES)"


def test_mobile_check_reports_dynamic_shapes(digits_onnx):
    summary = check_model(digits_onnx)
    assert summary["dynamic_inputs"] == ["input"]
    nnapi = summary["providers"]["nnapi"]
    assert nnapi["nodes_blocked_by_dynamic_shapes"] > 0
    fixed = nnapi["if_shapes_were_fixed"]
    assert fixed["nodes_supported"] == fixed["nodes_total"] and fixed["nodes_blocked_by_dynamic_shapes"] == 0
