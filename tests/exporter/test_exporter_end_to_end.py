"""End to end: the CLI on the bundled sample, every model format, real numbers."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from exporter.cli import main

FORMATS = {
    "torchscript": ["digits_cnn.torchscript.pt"],
    "exported_program": ["digits_cnn.pt2"],
    "state_dict": ["digits_cnn.state_dict.pt", "--model-class", "samples.architectures:DigitsCNN"],
    "pickled_module": ["digits_cnn.pickle.pt", "--trust-pickle"],
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_cli_exports_every_model_format(fmt, sample_dir, tmp_path, capsys, val_arrays):
    model, *extra = FORMATS[fmt]
    out = tmp_path / "out"
    code = main(["export", str(sample_dir / model), *extra, "--target", "cpu-int8",
                 "--calib", str(sample_dir / "calib.npz"), "--out", str(out), "--latency-repeats", "3"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    *headline, wrote = printed.out.strip().splitlines()
    # The verdict line; on a busy CPU a slower-than-float warning may come first (timing, not a failure).
    assert headline[-1].startswith("PASS: cpu-int8 model.onnx is "), printed.out
    assert all(line.startswith("WARNING: ") and "SLOWER" in line for line in headline[:-1]), printed.out
    listed = sorted(wrote.removeprefix("wrote ").removesuffix(f" to {out}").split(", "))
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == listed
    assert {"model.float.onnx", "model.onnx", "plan.json", "report.json", "report.md"} <= set(listed)

    report = json.loads((out / "report.json").read_text())
    assert report["model"]["format"] == fmt
    assert report["verdict"] == "pass"
    assert report["model"]["inputs"] == [{"name": "input", "shape": [1, 1, 16, 16], "dtype": "float32"}]

    # The quantized file really is QDQ int8 and about 4x smaller than the float one.
    graph = onnx.load(str(out / "model.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") >= 5 and ops.count("DequantizeLinear") >= 10
    ratio = (out / "model.float.onnx").stat().st_size / (out / "model.onnx").stat().st_size
    assert 3.2 < ratio < 4.1
    assert report["measurements"]["size_ratio"] == pytest.approx(ratio, rel=1e-3)

    # Reopen and run the file ourselves: it agrees with the original PyTorch model on held-out data.
    inputs, labels = val_arrays
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    quantized = session.run(None, {"input": inputs})[0]
    original = torch.export.load(str(sample_dir / "digits_cnn.pt2")).module()
    with torch.no_grad():
        expected = original(torch.from_numpy(inputs)).numpy()
    agreement = float(np.mean(quantized.argmax(1) == expected.argmax(1)))
    assert agreement >= 0.97
    assert float(np.mean(quantized.argmax(1) == labels)) >= 0.95


def test_report_figures_are_consistent(sample_export, val_arrays):
    report = sample_export.report
    final = report["validation"]["final_vs_original"]
    assert final["samples"] == len(val_arrays[0]) == report["data"]["validation_samples"]
    assert report["data"]["calibration_samples"] == 300
    checks = {c["figure"]: c for c in report["validation"]["checks"]}
    assert set(checks) == {"top1_agreement", "cosine", "sqnr_db", "accuracy_drop"}
    assert checks["top1_agreement"]["measured"] == pytest.approx(final["top1_agreement"])
    assert checks["top1_agreement"]["threshold"] == 0.95
    assert all(c["passed"] for c in checks.values())
    assert final["reference_accuracy"] - final["candidate_accuracy"] == pytest.approx(checks["accuracy_drop"]["measured"])
    float_check = report["validation"]["float_onnx_vs_original"]
    assert float_check["max_abs_error"] < 1e-4 and float_check["top1_agreement"] == 1.0
    lat = report["measurements"]["latency_ms"]
    assert all(v > 0 for v in lat.values())
    assert report["measurements"]["speedup_vs_float"] == pytest.approx(lat["ort_float"] / lat["final"], rel=0.01)
    assert report["measurements"]["params_original"] == 89_658
    assert report["export"]["exporter"] == "dynamo"
    assert report["quantization"]["calibration_batches"] == 19  # 300 samples in batches of 16
    for stage in ("load", "data", "export", "quantize", "measure"):
        assert report["stage_seconds"][stage] >= 0
    md = (sample_export.out_dir / "report.md").read_text()
    assert md.splitlines()[2] == f"**{report['headline']}**"
    assert "| top1_agreement |" in md and "## Size and speed" in md


def test_plan_json_replays_the_run(sample_export, tmp_path):
    from exporter.api import export

    plan = json.loads((sample_export.out_dir / "plan.json").read_text())
    assert plan["resolved"]["target"]["quantization"]["per_channel"] is True
    replay = export(plan_file=str(sample_export.out_dir / "plan.json"), out=str(tmp_path / "again"), dry_run=True)
    assert replay.settings_dict() == {**plan["settings"], "out": str(tmp_path / "again")}


def test_output_batch_axis_is_dynamic(sample_export, val_arrays):
    session = ort.InferenceSession(str(sample_export.model_path), providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape
    assert isinstance(shape[0], str) and shape[1:] == [1, 16, 16]
    for batch in (1, 7, 300):
        assert session.run(None, {"input": val_arrays[0][:batch]})[0].shape == (batch, 10)


def test_cpu_fp32_target_keeps_float_and_matches_pytorch(sample_dir, tmp_path):
    from exporter.api import export

    result = export(str(sample_dir / "digits_cnn.pt2"), target="cpu-fp32", calib=str(sample_dir / "calib.npz"),
                    out=str(tmp_path / "fp32"), latency_repeats=3)
    ops = {n.op_type for n in onnx.load(str(result.model_path)).graph.node}
    assert "QuantizeLinear" not in ops
    final = result.report["validation"]["final_vs_original"]
    assert final["max_abs_error"] < 1e-4 and final["top1_agreement"] == 1.0


def test_python_dash_m_and_help_lists_every_option_with_default():
    proc = subprocess.run([sys.executable, "-m", "exporter", "export", "--help"], capture_output=True, text=True, check=True)
    for option in ("--target", "--calib", "--calib-method", "--input-shape", "--force", "--dry-run", "--prune", "--fold-bn"):
        assert option in proc.stdout
    assert "(default: cpu-int8)" in proc.stdout


def test_dry_run_prints_plan_and_writes_nothing(sample_dir, tmp_path, capsys):
    out = tmp_path / "never"
    code = main(["export", str(sample_dir / "digits_cnn.pt2"), "--calib", str(sample_dir / "calib.npz"),
                 "--out", str(out), "--calib-method", "entropy", "--dry-run"])
    plan = json.loads(capsys.readouterr().out)
    assert code == 0 and not out.exists()
    assert plan["resolved"]["target"]["quantization"]["calibration_method"] == "entropy"
    assert plan["settings"]["calib_method"] == "entropy"


def test_targets_command_lists_targets(capsys):
    assert main(["targets"]) == 0
    text = capsys.readouterr().out
    assert "cpu-int8" in text and "cpu-fp32" in text and "needs: calibration data" in text


def test_validation_failure_exits_1_and_still_writes_outputs(sample_dir, tmp_path, capsys):
    strict = tmp_path / "strict.toml"
    strict.write_text(
        'name = "strict"\ndescription = "impossible thresholds"\nneeds_calibration = true\n'
        '[quantization]\nmode = "static"\n[tolerances]\nmin_sqnr_db = 200.0\n'
    )
    out = tmp_path / "out"
    code = main(["export", str(sample_dir / "digits_cnn.pt2"), "--target", str(strict),
                 "--calib", str(sample_dir / "calib.npz"), "--out", str(out), "--latency-repeats", "3"])
    err = capsys.readouterr().err
    assert code == 1
    assert "error: validation failed: sqnr_db" in err and ">= 200: FAIL" in err
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == "fail" and (out / "model.onnx").exists()


def test_fail_if_slower_adds_a_speed_check(sample_dir, tmp_path, capsys):
    out = tmp_path / "speed"
    code = main(["export", str(sample_dir / "digits_cnn.pt2"), "--calib", str(sample_dir / "calib.npz"),
                 "--out", str(out), "--fail-if-slower", "--latency-repeats", "30"])
    report = json.loads((out / "report.json").read_text())
    (check,) = [c for c in report["validation"]["checks"] if c["figure"] == "speedup_vs_float"]
    assert check["threshold"] == 1.0 and check["measured"] == report["measurements"]["speedup_vs_float"]
    assert check["passed"] == (check["measured"] >= 1.0)
    assert code == (0 if check["passed"] else 1), capsys.readouterr().err
    assert bool(report["warnings"]) == (not check["passed"])


def test_inspect_lists_worst_layers_by_module_name(sample_export, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(sample_export.out_dir, run_dir)
    assert main(["inspect", str(run_dir), "--top", "3"]) == 0
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 3
    assert any(name in text for name in ("features.", "classifier."))
    assert (run_dir / "layers.svg").read_text().lstrip().startswith("<svg")
    assert "features." in (run_dir / "layers.md").read_text()
