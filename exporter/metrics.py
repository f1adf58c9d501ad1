"""Agreement figures between a reference output and a candidate output.

All functions take numpy arrays of the same shape with the batch axis first and return floats.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def cosine_similarity(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean over samples of the cosine between flattened reference and candidate rows (1.0 = same direction)."""
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    cand = candidate.reshape(len(candidate), -1).astype(np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    dots = np.sum(ref * cand, axis=1)
    cos = np.where(norms > 0, dots / np.maximum(norms, 1e-300), np.where(np.all(ref == cand, axis=1), 1.0, 0.0))
    return float(np.mean(cos))


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB: 10 log10(sum ref^2 / sum (ref - cand)^2); inf when equal."""
    ref = reference.astype(np.float64)
    noise = float(np.sum((ref - candidate.astype(np.float64)) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * np.log10(signal / noise)


@dataclass
class OutputComparison:
    """Accumulates reference/candidate outputs batch by batch and summarises the agreement.

    Top-1 agreement and accuracy apply to classifier-shaped outputs (2-D, more than one column).
    """

    reference: list[np.ndarray] = field(default_factory=list)
    candidate: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)

    def add(self, reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Record one batch of the first model output (and its labels when known)."""
        self.reference.append(np.asarray(reference, dtype=np.float32))
        self.candidate.append(np.asarray(candidate, dtype=np.float32))
        if labels is not None:
            self.labels.append(np.asarray(labels))

    def summary(self) -> dict[str, float | int | None]:
        """max/mean abs error, cosine, SQNR (dB), top-1 agreement and both accuracies (None if not applicable)."""
        ref = np.concatenate(self.reference)
        cand = np.concatenate(self.candidate)
        diff = np.abs(ref.astype(np.float64) - cand)
        result: dict[str, float | int | None] = {
            "samples": int(len(ref)),
            "max_abs_error": float(diff.max()) if diff.size else 0.0,
            "mean_abs_error": float(diff.mean()) if diff.size else 0.0,
            "cosine": cosine_similarity(ref, cand),
            "sqnr_db": sqnr_db(ref, cand),
            "top1_agreement": None,
            "reference_accuracy": None,
            "candidate_accuracy": None,
        }
        if ref.ndim == 2 and ref.shape[1] > 1:
            ref_top, cand_top = ref.argmax(1), cand.argmax(1)
            result["top1_agreement"] = float(np.mean(ref_top == cand_top))
            if self.labels and sum(len(b) for b in self.labels) == len(ref):
                labels = np.concatenate(self.labels)
                result["reference_accuracy"] = float(np.mean(ref_top == labels))
                result["candidate_accuracy"] = float(np.mean(cand_top == labels))
        return result
