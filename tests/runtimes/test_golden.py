"""Golden vectors written beside the model: real validation inputs, PyTorch outputs, the gate's tolerance."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from exporter.errors import PlanError
from exporter.golden import GoldenSet, figures

ROOT = Path(__file__).resolve().parents[2]


def test_golden_vectors_hold_real_inputs_and_pytorch_outputs(sample_export, val_arrays):
    import torch

    folder = sample_export.out_dir
    golden = GoldenSet.read(folder)
    assert golden.model == "model.onnx" and golden.samples == 8 and golden.batch == 1
    inputs = golden.load_inputs(folder)["input"]
    assert inputs.shape == (8, 1, 16, 16) and inputs.dtype == np.float32
    # every golden input is a row of the sample's validation set (real data, not random)
    val_inputs, _ = val_arrays
    rows = [int(np.flatnonzero(np.all(val_inputs.reshape(len(val_inputs), -1) == x.reshape(-1), axis=1))[0]) for x in inputs]
    assert len(set(rows)) == 8
    # the reference is the original PyTorch model's output on them
    program = torch.export.load(str(ROOT / "samples" / "digits" / "digits_cnn.pt2")).module()
    with torch.no_grad():
        expected = program(torch.from_numpy(inputs)).numpy()
    np.testing.assert_allclose(golden.reference.load(folder), expected, rtol=1e-4, atol=1e-5)
    # the tolerance is the gate's: the same figures, rules and thresholds as report.json's checks
    checks = {c["figure"]: c for c in sample_export.report["validation"]["checks"]}
    assert {t.figure for t in golden.tolerance} == {f for f in checks if f in ("top1_agreement", "cosine", "sqnr_db", "max_abs_error")}
    for rule in golden.tolerance:
        assert (rule.rule, rule.threshold) == (checks[rule.figure]["rule"], checks[rule.figure]["threshold"])


def test_expected_outputs_are_the_final_file_on_onnxruntime(sample_export):
    import onnxruntime as ort

    folder = sample_export.out_dir
    golden = GoldenSet.read(folder)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    outputs = session.run(None, golden.load_inputs(folder))[0]
    np.testing.assert_allclose(golden.expected.load(folder), outputs, rtol=1e-5, atol=1e-5)
    measured = figures(golden.reference.load(folder), outputs)
    assert measured["top1_agreement"] == 1.0 and measured["cosine"] > 0.98
    assert golden.figures_at_export["cosine"] == pytest.approx(measured["cosine"], rel=1e-6)


def test_golden_json_is_plain_json_with_little_endian_files(sample_export):
    data = json.loads((sample_export.out_dir / "golden.json").read_text())
    assert data["format"] == "edge-exporter-golden/1"
    for entry in [*data["inputs"], data["reference"], data["expected"]]:
        size = (sample_export.out_dir / entry["file"]).stat().st_size
        assert size == np.prod(entry["shape"]) * np.dtype(entry["dtype"]).itemsize


def test_figures_match_their_definitions():
    ref = np.array([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]], dtype=np.float32)
    cand = np.array([[1.0, 2.0, 2.0], [0.0, 0.5, 0.0]], dtype=np.float32)
    got = figures(ref, cand)
    cos_row0 = (1 + 4 + 6) / (np.sqrt(14) * np.sqrt(9))
    assert got["cosine"] == pytest.approx((cos_row0 + 1.0) / 2)
    assert got["sqnr_db"] == pytest.approx(10 * np.log10(15 / 1.25))
    assert got["max_abs_error"] == pytest.approx(1.0) and got["top1_agreement"] == 0.5
    assert figures(ref, ref)["sqnr_db"] == float("inf")
    assert figures(ref[:, :1].reshape(2), cand[:, :1].reshape(2))["top1_agreement"] is None


def test_broken_golden_files_are_named(sample_export, tmp_path):
    folder = tmp_path / "out"
    shutil.copytree(sample_export.out_dir, folder)
    (folder / "golden.reference.bin").write_bytes(b"\0" * 12)
    with pytest.raises(PlanError, match=r"golden.reference.bin holds 3 values, golden.json says shape \[8, 10\]"):
        GoldenSet.read(folder).reference.load(folder)
    (folder / "golden.json").write_text("{}")
    with pytest.raises(PlanError, match="is not a valid golden-vector file"):
        GoldenSet.read(folder)


def test_python_app_checks_golden_vectors(sample_export, tmp_path):
    app = ROOT / "samples" / "app" / "classify_digits.py"
    image = sorted((ROOT / "samples" / "digits" / "images" / "7").glob("*.png"))[0]
    script = f"import sys, runpy; sys.modules['torch'] = None; sys.argv = ['app'] + sys.argv[1:]; runpy.run_path({str(app)!r}, run_name='__main__')"
    ok = subprocess.run([sys.executable, "-c", script, str(sample_export.model_path), str(image)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert ok.stderr.startswith("golden vectors: PASS") and f"{image}: 7 (" in ok.stdout
    # a model that no longer matches its golden vectors fails the check (exit 1)
    folder = tmp_path / "tampered"
    shutil.copytree(sample_export.out_dir, folder)
    ref = np.fromfile(folder / "golden.reference.bin", dtype="<f4")
    np.random.default_rng(0).permutation(ref).astype("<f4").tofile(folder / "golden.reference.bin")
    bad = subprocess.run([sys.executable, "-c", script, str(folder / "model.onnx"), str(image)], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("golden vectors: FAIL")


def test_fixed_shape_file_gets_golden_vectors_in_its_batch(tmp_path):
    from exporter.api import export
    from exporter.verify import verify

    sample = ROOT / "samples" / "digits"
    result = export(str(sample / "digits_cnn.pt2"), target="mobile-int8", input_shape=["1,1,16,16"], calib=str(sample / "calib.npz"),
                    val=str(sample / "val.npz"), out=str(tmp_path / "out"), latency_repeats=3, search=False)
    golden = GoldenSet.read(result.out_dir)
    assert golden.batch == 1 and golden.inputs[0].shape == (8, 1, 16, 16)
    check = verify(result.out_dir, "python")
    assert check.passed and check.versus_export["max_abs_error"] < 1e-5
