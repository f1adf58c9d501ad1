"""Shared helpers for the benchmark scripts: interleaved timing, a machine summary, markdown tables.

Why interleaved: benchmarks here run on shared, often busy machines. Timing candidate A for a
while and then candidate B lets a burst of outside load land on one of them only and skews the
ratio between them; timing them round-robin, a short block each, spreads the load over all of
them. Each block starts with untimed "settle" calls so that the previous candidate's spinning
worker threads (onnxruntime and OpenMP both spin after a run) and cache footprint are not billed
to the next one.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent


def add_repo_root_to_path() -> Path:
    """Make `exporter`, `samples`, `targets`... importable when a script is run as `python benchmarks/x.py`."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return REPO_ROOT


@dataclass(frozen=True)
class Timing:
    """Wall times of one candidate in milliseconds; `median` is the headline, `best` the least-disturbed run."""

    samples_ms: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def best(self) -> float:
        return min(self.samples_ms)


def interleaved_timings(
    calls: Mapping[str, Callable[[], object]],
    *,
    max_rounds: int,
    min_rounds: int = 3,
    per_round: int = 1,
    settle: int = 1,
    warmup: int = 2,
    budget_s: float = 30.0,
) -> dict[str, Timing]:
    """Time every call round-robin: per round and per call, `settle` untimed runs then `per_round` timed ones.

    Stops after `max_rounds`, or once `budget_s` has passed and `min_rounds` are done.
    """
    for call in calls.values():
        for _ in range(warmup):
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    deadline = time.perf_counter() + budget_s
    for done in range(1, max_rounds + 1):
        for name, call in calls.items():
            for _ in range(settle):
                call()
            for _ in range(per_round):
                start = time.perf_counter()
                call()
                samples[name].append((time.perf_counter() - start) * 1000.0)
        if done >= min_rounds and time.perf_counter() > deadline:
            break
    return {name: Timing(tuple(values)) for name, values in samples.items()}


def machine_summary() -> dict[str, str]:
    """CPU model, core count, int8-relevant CPU features, load average and library versions, for table headers."""
    add_repo_root_to_path()
    from targets.hardware import read_cpu_features

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    features = read_cpu_features()
    flags = sorted(features.flags)
    summary = {
        "cpu": f"{model} ({os.cpu_count()} logical cores, {features.arch})",
        "int8 features": (", ".join(flags) or "none detected")
        + (" -> VNNI int8 dot products" if features.has_vnni else " -> no VNNI"),
        "load average": load_average(),
        "python": platform.python_version(),
    }
    for module in ("torch", "onnx", "onnxruntime", "numpy"):
        try:
            summary[module] = __import__(module).__version__
        except ImportError:
            pass
    return summary


def load_average() -> str:
    """The 1/5/15-minute load average as text ('n/a' where the OS has none)."""
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except (AttributeError, OSError):
        return "n/a"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], right_from: int = 1) -> str:
    """A GitHub markdown table; columns from index `right_from` on are right-aligned (figures)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if i >= right_from else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i >= right_from else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


def fmt_ms(value: float) -> str:
    """Milliseconds with three significant-ish digits."""
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.1f}"


def fmt_mb(size_bytes: int) -> str:
    """A file size in MB (10^6 bytes), three decimals under 1 MB."""
    mb = size_bytes / 1e6
    return f"{mb:.3f} MB" if mb < 1 else f"{mb:.2f} MB"
