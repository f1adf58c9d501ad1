"""The mixed-precision search through the CLI: on by default when plain int8 misses the gate, `--no-search`
gives the plain model, `--accuracy-budget` sets the goal, the cache in the output folder is reused."""

from __future__ import annotations

import json

import onnx
import pytest
import torch

from exporter.cli import main


@pytest.fixture(scope="module")
def plain_target(tmp_path_factory):
    """A target file: cpu-int8 without PTQ algorithms, so the hostile layer defeats plain int8."""
    from tests.accuracy.hostile import PLAIN_TARGET_TOML

    path = tmp_path_factory.mktemp("target") / "plain-int8.toml"
    path.write_text(PLAIN_TARGET_TOML)
    return path


@pytest.fixture(scope="module")
def hostile_model(tmp_path_factory):
    """The digits CNN with an outlier input channel in `features.3`: plain int8 fails the gate (agreement < 0.5)."""
    from tests.accuracy.hostile import digits_model, make_weight_hostile

    path = tmp_path_factory.mktemp("hostile") / "hostile.pt"
    torch.save(make_weight_hostile(digits_model()), path)
    return path


def _export(model, sample_dir, out, capsys, *extra) -> tuple[int, dict, str]:
    code = main(["export", str(model), "--calib", str(sample_dir / "calib.npz"), "--val", str(sample_dir / "val.npz"),
                 "--out", str(out), "--latency-repeats", "3", *extra])
    err = capsys.readouterr().err
    return code, json.loads((out / "report.json").read_text()), err


def _float_convs(path) -> set[str]:
    """Conv/Gemm nodes whose weight is not a DequantizeLinear output (they compute in float)."""
    graph = onnx.load(str(path)).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    return {n.name for n in graph.node if n.op_type in ("Conv", "Gemm") and n.input[1] not in dequantized}


def _convs(path) -> set[str]:
    """Every Conv/Gemm node of the file."""
    return {n.name for n in onnx.load(str(path)).graph.node if n.op_type in ("Conv", "Gemm")}


def test_search_runs_by_default_and_no_search_gives_the_plain_model(hostile_model, plain_target, sample_dir, tmp_path, capsys):
    code, report, err = _export(hostile_model, sample_dir, tmp_path / "default", capsys, "--trust-pickle",
                                "--target", str(plain_target))
    search = report["accuracy_fallback"]
    assert search is not None and search["trials"][0]["label"] == "plain int8" and not search["trials"][0]["passed"]
    assert code == 0, err
    assert search["met"] is True
    rows = {row["module"]: row for row in search["decisions"]}
    assert rows["features.3"]["precision"] == "float" and rows["features.3"]["error_db"] is not None
    assert report["verdict"] == "pass"
    if not search["float_model"]:  # the table says what the file does
        float_layers = {r["node"] for r in search["decisions"] if r["precision"] == "float" and r["op_type"] in ("Conv", "Gemm")}
        assert _float_convs(tmp_path / "default" / "model.onnx") == float_layers
    md = (tmp_path / "default" / "report.md").read_text()
    assert "## Mixed precision: per-layer decisions" in md and "`features.3`" in md
    assert (tmp_path / "default" / "search-cache.json").is_file()

    code, report, err = _export(hostile_model, sample_dir, tmp_path / "plain", capsys, "--trust-pickle", "--no-search",
                                "--target", str(plain_target))
    assert code == 1 and "error: validation failed: top1_agreement" in err
    assert report["accuracy_fallback"] is None
    assert _float_convs(tmp_path / "plain" / "model.onnx") == set()  # every Conv/Gemm computes in int8
    plain_md = (tmp_path / "plain" / "report.md").read_text()
    assert "Mixed precision" not in plain_md
    # Without a search the table still lists every quantized layer, int8, and why.
    rows = report["decisions"]
    assert {r["precision"] for r in rows} == {"int8"} and all(r["why"].startswith("search off (--no-search)") for r in rows)
    assert {r["node"] for r in rows if r["op_type"] in ("Conv", "Gemm")} == _convs(tmp_path / "plain" / "model.onnx")
    assert "## Per-layer decisions" in plain_md and "`features.3`" in plain_md


def test_rerun_with_another_goal_reuses_the_cache(hostile_model, plain_target, sample_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code, first, _ = _export(hostile_model, sample_dir, out, capsys, "--trust-pickle", "--target", str(plain_target))
    assert first["accuracy_fallback"]["cache_hit"] == {"timings": False, "errors": False}
    code, second, err = _export(hostile_model, sample_dir, out, capsys, "--trust-pickle", "--force",
                                "--target", str(plain_target), "--accuracy-budget", "cosine=0.9999,trials=4")
    search = second["accuracy_fallback"]
    assert search["cache_hit"] == {"timings": True, "errors": True}, err
    assert {r["node"]: r["error_db"] for r in search["decisions"]} == {
        r["node"]: r["error_db"] for r in first["accuracy_fallback"]["decisions"]}
    assert any("from the cache" in note for note in search["notes"])


def test_budget_met_by_keeping_layers_in_float(sample_dir, tmp_path, capsys):
    code, report, err = _export(sample_dir / "digits_cnn.pt2", sample_dir, tmp_path / "met", capsys,
                                "--accuracy-budget", "sqnr=40,trials=8")
    assert code == 0, err
    search = report["accuracy_fallback"]
    assert search["met"] is True
    plain = search["trials"][0]
    assert plain["label"] == "plain int8" and plain["figures"]["sqnr_db"] < 40  # plain int8 misses the goal...
    checks = {c["figure"]: c for c in report["validation"]["checks"]}
    assert checks["sqnr_db"]["threshold"] == 40.0 and checks["sqnr_db"]["measured"] >= 40  # ...the final file meets it
    float_rows = [r for r in search["decisions"] if r["precision"] == "float"]
    assert float_rows and all(r["why"] for r in float_rows)
    if not search["float_model"]:
        assert {r["node"] for r in float_rows if r["op_type"] in ("Conv", "Gemm")} == _float_convs(tmp_path / "met" / "model.onnx")


def test_unreachable_budget_keeps_best_candidate_and_says_why(sample_dir, tmp_path, capsys):
    code, report, err = _export(sample_dir / "digits_cnn.pt2", sample_dir, tmp_path / "unmet", capsys,
                                "--accuracy-budget", "sqnr=200,trials=3,minutes=1")
    assert code == 1
    assert "error: validation failed: sqnr_db" in err
    search = report["accuracy_fallback"]
    assert search["met"] is False
    assert len([t for t in search["trials"] if not t["float_model"]]) <= 1 + 3  # the plain model and at most 3 trials
    assert search["why"].startswith("goal NOT met after") and "sqnr_db" in search["why"]
    assert report["headline"].startswith("WARNING: goal NOT met after")
    assert (tmp_path / "unmet" / "model.onnx").exists()
