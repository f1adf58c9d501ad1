"""Run a float (or QDQ) ONNX model on calibration batches and hand chosen intermediate tensors to a callback.

Rule: the model is copied, every requested tensor becomes an extra graph output, and onnxruntime's
CPU provider runs it batch by batch; only one batch of intermediate tensors is alive at a time, so
memory stays bounded whatever the calibration set size. `CalibrationBatches` keeps about
`max_samples` samples, whole batches chosen evenly from a calibration reader (onnxruntime's
`get_next()` protocol), so each algorithm can go over the same data several times without
re-reading the source.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import numpy as np
import onnx

from exporter.quiet import quiet_onnxruntime


class CalibrationBatches:
    """About `max_samples` calibration samples, as whole reader batches drawn evenly from the whole set.

    The reader is read once to its end; a seeded reservoir keeps a uniform random choice of its
    batches (so data sorted by class is not cut to its first classes), in their original order.
    Whole batches only: a fixed-shape model accepts nothing else. Re-iterable.
    """

    def __init__(self, reader: Any, max_samples: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        kept: list[tuple[int, dict[str, np.ndarray]]] = []
        capacity = None
        index = 0
        while (feed := reader.get_next()) is not None:
            feed = {k: np.asarray(v) for k, v in feed.items()}
            if capacity is None:
                capacity = max(1, -(-max_samples // max(len(next(iter(feed.values()))), 1)))
            if len(kept) < capacity:
                kept.append((index, feed))
            else:
                slot = int(rng.integers(0, index + 1))
                if slot < capacity:
                    kept[slot] = (index, feed)
            index += 1
        self.feeds = [feed for _, feed in sorted(kept, key=lambda item: item[0])]
        self.samples = sum(len(next(iter(feed.values()))) for feed in self.feeds)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(self.feeds)

    def __len__(self) -> int:
        return len(self.feeds)


def with_outputs(model: onnx.ModelProto, tensors: Iterable[str]) -> onnx.ModelProto:
    """A copy of `model` whose graph outputs also include `tensors` (float32, shape left open)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    existing = {o.name for o in copy.graph.output}
    for name in tensors:
        if name not in existing:
            copy.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
            existing.add(name)
    return copy


def session(model: onnx.ModelProto, optimize: bool = True):
    """An onnxruntime CPU session over an in-memory model (graph optimizations off when `optimize` is False)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    with quiet_onnxruntime():
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def for_each_batch(
    model: onnx.ModelProto,
    tensors: list[str],
    batches: Iterable[dict[str, np.ndarray]],
    visit: Callable[[dict[str, np.ndarray]], None],
    optimize: bool = True,
) -> None:
    """Run `model` on each feed of `batches` and call `visit({tensor: value})` with the requested tensors."""
    runner = session(with_outputs(model, tensors), optimize=optimize)
    inputs = {i.name for i in runner.get_inputs()}
    for feed in batches:
        values = runner.run(tensors, {k: v for k, v in feed.items() if k in inputs})
        visit(dict(zip(tensors, values)))
