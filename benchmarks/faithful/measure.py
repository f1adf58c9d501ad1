"""Figures of one quantized candidate against the float ONNX on the validation inputs, and batch-1 timing.

Figures follow what the output is (the zoo's `output_kind`): logits -> top-1 agreement with the
float model (per step for (N, T, C) sequence logits), cosine, accuracy when labels exist; embeddings -> cosine (agreement is meaningless and
left blank); probabilities -> decision agreement (p > 0.5 for a single probability, arg-max for a
distribution over bins), cosine and max absolute error. Cosine is the mean over samples of the
per-sample cosine of the first output (for one value per sample,
the cosine of the whole batch vector). Timing: batch 1, one intra-op and one inter-op thread,
candidates interleaved round-robin (`benchmarks/_common.interleaved_timings`), median.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Figures:
    """Fidelity of one candidate's first output against the float ONNX model."""

    agreement: float | None
    cosine: float
    accuracy: float | None
    max_abs_error: float


def session(path: str, threads: int = 1):
    """An onnxruntime CPU session with `threads` intra-op threads, one inter-op thread, sequential."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def feeds_for(sess, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Map the val arrays onto the session's input names (by name, else in order)."""
    names = [i.name for i in sess.get_inputs()]
    if all(n in arrays for n in names):
        return {n: arrays[n] for n in names}
    return dict(zip(names, arrays.values()))


def run_all(sess, arrays: dict[str, np.ndarray], batch: int = 16) -> np.ndarray:
    """The first output of `sess` over every sample of `arrays`."""
    feeds = feeds_for(sess, arrays)
    count = len(next(iter(feeds.values())))
    outs = [sess.run(None, {k: v[i : i + batch] for k, v in feeds.items()})[0] for i in range(0, count, batch)]
    return np.concatenate(outs)


def figures(reference: np.ndarray, candidate: np.ndarray, output_kind: str, labels: np.ndarray | None) -> Figures:
    """Compare `candidate` with `reference` (both (N, ...)) the way `output_kind` says."""
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    got = candidate.reshape(len(candidate), -1).astype(np.float64)
    if ref.shape[1] == 1:  # one value per sample: a per-sample cosine is only a sign test; use the batch vector
        cosine = float(np.sum(ref * got) / max(float(np.linalg.norm(ref) * np.linalg.norm(got)), 1e-12))
    else:
        denom = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
        cosine = float(np.mean(np.sum(ref * got, axis=1) / np.maximum(denom, 1e-12)))
    kind = output_kind.split()[0]
    agreement = accuracy = None
    if kind == "logits" and reference.ndim == 3:  # a sequence of per-step logits (N, T, C): agreement per step
        agreement = float(np.mean(reference.argmax(-1) == candidate.argmax(-1)))
    elif kind == "logits":
        agreement = float(np.mean(ref.argmax(1) == got.argmax(1)))
        if labels is not None:
            accuracy = float(np.mean(got.argmax(1) == labels))
    elif kind == "probabilities":
        if ref.shape[1] == 1:
            agreement = float(np.mean((ref[:, 0] > 0.5) == (got[:, 0] > 0.5)))
        else:
            agreement = float(np.mean(ref.argmax(1) == got.argmax(1)))
    return Figures(agreement, cosine, accuracy, float(np.max(np.abs(ref - got))))


def batch1_latency(
    paths: dict[str, str], arrays: dict[str, np.ndarray], budget_s: float = 20.0
) -> tuple[dict[str, float], dict[str, str]]:
    """Median batch-1 latency (ms) of each model file, timed interleaved, one thread each; and the files
    that cannot run one sample at a time, with onnxruntime's message."""
    from benchmarks._common import interleaved_timings

    calls, broken = {}, {}
    for name, path in paths.items():
        sess = session(path)
        feeds = {k: v[:1] for k, v in feeds_for(sess, arrays).items()}
        try:
            sess.run(None, feeds)
        except Exception as exc:  # e.g. a batch size baked into an LSTM's initial state
            broken[name] = f"batch 1 fails: {str(exc).splitlines()[0][-120:]}"
            continue
        calls[name] = (lambda s=sess, f=feeds: s.run(None, f))
    timings = interleaved_timings(calls, max_rounds=400, min_rounds=20, per_round=5, settle=2, budget_s=budget_s)
    return {name: t.median for name, t in timings.items()}, broken
