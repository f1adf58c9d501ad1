"""The x86-openvino-int8 target: OpenVINO's own outputs (f32 precision hint) are gated and timed beside onnxruntime."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import require

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "digits"


def _have_openvino() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def openvino_export(tmp_path_factory):
    require(_have_openvino(), 'openvino (pip install -e ".[openvino]")')
    from exporter.api import export

    out = tmp_path_factory.mktemp("openvino") / "out"
    return export(str(SAMPLE / "digits_cnn.pt2"), target="x86-openvino-int8", calib=str(SAMPLE / "calib.npz"),
                  val=str(SAMPLE / "val.npz"), out=str(out), latency_repeats=5)


def test_openvino_outputs_join_the_gate_at_f32(openvino_export):
    report = openvino_export.report
    assert report["verdict"] == "pass" and report["target"]["name"] == "x86-openvino-int8"
    checks = report["validation"]["checks"]
    ov = [c for c in checks if c["output"] == "openvino (f32)"]
    assert {c["figure"] for c in ov} == {"top1_agreement", "cosine", "sqnr_db"} and all(c["passed"] for c in ov)
    plain = {c["figure"]: c for c in checks if c["output"] == ""}
    for c in ov:  # OpenVINO and onnxruntime run the same int8 file: figures close, thresholds identical
        assert c["threshold"] == plain[c["figure"]]["threshold"]
        assert c["measured"] == pytest.approx(plain[c["figure"]]["measured"], abs=0.02 if c["figure"] != "sqnr_db" else 3.0)


def test_report_times_openvino_beside_onnxruntime_and_names_the_precision(openvino_export):
    rows = openvino_export.report["measurements"]["runtimes"]
    labels = [(r["runtime"].split()[0], r["file"], r["precision"]) for r in rows]
    assert labels[0] == ("onnxruntime-cpu", "model.onnx", "")
    assert ("openvino", "model.onnx", "f32") in labels and ("openvino", "model.float.onnx", "f32") in labels
    default = [r for r in rows if r["file"] == "model.onnx" and r.get("gated") is False]
    assert len(default) == 1 and default[0]["precision"] in ("bf16", "f32", "f16")  # the plugin's own default, reported
    assert all(r["latency_ms"] > 0 for r in rows)
    assert any("INFERENCE_PRECISION_HINT=f32" in note for note in openvino_export.report["data"]["notes"])
    html = (openvino_export.out_dir / "report.html").read_text()
    assert "openvino" in html and 'id="latency-plot"' in html


def test_openvino_target_without_openvino_is_exit_2(tmp_path):
    script = ("import sys; sys.modules['openvino'] = None; from exporter.cli import main; "
              f"sys.exit(main(['export', {str(SAMPLE / 'digits_cnn.pt2')!r}, '--target', 'x86-openvino-int8', "
              f"'--calib', {str(SAMPLE / 'calib.npz')!r}, '--out', {str(tmp_path / 'out')!r}, '--latency-repeats', '3', '-v']))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == 'error: OpenVINO is not installed: pip install -e ".[openvino]"'
    assert not (tmp_path / "out").exists()
    assert "load ..." not in proc.stderr  # refused before any stage ran (-v would log each stage)
