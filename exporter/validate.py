"""Validation: run the exported file and the original PyTorch model on held-out data and gate the result.

Figures (see `exporter.metrics`): max and mean absolute error, cosine similarity, SQNR in dB,
top-1 agreement for classifiers, and both accuracies when labels exist. The target's
`Tolerances` decide pass or fail; every check carries its measured value and threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from exporter.inputs import InputSpec
from exporter.metrics import OutputComparison
from exporter.progress import progress
from targets.profile import Tolerances


@dataclass(frozen=True)
class GateCheck:
    """One thresholded figure: `measured` compared with `threshold` by `rule` (">=" or "<=")."""

    figure: str
    measured: float
    threshold: float
    rule: str
    passed: bool

    def describe(self) -> str:
        """e.g. `top1_agreement 0.912 >= 0.95: FAIL`."""
        return f"{self.figure} {_fmt(self.measured)} {self.rule} {_fmt(self.threshold)}: {'pass' if self.passed else 'FAIL'}"

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for report.json."""
        return dict(self.__dict__)


def reference_outputs(model, samples, specs: Sequence[InputSpec], batch_size: int) -> list[tuple[dict, np.ndarray, np.ndarray | None]]:
    """Run the PyTorch reference once over `samples`: a list of (feed, first output, labels) per batch.

    Computed once per run and reused for every candidate file (float ONNX, quantized, fallbacks).
    """
    import torch

    from calibration import iter_batches

    results = []
    with torch.no_grad():
        for batch in progress(iter_batches(samples, specs, batch_size), "reference outputs", unit="batch"):
            out = model(*[torch.from_numpy(batch.inputs[s.name]) for s in specs])
            first = out[0] if isinstance(out, (tuple, list)) else out
            results.append((batch.inputs, first.detach().numpy(), batch.labels))
    return results


def compare_onnx(onnx_path: Path, reference: list[tuple[dict, np.ndarray, np.ndarray | None]], desc: str = "validating") -> dict[str, Any]:
    """Run `onnx_path` on the reference batches and summarise agreement with the reference outputs."""
    from exporter.runtime import run_onnx, session_for

    session = session_for(onnx_path, threads=2)
    comparison = OutputComparison()
    for feed, expected, labels in progress(reference, desc, total=len(reference), unit="batch"):
        comparison.add(expected, run_onnx(session, feed)[0], labels)
    return comparison.summary()


def compare_torch(model, reference: list[tuple[dict, np.ndarray, np.ndarray | None]]) -> dict[str, Any]:
    """Run a (compressed) PyTorch model on the reference batches and summarise agreement."""
    import torch

    comparison = OutputComparison()
    with torch.no_grad():
        for feed, expected, labels in reference:
            out = model(*[torch.from_numpy(v) for v in feed.values()])
            first = out[0] if isinstance(out, (tuple, list)) else out
            comparison.add(expected, first.detach().numpy(), labels)
    return comparison.summary()


def check_gate(summary: dict[str, Any], tolerances: Tolerances) -> list[GateCheck]:
    """Compare a validation summary with the target's thresholds; figures that do not apply are skipped."""
    rules = [
        ("top1_agreement", summary.get("top1_agreement"), tolerances.min_top1_agreement, ">="),
        ("cosine", summary.get("cosine"), tolerances.min_cosine, ">="),
        ("sqnr_db", summary.get("sqnr_db"), tolerances.min_sqnr_db, ">="),
        ("max_abs_error", summary.get("max_abs_error"), tolerances.max_abs_error, "<="),
    ]
    ref_acc, cand_acc = summary.get("reference_accuracy"), summary.get("candidate_accuracy")
    drop = None if ref_acc is None or cand_acc is None else ref_acc - cand_acc
    rules.append(("accuracy_drop", drop, tolerances.max_accuracy_drop, "<="))
    checks = []
    for figure, measured, threshold, rule in rules:
        if measured is None or threshold is None:
            continue
        passed = measured >= threshold if rule == ">=" else measured <= threshold + 1e-12
        checks.append(GateCheck(figure, float(measured), float(threshold), rule, bool(passed)))
    return checks


def _fmt(value: float) -> str:
    if value in (float("inf"), float("-inf")):
        return str(value)
    return f"{value:.4g}"
