"""Per-unit latency on this CPU, measured with onnxruntime's profiler, in int8 and in float.

onnxruntime fuses a unit with its Q/DQ nodes (DequantizeLinear -> Conv -> QuantizeLinear becomes one
QLinearConv) and renames nodes while doing so; the profiler (`SessionOptions.enable_profiling`)
reports the time of every kernel of the optimized graph under those names. Each kernel is mapped
back to a unit of the QDQ model:

1. its name, or its name without the `_token_<n>` suffixes the layout transformer adds, is a unit;
   an NCHWc kernel is named after the tensor it makes (`<tensor>_nchwc`): the unit making that
   tensor (up through a restored Relu/Clip) owns it;
2. a QuantizeLinear of the QDQ model belongs to the unit whose output it quantizes, a
   DequantizeLinear to the unit that reads it (the boundary cost of a float unit among int8 ones);
3. anything else (layout Transposes, NCHWc reorders, a restored Relu, nodes the optimizer made up)
   belongs to the unit executed just before it.

A unit's int8 time comes from profiling the plain int8 model, its float time from profiling the same
model with every unit in float (`exporter.accuracy.mixed`); batch 1, one intra-op thread, median
per kernel over the profiled runs. `UnitTiming` carries both; the decision logic takes them as data.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from exporter.accuracy.units import QDQ_OPS
from exporter.profiling import KERNEL_SUFFIX

_TOKEN = re.compile(r"(_token_\d+)+$")
_NCHWC = "_nchwc"


@dataclass(frozen=True)
class UnitTiming:
    """Kernel time of one unit at batch 1: in int8 (`int8_ms`) and in float (`float_ms`)."""

    int8_ms: float
    float_ms: float

    @property
    def saved_ms(self) -> float:
        """What int8 saves against float (negative: int8 is slower)."""
        return self.float_ms - self.int8_ms

    def to_dict(self) -> dict[str, float]:
        """Plain data for the cache and the report."""
        return {"int8_ms": round(self.int8_ms, 5), "float_ms": round(self.float_ms, 5)}


def profile_kernels(path: Path, feed: dict[str, np.ndarray], runs: int = 30, warmup: int = 3) -> list[tuple[str, float]]:
    """(kernel name, median ms per run) in execution order, from onnxruntime's profiler at one thread."""
    from exporter.profiling import kernel_events

    kernels = kernel_events(path, feed, runs, warmup)
    kernels.sort(key=lambda e: e["ts"])
    durations: dict[str, list[float]] = {}
    order: list[str] = []
    for event in kernels:
        name = event["name"][: -len(KERNEL_SUFFIX)]
        if name not in durations:
            durations[name] = []
            order.append(name)
        durations[name].append(event["dur"] / 1000.0)
    result = []
    for name in order:
        values = durations[name]
        kept = values[warmup:] if len(values) > warmup else values
        result.append((name, statistics.median(kept)))
    return result


def attribute_kernels(kernels: list[tuple[str, float]], model: onnx.ModelProto, units: set[str]) -> dict[str, float]:
    """Sum kernel times per unit by the rules of the module docstring; units never seen get 0."""
    graph = model.graph
    nodes = {node.name: node for node in graph.node}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    totals = {name: 0.0 for name in units}
    previous = ""
    for kernel, ms in kernels:
        unit = _owner(kernel, nodes, producer, consumers, units)
        if unit:
            previous = unit
        else:
            unit = previous
        if unit:
            totals[unit] += ms
    return totals


def _owner(kernel: str, nodes: dict, producer: dict, consumers: dict, units: set[str]) -> str:
    bare = _TOKEN.sub("", kernel)
    if bare.endswith(_NCHWC):
        made = producer.get(bare[: -len(_NCHWC)])
        for _ in range(3):  # a fused Conv+Relu is named after the Relu's output
            if made is None or made.name in units:
                break
            made = producer.get(made.input[0]) if made.input else None
        if made is not None and made.name in units:
            return made.name
    for name in (kernel, bare):
        if name in units:
            return name
        node = nodes.get(name)
        if node is None or node.op_type not in QDQ_OPS:
            continue
        if node.op_type == "QuantizeLinear":
            source = producer.get(node.input[0])
            if source is not None and source.name in units:
                return source.name
        for consumer in consumers.get(node.output[0], []):
            if consumer.name in units:
                return consumer.name
            if consumer.op_type == "QuantizeLinear":  # DQ -> float op -> Q chains: the next unit
                continue
    return ""


def measure_unit_timings(
    int8_path: Path,
    float_path: Path,
    model: onnx.ModelProto,
    float_model: onnx.ModelProto,
    units: set[str],
    feed: dict[str, np.ndarray],
    runs: int = 30,
) -> dict[str, UnitTiming]:
    """Int8 and float time of every unit: profile both files (see the module docstring).

    `model` is the int8 QDQ model behind `int8_path` (names of units and Q/DQ nodes); `float_path`
    is that model with every unit in float (`float_model`). Both are profiled twice, interleaved, and the lower
    median per unit kept, so a burst of outside load hits one profile, not the comparison.
    """
    int8_runs, float_runs = [], []
    for _ in range(2):
        int8_runs.append(attribute_kernels(profile_kernels(int8_path, feed, runs), model, units))
        float_runs.append(attribute_kernels(profile_kernels(float_path, feed, runs), float_model, units))
    return {
        name: UnitTiming(min(r[name] for r in int8_runs), min(r[name] for r in float_runs)) for name in sorted(units)
    }


def profile_runs(seconds_per_run: float, budget_s: float = 3.0) -> int:
    """How many profiled runs fit in `budget_s` (between 5 and 50)."""
    return int(max(5, min(50, budget_s / max(seconds_per_run, 1e-4))))
