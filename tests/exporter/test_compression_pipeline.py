"""Compression passes inside the export pipeline: shrunken model, still traced, quantized and validated."""

from __future__ import annotations

import json

import onnx
import pytest

from exporter.cli import main


def test_fold_prune_distill_then_int8(sample_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(sample_dir.parents[1])
    out = tmp_path / "out"
    code = main([
        "export", str(sample_dir / "digits_cnn.state_dict.pt"), "--model-class", "samples.architectures:DigitsCNN",
        "--calib", str(sample_dir / "calib.npz"), "--val", str(sample_dir / "val.npz"), "--out", str(out),
        "--fold-bn", "--prune", "0.5", "--distill", "--distill-epochs", "6", "--latency-repeats", "3",
        "--no-search",  # the search may keep the float model when int8 times slower on a busy CPU: timing, not passes
    ])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    passes = {p["name"]: p for p in report["passes"]}
    assert list(passes) == ["fold_bn", "prune", "distill"]
    assert passes["fold_bn"]["metrics"]["max_abs_error"] < 1e-4
    prune = passes["prune"]
    assert prune["params_after"] < 0.3 * prune["params_before"]  # half the channels: about a quarter of the weights
    assert prune["macs_after"] < 0.3 * prune["macs_before"]
    assert any("took their removed inputs' mean into their bias" in n for n in prune["notes"])  # repaired...
    assert prune["metrics"]["top1_agreement"] < 0.9  # ...but pruning alone still costs agreement...
    distill = passes["distill"]
    assert distill["metrics"]["top1_agreement"] > 0.93  # ...and distillation recovers it
    assert distill["summary"]["agreement_after"] > distill["summary"]["agreement_before"] + 0.08
    assert report["measurements"]["params_final"] == prune["params_after"]

    # The deployable file holds the pruned weights: a quarter of the original float size, then int8.
    original_float = 364_000
    assert (out / "model.float.onnx").stat().st_size < 0.35 * original_float
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    gate = {c["figure"]: c for c in report["validation"]["checks"]}
    exported = report["validation"]["final_vs_exported_model"]
    assert gate["cosine"]["measured"] == pytest.approx(exported["cosine"])
    assert gate["accuracy_drop"]["measured"] == pytest.approx(
        report["validation"]["final_vs_original"]["reference_accuracy"] - exported["candidate_accuracy"]
    )
    assert "compressed PyTorch model it was exported from" in (out / "report.md").read_text()
    assert not (tmp_path / ".out.checkpoints").exists()  # checkpoints are removed after success


def test_plan_file_lists_passes_in_order(sample_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(sample_dir.parents[1])
    plan = tmp_path / "plan.toml"
    plan.write_text(
        f'model = "{sample_dir / "digits_cnn.state_dict.pt"}"\nmodel_class = "samples.architectures:DigitsCNN"\n'
        f'calib = "{sample_dir / "calib.npz"}"\n'
        '[[passes]]\nname = "sparsify"\nsparsity = 0.5\n[[passes]]\nname = "fold_bn"\n'
    )
    assert main(["export", "--plan", str(plan), "--dry-run"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in resolved["resolved"]["passes"]] == ["sparsify", "fold_bn"]
    assert resolved["resolved"]["passes"][0]["sparsity"] == 0.5


def test_pass_setting_without_its_pass_is_rejected(sample_dir, capsys):
    code = main(["export", str(sample_dir / "digits_cnn.pt2"), "--calib", str(sample_dir / "calib.npz"),
                 "--prune-importance", "l2", "--dry-run"])
    assert code == 2
    assert capsys.readouterr().err.strip() == "error: --prune-importance needs the pass itself: add --prune"


def _export(sample_dir, out, *flags) -> tuple[int, dict]:
    code = main([
        "export", str(sample_dir / "digits_cnn.pt2"), "--calib", str(sample_dir / "calib.npz"),
        "--val", str(sample_dir / "val.npz"), "--out", str(out), "--latency-repeats", "3", "--no-search", *flags,
    ])  # fmt: skip
    return code, json.loads((out / "report.json").read_text())


def test_a_compressed_model_far_from_the_original_is_warned_about_even_when_the_gate_passes(
    sample_dir, tmp_path, capsys, monkeypatch
):
    """The gate judges the int8 file against the compressed model; 80% pruning without repair must still be named."""
    monkeypatch.chdir(sample_dir.parents[1])
    code, report = _export(sample_dir, tmp_path / "cut", "--prune", "0.8", "--prune-repair", "none")
    assert code in (0, 1), capsys.readouterr().err
    agreement = report["validation"]["final_vs_original"]["top1_agreement"]
    assert agreement < 0.9
    (warning,) = [w for w in report["warnings"] if w.startswith("the compressed model is far from the original")]
    assert f"top1_agreement {agreement:.4g}" in warning and "recover more (--distill" in warning
    assert "the compressed model is far from the original" in (tmp_path / "cut" / "report.md").read_text()

    code, report = _export(sample_dir, tmp_path / "folded", "--fold-bn")  # exact: nothing to warn about
    assert code == 0, capsys.readouterr().err
    assert not [w for w in report["warnings"] if "far from the original" in w]
