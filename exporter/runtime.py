"""Running ONNX files on onnxruntime's CPU provider, and timing them."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np


def session_for(path: Path | str, threads: int = 1):
    """An onnxruntime CPU `InferenceSession` with a fixed intra-op thread count and full graph optimization."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run one batch; `feed` is keyed by input name. Returns the outputs in graph order."""
    return session.run(None, feed)


def median_latency_ms(call: Callable[[], object], warmup: int = 3, repeats: int = 20, budget_s: float = 5.0) -> float:
    """Median wall time of `call()` in milliseconds after `warmup` runs; stops early past `budget_s`."""
    for _ in range(warmup):
        call()
    times = []
    deadline = time.perf_counter() + budget_s
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000.0)
        if time.perf_counter() > deadline and len(times) >= 3:
            break
    return statistics.median(times)


def onnx_latency_ms(path: Path | str, feed: dict[str, np.ndarray], threads: int = 1, repeats: int = 20) -> float:
    """Median latency of one ONNX file on `feed` with `threads` intra-op threads."""
    session = session_for(path, threads=threads)
    return median_latency_ms(lambda: session.run(None, feed), repeats=repeats)


def interleaved_latency_ms(calls: dict[str, Callable[[], object]], warmup: int = 3, repeats: int = 20,
                           budget_s: float = 10.0, quantile: float = 0.5, settle: int = 0) -> dict[str, float]:
    """Latency of several calls timed in alternation (round-robin), in milliseconds: the median by default.

    Timing candidates one after the other lets a burst of outside load hit only one of them;
    alternating makes the ratio between them steady on a busy machine. A low `quantile` (0.1: the
    fastest tenth) reads the machine's unloaded speed, for figures that steer decisions. `settle`
    untimed runs before each timed one give every call its own warm caches, as in an app that runs
    the model repeatedly: without them a small model is timed with the other's data in the cache
    (the int8 MobileNetV2 pruned to 4x, 96x96: 0.282 ms that way, 0.230 ms with its own warm caches).
    """
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    deadline = time.perf_counter() + budget_s
    for _ in range(repeats):
        for name, call in calls.items():
            for _ in range(settle):
                call()
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1000.0)
        if time.perf_counter() > deadline and len(times[name]) >= 3:
            break
    if quantile == 0.5:
        return {name: statistics.median(values) for name, values in times.items()}
    return {name: sorted(values)[int(quantile * (len(values) - 1))] for name, values in times.items()}
