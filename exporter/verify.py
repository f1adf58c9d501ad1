"""`exporter verify OUT_DIR --runtime R`: does runtime R compute what the exporter validated?

It runs the golden vectors of an output folder on the runtime (see `exporter.runners`), measures the
golden figures against the PyTorch reference, and applies the gate's tolerance rules stored in
golden.json. It also says how far the runtime is from onnxruntime's output at export time (a kernel
difference, not a gate figure).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.errors import PlanError
from exporter.golden import GoldenSet, ToleranceRule, figures


@dataclass(frozen=True)
class RuleResult:
    """One tolerance rule applied to a measured figure."""

    rule: ToleranceRule
    measured: float

    @property
    def passed(self) -> bool:
        """Whether the figure meets the rule."""
        return self.rule.passes(self.measured)

    def describe(self) -> str:
        """e.g. `cosine 0.9993 >= 0.98: pass`."""
        return f"{self.rule.figure} {_fmt(self.measured)} {self.rule.rule} {_fmt(self.rule.threshold)}: {'pass' if self.passed else 'FAIL'}"


@dataclass(frozen=True)
class Verification:
    """The outcome of verifying one output folder on one runtime."""

    folder: Path
    golden: GoldenSet
    run: Any  # exporter.runners.RuntimeRun
    figures: dict[str, Any]
    results: tuple[RuleResult, ...]
    versus_export: dict[str, Any]

    @property
    def passed(self) -> bool:
        """True when every rule passes."""
        return all(r.passed for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for benchmarks and reports)."""
        return {
            "runtime": self.run.runtime,
            "version": self.run.version,
            "precision": self.run.precision,
            "passed": self.passed,
            "figures": self.figures,
            "checks": [{"figure": r.rule.figure, "rule": r.rule.rule, "threshold": r.rule.threshold,
                        "measured": r.measured, "passed": r.passed} for r in self.results],
            "max_abs_diff_vs_export": self.versus_export.get("max_abs_error"),
            "latency_ms": self.run.latency_ms,
        }

    def describe(self) -> str:
        """The lines `exporter verify` prints."""
        head = (f"{'PASS' if self.passed else 'FAIL'}: {self.folder / self.golden.model} on {self.run.runtime} {self.run.version}"
                f"{' (' + self.run.precision + ')' if self.run.precision else ''}: {self.golden.samples} golden samples "
                f"vs the {self.golden.reference_model}")
        lines = [head] + [f"  {r.describe()}" for r in self.results]
        if not self.results:
            lines.append("  (the gate checked no figure golden vectors measure; figures shown for information)")
        shown = ", ".join(f"{k} {_fmt(self.figures[k])}" for k in ("max_abs_error", "cosine", "sqnr_db", "top1_agreement")
                          if self.figures.get(k) is not None)
        lines.append(f"  figures vs PyTorch: {shown}")
        if self.versus_export:
            lines.append(f"  vs onnxruntime CPU at export: max abs difference {_fmt(self.versus_export['max_abs_error'])}")
        if self.run.latency_ms is not None:
            lines.append(f"  latency: {self.run.latency_ms:.4g} ms (batch {self.golden.batch}, median)")
        return "\n".join(lines)


def verify(out_dir: str | Path, runtime: str = "python", time_repeats: int = 0) -> Verification:
    """Run the golden vectors of `out_dir` on `runtime` and judge them with the gate's tolerance.

    Raises `PlanError` (exit 2) for a missing folder, a folder without golden vectors, an unknown
    runtime, or a runtime that is not installed.
    """
    from exporter.runners import RUNNERS

    folder = Path(out_dir)
    if not folder.is_dir():
        raise PlanError(f"output folder {folder} not found: pass the --out folder of an export")
    runner = RUNNERS.get(runtime)
    golden = GoldenSet.read(folder)
    if not (folder / golden.model).is_file():
        raise PlanError(f"{folder / golden.model} not found: golden.json names a model the folder does not hold")
    reference = golden.reference.load(folder)
    result = runner(folder, golden, time_repeats)
    measured = figures(reference, result.outputs)
    rules = tuple(RuleResult(rule, float(measured[rule.figure])) for rule in golden.tolerance if measured.get(rule.figure) is not None)
    versus = figures(golden.expected.load(folder), result.outputs) if golden.expected is not None else {}
    return Verification(folder, golden, result, measured, rules, versus)


def _fmt(value: float) -> str:
    return str(value) if value in (float("inf"), float("-inf")) else f"{value:.4g}"
