"""`exporter verify OUT_DIR --runtime R` on every runtime: agreement with PyTorch under the gate's tolerance."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from exporter.golden import GoldenSet, figures
from exporter.verify import verify

from .conftest import require


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", "verify", *args], capture_output=True, text=True, timeout=600)


def _tampered(sample_export, tmp_path: Path) -> Path:
    """A copy of the export whose reference outputs are shuffled: every runtime must now fail."""
    folder = tmp_path / "tampered"
    shutil.copytree(sample_export.out_dir, folder)
    ref = np.fromfile(folder / "golden.reference.bin", dtype="<f4")
    np.random.default_rng(0).permutation(ref).astype("<f4").tofile(folder / "golden.reference.bin")
    return folder


def test_verify_python_passes_and_matches_export_time_outputs(sample_export):
    result = verify(sample_export.out_dir, "python")
    assert result.passed and {r.rule.figure for r in result.results} == {"top1_agreement", "cosine", "sqnr_db"}
    assert result.versus_export["max_abs_error"] < 1e-5  # same runtime, same file: the same numbers
    assert result.figures["cosine"] == pytest.approx(result.golden.figures_at_export["cosine"], rel=1e-6)


def test_verify_cli_exit_codes(sample_export, tmp_path):
    ok = _cli(str(sample_export.out_dir))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("PASS: ") and "cosine" in ok.stdout and "vs the original PyTorch model" in ok.stdout
    bad = _cli(str(_tampered(sample_export, tmp_path)), "--runtime", "python")
    assert bad.returncode == 1 and bad.stdout.startswith("FAIL: ") and ": FAIL" in bad.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["/nonexistent/out"], "error: output folder /nonexistent/out not found: pass the --out folder of an export"),
        (["{tmp}"], "golden.json not found"),
        (["{out}", "--runtime", "nod"], "error: unknown runtime 'nod': did you mean 'node'? valid: browser, node, openvino, python, web"),
    ],
)
def test_verify_bad_input_is_one_line_exit_2(sample_export, tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)).replace("{out}", str(sample_export.out_dir)) for a in args]
    proc = _cli(*args)
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("runtime", ["node", "web"])
def test_verify_on_node_runtimes(sample_export, tmp_path, node, runtime):
    result = verify(sample_export.out_dir, runtime)
    assert result.passed, result.describe()
    # onnxruntime-node and onnxruntime-web's WASM kernels agree with onnxruntime in Python on this int8 file
    assert result.versus_export["max_abs_error"] < 0.05 and result.versus_export["cosine"] > 0.9999
    # the JS app's own figures (samples/common/golden.mjs) equal the Python definitions on the same outputs
    app = result.run.app_report
    expected = figures(result.golden.reference.load(sample_export.out_dir), result.run.outputs)
    for key in ("max_abs_error", "mean_abs_error", "cosine", "sqnr_db", "top1_agreement"):
        assert app["figures"][key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12), key
    assert app["passed"] is True
    tampered = verify(_tampered(sample_export, tmp_path), runtime)
    assert not tampered.passed and tampered.run.app_report["passed"] is False


def test_verify_in_the_browser_page(sample_export, tmp_path, node, chromium):
    result = verify(sample_export.out_dir, "browser")
    assert result.passed, result.describe()
    assert result.run.runtime == "onnxruntime-web (wasm, chromium)"
    assert result.versus_export["max_abs_error"] < 0.05 and result.versus_export["cosine"] > 0.9999
    expected = figures(result.golden.reference.load(sample_export.out_dir), result.run.outputs)
    assert result.run.app_report["figures"]["cosine"] == pytest.approx(expected["cosine"], rel=1e-9)
    tampered = verify(_tampered(sample_export, tmp_path), "browser")
    assert not tampered.passed and tampered.run.app_report["passed"] is False


def test_verify_on_openvino_at_f32(sample_export):
    try:
        import openvino  # noqa: F401
    except ImportError:
        require(False, 'openvino (pip install -e ".[openvino]")')
    result = verify(sample_export.out_dir, "openvino")
    assert result.passed, result.describe()
    assert result.run.precision == "INFERENCE_PRECISION_HINT=f32"
    assert result.figures["cosine"] > 0.99 and result.figures["top1_agreement"] == 1.0
