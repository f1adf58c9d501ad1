"""`--accuracy-budget` through the CLI: layers kept in float until the goal is met, or the best try and exit 1."""

from __future__ import annotations

import json

import onnx

from exporter.cli import main


def _run(sample_dir, out, budget, capsys) -> tuple[int, dict, str]:
    code = main(["export", str(sample_dir / "digits_cnn.pt2"), "--calib", str(sample_dir / "calib.npz"),
                 "--val", str(sample_dir / "val.npz"), "--out", str(out), "--accuracy-budget", budget,
                 "--latency-repeats", "3"])
    err = capsys.readouterr().err
    return code, json.loads((out / "report.json").read_text()), err


def test_budget_met_by_keeping_layers_in_float(sample_dir, tmp_path, capsys):
    code, report, err = _run(sample_dir, tmp_path / "met", "sqnr=40,trials=8", capsys)
    assert code == 0, err
    fallback = report["accuracy_fallback"]
    assert fallback["met"] is True
    plain = fallback["trials"][0]
    assert plain["label"] == "plain" and plain["summary"]["sqnr_db"] < 40  # plain int8 misses the goal...
    checks = {c["figure"]: c for c in report["validation"]["checks"]}
    assert checks["sqnr_db"]["threshold"] == 40.0 and checks["sqnr_db"]["measured"] >= 40  # ...the final file meets it
    kept = {n["module"] for n in fallback["nodes_in_float"]}
    assert kept and kept <= {"features.0", "features.1", "features.3", "features.4", "features.7", "features.8",
                             "classifier.0", "classifier.2"}
    graph = onnx.load(str(tmp_path / "met" / "model.onnx")).graph
    float_nodes = {n["node"] for n in fallback["nodes_in_float"]}
    quantized_inputs = {i for n in graph.node if n.op_type == "DequantizeLinear" for i in n.output}
    for node in graph.node:
        if node.name in float_nodes and node.op_type in ("Conv", "Gemm"):
            assert node.input[1] not in quantized_inputs  # the weight of a float layer is not dequantized int8
    assert (tmp_path / "met" / "layers.svg").read_text().startswith("<svg")
    assert "## Accuracy-aware fallback" in (tmp_path / "met" / "report.md").read_text()


def test_unreachable_budget_keeps_best_candidate_and_exits_1(sample_dir, tmp_path, capsys):
    code, report, err = _run(sample_dir, tmp_path / "unmet", "sqnr=200,trials=4,minutes=1", capsys)
    assert code == 1
    assert "error: validation failed: sqnr_db" in err
    fallback = report["accuracy_fallback"]
    assert fallback["met"] is False
    assert len(fallback["trials"]) == 1 + 4  # the plain baseline, then at most `trials` candidates
    assert any("not met" in n or "best" in n for n in fallback["notes"])
    md = (tmp_path / "unmet" / "report.md").read_text()
    assert "Goal NOT met" in md and "What was tried:" in md
    assert (tmp_path / "unmet" / "model.onnx").exists()
