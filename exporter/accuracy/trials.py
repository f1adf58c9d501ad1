"""Trials: one candidate file each (a set of units in float), evaluated by the run's evaluator.

A `Trial` records what was tried and what it gave: the float units, the figures, the gate's checks
against the search goal, how far it is from passing, and (for finalists) its whole-model latency.
`TrialRunner` builds the candidate with `exporter.accuracy.mixed`, writes it, and asks the evaluator
(`exporter.evaluation.Evaluator`: `onnx(path) -> Figures`, `gate(figures, tolerances)`) to judge it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import onnx

from exporter.accuracy.decision import deficit
from exporter.accuracy.mixed import float_units


class Evaluator(Protocol):
    """What the search needs from the run's evaluator."""

    def onnx(self, path: Path) -> Any:
        """Figures of an ONNX file against the reference outputs."""

    def gate(self, figures: Any, tolerances: Any = None) -> list:
        """The gate's checks of `figures` under `tolerances`."""


@dataclass
class Trial:
    """One candidate: `float_units` (ONNX node names), its figures and gate verdict under the goal."""

    number: int
    label: str
    float_units: tuple[str, ...]
    path: Path | None
    figures: Any = None
    checks: list = field(default_factory=list)
    seconds: float = 0.0
    latency_ms: float | None = None
    pinned: tuple[str, ...] = ()
    error: str = ""
    is_float_model: bool = False

    @property
    def passed(self) -> bool:
        """Did it meet every check of the goal?"""
        return self.figures is not None and not self.error and all(c.passed for c in self.checks)

    @property
    def deficit(self) -> float:
        """Distance to passing (`exporter.accuracy.decision.deficit`); infinite for a failed trial."""
        return deficit(self.checks) if self.figures is not None and not self.error else float("inf")

    @property
    def failed_checks(self) -> list[str]:
        """One description per failed check."""
        return [c.describe() for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for report.json (no scratch paths)."""
        figures = self.figures.to_dict() if hasattr(self.figures, "to_dict") else self.figures
        return {
            "trial": self.number, "label": self.label, "float_units": list(self.float_units),
            "figures": figures, "passed": self.passed, "failed_checks": self.failed_checks,
            "deficit": self.deficit if self.deficit != float("inf") else None, "latency_ms": self.latency_ms,
            "seconds": round(self.seconds, 3), "pinned": list(self.pinned), "error": self.error,
            "float_model": self.is_float_model,
        }


class TrialRunner:
    """Makes, writes and evaluates candidates from the plain int8 model (numbered in order)."""

    def __init__(self, quant_model: onnx.ModelProto, folded: dict, float_model: onnx.ModelProto,
                 evaluator: Evaluator, goal: Any, work_dir: Path) -> None:
        self.quant_model = quant_model
        self.folded = folded
        self.float_model = float_model
        self.evaluator = evaluator
        self.goal = goal
        self.work_dir = Path(work_dir)
        self.trials: list[Trial] = []

    def record(self, label: str, names: Sequence[str], path: Path, figures: Any = None, is_float_model: bool = False) -> Trial:
        """Add an already-made file as a trial (the plain model, the float model), evaluating it if needed."""
        started = time.perf_counter()
        trial = Trial(len(self.trials), label, tuple(names), Path(path), is_float_model=is_float_model)
        self._judge(trial, figures)
        trial.seconds = time.perf_counter() - started
        self.trials.append(trial)
        return trial

    def run(self, label: str, names: Sequence[str]) -> Trial:
        """Build the candidate with `names` in float, write it, evaluate it."""
        started = time.perf_counter()
        number = len(self.trials)
        path = self.work_dir / f"trial_{number:02d}.onnx"
        trial = Trial(number, label, tuple(sorted(names)), path)
        try:
            model, pinned = float_units(self.quant_model, names, self.folded, self.float_model)
            onnx.save(model, str(path))
            trial.pinned = tuple(pinned)
            self._judge(trial, None)
        except Exception as exc:  # a broken candidate is recorded and the search goes on
            trial.error = f"{type(exc).__name__}: {str(exc)[:200]}"
        trial.seconds = time.perf_counter() - started
        self.trials.append(trial)
        return trial

    def _judge(self, trial: Trial, figures: Any) -> None:
        trial.figures = figures if figures is not None else self.evaluator.onnx(trial.path)
        trial.checks = list(self.evaluator.gate(trial.figures, self.goal))
