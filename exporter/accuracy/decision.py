"""The decision rules of mixed precision, on plain data (timings and errors are inputs, never measured here).

- `slower_in_int8`: a unit whose int8 kernel time exceeds its float time by more than
  `SLOWER_MARGIN` (and `SLOWER_FLOOR_MS`: profiler resolution) runs in float: int8 buys nothing there
  and float removes its error. Depthwise convs, SE gates and hard-swish on onnxruntime's CPU
  provider are the usual cases.
- `accuracy_order`: the order in which the remaining units go to float when the gate still fails:
  most output error removed per millisecond of int8 speed given up first.
- `deficit`: how far a candidate is from passing, to pick the closest one when none passes.
- `pick_final`: among evaluated candidates and their whole-model latencies, the one to write.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from exporter.accuracy.latency import UnitTiming

SLOWER_MARGIN = 0.05
SLOWER_FLOOR_MS = 0.001
COST_FLOOR_MS = 0.002
"""A unit whose int8 form saves less than this costs nothing measurable when it goes float."""
FASTER_MARGIN = 0.02
"""An int8 candidate must be at least 2 % faster than the float model to be written instead of it: a
smaller gain is within what interleaved best-of-two medians move between runs on a quiet machine, and
the file must never be slower. (5 % wrote the float model for EfficientNet-Lite0 whose passing mix was
4.8 % faster and 2.5x smaller.)"""
LATENCY_TIE = 0.03
"""Whole-model latencies within 3 % count as equal (timing noise); fewer float units then win."""


def slower_in_int8(timings: Mapping[str, UnitTiming]) -> list[str]:
    """Units whose int8 form is slower than their float form (see the module docstring), by name."""
    return sorted(
        name for name, t in timings.items() if t.int8_ms > t.float_ms * (1.0 + SLOWER_MARGIN) + SLOWER_FLOOR_MS
    )


def accuracy_order(errors_db: Mapping[str, float], timings: Mapping[str, UnitTiming], skip: set[str] = frozenset()) -> list[str]:
    """Units not in `skip`, most error removed per ms of speed lost first.

    A unit's error is the output noise it adds alone (10^(-dB/10), from `errors_db`); its cost is
    the time int8 saves on it (at least `COST_FLOOR_MS`). Units without an error figure go last.
    """
    def priority(name: str) -> float:
        noise = 10.0 ** (-errors_db[name] / 10.0)
        timing = timings.get(name)
        cost = max(timing.saved_ms, 0.0) if timing is not None else 0.0
        return noise / (cost + COST_FLOOR_MS)

    measured = [n for n in errors_db if n not in skip and math.isfinite(errors_db[n])]
    return sorted(measured, key=lambda n: (-priority(n), n))


def deficit(checks: Sequence[Any]) -> float:
    """0 when every check passes, else the sum of each failed check's gap in units of its slack:
    agreement-like figures and cosine per (1 - threshold), SQNR per 10 dB, accuracy drop per
    max(threshold, 0.5 pt), absolute errors per decade."""
    total = 0.0
    for check in checks:
        if check.passed:
            continue
        gap = abs(check.measured - check.threshold)
        if check.figure in ("top1_agreement", "decision_agreement", "cosine"):
            total += gap / max(1.0 - check.threshold, 1e-3)
        elif check.figure == "sqnr_db":
            total += gap / 10.0
        elif check.figure == "accuracy_drop":
            total += gap / max(check.threshold, 0.005)
        elif check.figure in ("max_abs_error", "mean_abs_error"):
            total += math.log10(max(check.measured, 1e-30) / max(check.threshold, 1e-30))
        else:
            total += gap
    return round(total, 6)


@dataclass(frozen=True)
class Candidate:
    """One evaluated candidate for `pick_final`: `key`, gate verdict, deficit, float units, latency."""

    key: str
    passed: bool
    deficit: float
    float_units: int
    latency_ms: float | None
    is_float_model: bool = False


@dataclass(frozen=True)
class FinalChoice:
    """What `pick_final` chose and the one line saying why."""

    key: str
    met: bool
    why: str
    slower_than_float: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)


def pick_final(candidates: Sequence[Candidate], float_ms: float | None) -> FinalChoice:
    """The file to write.

    1. Passing candidates faster than the float model by `FASTER_MARGIN`: the fastest, ties (within
       `LATENCY_TIE`) to fewer float units.
    2. Else, when the float model itself is a candidate and passes: the float model (int8 was
       slower for every passing mix).
    3. Else the passing candidate closest in speed (it is slower than float: said so).
    4. Nothing passes: the smallest deficit, ties to the faster one; `met` is False.
    """
    def no_slower(c: Candidate) -> bool:
        return float_ms is None or c.latency_ms is None or c.latency_ms <= float_ms * (1.0 - FASTER_MARGIN)

    def speed_key(c: Candidate) -> tuple:
        return (c.latency_ms if c.latency_ms is not None else math.inf, c.float_units)

    passing = [c for c in candidates if c.passed and not c.is_float_model]
    fast = [c for c in passing if no_slower(c)]
    if fast:
        best = min(fast, key=speed_key)
        ties = [c for c in fast if c.latency_ms is None or best.latency_ms is None
                or c.latency_ms <= best.latency_ms * (1.0 + LATENCY_TIE)]
        chosen = min(ties, key=lambda c: (c.float_units, speed_key(c)))
        return FinalChoice(chosen.key, True, f"{chosen.key}: meets the goal and is faster than the float model")
    floats = [c for c in candidates if c.is_float_model and c.passed]
    if floats:
        why = ("no int8 candidate that meets the goal is faster than the float model on this CPU: the float model is written"
               if passing else "no int8 candidate meets the goal, and the float model does: the float model is written")
        return FinalChoice(floats[0].key, True, why)
    if passing:
        chosen = min(passing, key=speed_key)
        return FinalChoice(chosen.key, True, f"{chosen.key}: meets the goal but is slower than the float model", True)
    if not candidates:
        raise ValueError("no candidate to choose from")
    chosen = min(candidates, key=lambda c: (c.deficit, speed_key(c)))
    return FinalChoice(chosen.key, False, f"no candidate meets the goal; {chosen.key} is the closest")


@dataclass(frozen=True)
class LayerDecision:
    """One row of the report's per-layer table: a unit, its final precision and why."""

    node: str
    module: str
    op_type: str
    precision: str
    why: str
    error_db: float | None = None
    int8_ms: float | None = None
    float_ms: float | None = None
    algorithms: tuple[str, ...] = ()

    @property
    def saved_ms(self) -> float | None:
        """Time int8 saves on this unit (negative: int8 is slower)."""
        if self.int8_ms is None or self.float_ms is None:
            return None
        return self.float_ms - self.int8_ms

    def to_dict(self) -> dict[str, Any]:
        """Plain data for report.json."""
        return {
            "node": self.node, "module": self.module, "op_type": self.op_type, "precision": self.precision,
            "why": self.why, "error_db": self.error_db, "int8_ms": self.int8_ms, "float_ms": self.float_ms,
            "saved_ms": None if self.saved_ms is None else round(self.saved_ms, 5), "algorithms": list(self.algorithms),
        }


def plain_decisions(units: Sequence[Any], why: str, algorithms: Mapping[str, Sequence[str]]) -> list[LayerDecision]:
    """Rows for a file in which every quantizable unit stayed int8 (no search ran), each saying `why`."""
    return [LayerDecision(u.name, u.module, u.op_type, "int8", why, algorithms=tuple(algorithms.get(u.name, ())))
            for u in units]
