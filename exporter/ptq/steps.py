"""The order the PTQ algorithms run in, for the static quantizer.

1. `before_calibration`: cross-layer equalization and high-bias absorption (float function
   unchanged, so activation ranges must be calibrated after them), then AdaRound (weights only, against the equalized float model,
   which is kept as the reference for bias correction).
2. the static quantizer calibrates the returned model; `refine_ranges` then picks each tensor's
   range by reconstruction error from the MinMax ranges.
3. `after_quantization`: empirical bias correction against the reference, re-quantizing with the
   same calibration cache each round.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import onnx

from exporter.ptq.activations import CalibrationBatches
from exporter.ptq.graph import Graph
from exporter.ptq.records import PtqLog
from targets.profile import QuantScheme


def wants_ptq(scheme: QuantScheme) -> bool:
    """True when the scheme asks for any algorithm of this package."""
    return scheme.equalize or scheme.bias_absorption or scheme.adaround or scheme.mse_ranges or scheme.bias_correction


@dataclass
class PtqState:
    """The model being optimised, the float reference, the cached calibration batches and the log."""

    graph: Graph
    reference: onnx.ModelProto
    batches: CalibrationBatches
    log: PtqLog


@contextmanager
def timed(log: PtqLog, name: str) -> Iterator[None]:
    """Add the seconds spent in the block to `log.seconds[name]`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        log.seconds[name] = round(log.seconds.get(name, 0.0) + time.perf_counter() - start, 3)


def before_calibration(model_path: Path, reader, scheme: QuantScheme, keep_float: tuple[str, ...] = ()) -> PtqState:
    """Load the pre-processed float model, cache calibration batches, then equalize and round as `scheme` says.

    Layers named in `keep_float` (nodes the quantizer will leave in float) keep their float weights.
    """
    from exporter.ptq.adaround import adaround
    from exporter.ptq.equalize import equalize

    log = PtqLog()
    graph = Graph.load(model_path)
    with timed(log, "calibration_cache"):
        batches = CalibrationBatches(reader, scheme.ptq_samples)
    if scheme.equalize:
        with timed(log, "equalization"):
            equalize(graph, batches, log)
    if scheme.bias_absorption:
        from exporter.ptq.bias_absorption import absorb_high_biases

        with timed(log, "bias_absorption"):
            absorb_high_biases(graph, batches, log)
    reference = onnx.ModelProto()
    reference.CopyFrom(graph.model)
    if scheme.adaround:
        with timed(log, "adaround"):
            adaround(
                graph,
                batches,
                scheme,
                log,
                iterations=scheme.adaround_iterations,
                samples=scheme.adaround_samples,
                seconds=scheme.adaround_seconds,
                skip=keep_float,
            )
    return PtqState(graph, reference, batches, log)


def refine_ranges(state: PtqState, cache: Path, scheme: QuantScheme) -> None:
    """Replace the calibration cache's ranges by the least-error ones (`exporter.ptq.ranges`)."""
    from exporter.ptq.ranges import choose_ranges, read_cache, write_cache

    with timed(state.log, "mse_ranges"):
        chosen = choose_ranges(state.graph.model, read_cache(cache), state.batches, scheme, state.log)
        write_cache(cache, chosen)


def after_quantization(state: PtqState, quantize: Callable[[onnx.ModelProto], onnx.ModelProto]) -> None:
    """Empirical bias correction of `state.graph` against the reference (`exporter.ptq.bias_correction`)."""
    from exporter.ptq.bias_correction import correct_biases

    with timed(state.log, "bias_correction"):
        correct_biases(state.graph, state.reference, quantize, state.batches, state.log)
