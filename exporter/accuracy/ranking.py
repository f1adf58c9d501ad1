"""Sensitivity ranking: the output error each unit adds on its own, in dB.

For each unit, the model with *only that unit* in int8 (every other unit float, built by
`exporter.accuracy.mixed`) runs on a few calibration batches; its outputs are compared with the
all-float model's. The figure is the output SQNR in dB (signal: the float output's energy around its
per-channel mean; noise: the squared difference): high is harmless, low is harmful. Noise powers of
independent units roughly add up, which is why `exporter.accuracy.decision.accuracy_order` can
trade them against time.

One session per unit makes this the costly step of the search: it stops at `deadline` (units not
reached get no figure) and its results are cached (`exporter.accuracy.cache`).
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np
import onnx

from exporter.accuracy.mixed import float_units
from exporter.accuracy.units import Unit
from exporter.progress import progress_bar

DB_LIMIT = 200.0


def output_sqnr_db(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> float:
    """SQNR of `candidate` against `reference` over several output arrays, clamped to +-`DB_LIMIT`."""
    signal = noise = 0.0
    for ref, cand in zip(reference, candidate):
        ref = np.asarray(ref, dtype=np.float64)
        centred = ref - ref.mean(axis=0, keepdims=True) if ref.ndim > 1 and len(ref) > 1 else ref
        signal += float(np.sum(centred * centred))
        noise += float(np.sum((ref - np.asarray(cand, dtype=np.float64).reshape(ref.shape)) ** 2))
    if noise <= 0.0:
        return DB_LIMIT
    if signal <= 0.0:
        return -DB_LIMIT
    return float(max(-DB_LIMIT, min(DB_LIMIT, 10.0 * math.log10(signal / noise))))


def rank_units(
    quant_model: onnx.ModelProto,
    units: Sequence[Unit],
    folded: dict,
    float_model: onnx.ModelProto,
    feeds: Sequence[dict[str, np.ndarray]],
    deadline: float = math.inf,
) -> dict[str, float]:
    """Output SQNR (dB) with only each unit in int8; units not reached before `deadline` are left out."""
    names = [u.name for u in units]
    everything, _ = float_units(quant_model, names, folded, float_model)
    reference = _run(everything, feeds)
    errors: dict[str, float] = {}
    bar = progress_bar("measuring each layer's int8 error", total=len(names), unit="layer")
    try:
        for name in names:
            if time.perf_counter() > deadline:
                break
            model, _ = float_units(quant_model, [n for n in names if n != name], folded, float_model)
            errors[name] = round(output_sqnr_db(reference, _run(model, feeds)), 3)
            bar.update(1)
    finally:
        bar.close()
    return errors


def _run(model: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """Every output of every feed, concatenated per feed (outputs of one feed in graph order)."""
    from exporter.quiet import quiet_onnxruntime
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 2
    with quiet_onnxruntime():
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    results = []
    for feed in feeds:
        results.extend(session.run(None, feed))
    return results
