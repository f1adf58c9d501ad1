"""The Node app (onnxruntime-node) and the browser page (onnxruntime-web in headless Chromium) on a real export."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from exporter.golden import GoldenSet, figures

from .conftest import SAMPLES, PageServer, run_page

IMAGES = SAMPLES / "digits" / "images"


def _one_image_per_digit() -> list[Path]:
    return [sorted((IMAGES / str(d)).glob("*.png"))[0] for d in range(10)]


def _python_predictions(model: Path, images: list[Path]) -> list[int]:
    import onnxruntime as ort
    from PIL import Image

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    batch = np.stack([(np.asarray(Image.open(p).convert("L").resize((16, 16), Image.BILINEAR), dtype=np.float32) / 255)[None]
                      for p in images])
    return session.run(None, {"input": batch})[0].argmax(1).tolist()


def test_node_app_checks_golden_vectors_and_classifies_images(sample_export, node):
    images = _one_image_per_digit()
    proc = subprocess.run([node, str(SAMPLES / "node" / "app.mjs"), str(sample_export.out_dir), *map(str, images), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["runtime"] == "onnxruntime-node" and result["passed"] is True
    golden = GoldenSet.read(sample_export.out_dir)
    expected = figures(golden.reference.load(sample_export.out_dir), golden.expected.load(sample_export.out_dir))
    assert result["figures"]["cosine"] == pytest.approx(expected["cosine"], abs=1e-4)
    labels = [p["label"] for p in result["predictions"]]
    assert labels == _python_predictions(sample_export.model_path, images)  # same preprocessing as the Python app
    assert sum(label == d for d, label in enumerate(labels)) >= 9


def test_node_app_text_output_and_bad_folder(sample_export, node, tmp_path):
    ok = subprocess.run([node, str(SAMPLES / "node" / "app.mjs"), str(sample_export.out_dir)], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and ok.stdout.startswith("golden vectors (8 samples, onnxruntime-node): PASS")
    bad = subprocess.run([node, str(SAMPLES / "node" / "app.mjs"), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip() == f"error: {tmp_path}/golden.json not found: pass an exporter output folder"


def test_web_page_checks_golden_vectors_and_classifies_an_image_in_chromium(sample_export, node, chromium):
    image = sorted((IMAGES / "3").glob("*.png"))[0]
    server = PageServer(sample_export.out_dir)
    try:
        result = run_page(chromium, server, f"/web/index.html?out=/out/&image=/digits/images/3/{image.name}&report=/result")
    finally:
        server.close()
    assert "error" not in result, result.get("error")
    assert result["runtime"] == "onnxruntime-web (wasm)" and result["passed"] is True
    golden = GoldenSet.read(sample_export.out_dir)
    expected = figures(golden.reference.load(sample_export.out_dir), golden.expected.load(sample_export.out_dir))
    assert result["figures"]["cosine"] == pytest.approx(expected["cosine"], abs=1e-4)
    assert result["figures"]["top1_agreement"] == 1.0
    assert result["prediction"]["label"] == 3 and result["prediction"]["image"] == image.name


def test_web_page_reports_a_missing_model(sample_export, node, chromium, tmp_path):
    (tmp_path / "golden.json").write_text((sample_export.out_dir / "golden.json").read_text())
    server = PageServer(tmp_path)
    try:
        result = run_page(chromium, server, "/web/index.html?out=/out/&report=/result")
    finally:
        server.close()
    assert result["error"] == "model.onnx: HTTP 404" and "passed" not in result
