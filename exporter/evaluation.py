"""The validation evaluator: holds the reference outputs and turns any candidate into `Figures`.

Built once per run from the original PyTorch model and the held-out data, it is what the pipeline's
validation and the accuracy search call to judge a candidate, so neither reaches into the other's
private helpers:

- `onnx(path)`: the figures the gate judges. Agreement, cosine, SQNR and errors compare with the
  *exported* model (after compression passes: the quantization loss alone); `reference_accuracy`
  is always the original model's, so `accuracy_drop` is end to end.
- `onnx(path, versus="original")`: the same file against the original model (end to end).
- `torch(model)`: a PyTorch model (a compressed one) against the original.
- `gate(figures)`: the target's checks for those figures (`exporter.figures.check`).

Fixed-shape targets (no dynamic batch) get every feed cut or repeated to the file's batch size, and
the reference outputs and labels cut or repeated alike.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from exporter.figures import Figures, GateCheck, KindDecision, check
from exporter.inputs import InputSpec
from exporter.validate import Reference, ReferenceBatch, compare_onnx, labelled_output, reference_outputs, torch_figures

Versus = Literal["exported", "original"]


@dataclass
class Evaluator:
    """Reference outputs of the original (and, after passes, the exported) model, and the target's tolerances."""

    original: Reference
    tolerances: Any
    exported: Reference | None = None
    fixed_batch: int | None = None

    @classmethod
    def build(
        cls,
        model,
        samples,
        specs: Sequence[InputSpec],
        batch_size: int,
        tolerances: Any,
        overrides: Sequence[tuple[str, str]] = (),
        fixed_batch: int | None = None,
    ) -> "Evaluator":
        """Run the original model once over the held-out `samples` and decide every output's kind."""
        reference = reference_outputs(model, samples, specs, batch_size, overrides)
        return cls(original=reference, tolerances=tolerances, fixed_batch=fixed_batch)

    @property
    def kinds(self) -> tuple[KindDecision, ...]:
        """Each output's kind and why (the original model's outputs decide it)."""
        return self.original.kinds

    @property
    def gate_reference(self) -> Reference:
        """What candidates are gated against: the exported (compressed) model, else the original."""
        return self.exported if self.exported is not None else self.original

    def use_exported(self, reference: Reference) -> None:
        """Gate against this compressed model's outputs from now on, judged with the original's kinds."""
        self.exported = reference.with_kinds(self.original.kinds)

    def onnx(self, path: Path, versus: Versus = "exported") -> Figures:
        """Figures of an ONNX file against the exported model (the gate's) or the original model."""
        reference = self.original if versus == "original" else self.gate_reference
        figures = compare_onnx(Path(path), self._fit(reference), desc=f"validating {Path(path).name}",
                               decision_threshold=self.tolerances.decision_threshold)
        return self._with_original_accuracy(figures)

    def torch(self, model) -> Figures:
        """Figures of a PyTorch model against the original model."""
        return torch_figures(model, self.original, self.tolerances.decision_threshold)

    def gate(self, figures: Figures, tolerances: Any = None) -> list[GateCheck]:
        """The gate's checks of `figures` with the target's tolerances (or `tolerances`, e.g. a search goal)."""
        return check(figures, tolerances if tolerances is not None else self.tolerances)

    def gate_summary(self, path: Path) -> dict[str, Any]:
        """`onnx(path).to_dict()`: plain-data figures, for callers that store them."""
        return self.onnx(path).to_dict()

    def _with_original_accuracy(self, figures: Figures) -> Figures:
        """Replace each output's reference accuracy with the original model's (end-to-end accuracy drop)."""
        if self.exported is None:
            return figures
        index = labelled_output(self.original)
        labels = self.original.labels()
        if index is None or labels is None:
            return figures
        out = figures.outputs[index]
        if out.reference_accuracy is None:
            return figures
        original = _accuracy(self.original.stacked(index), labels, out.kind, self.tolerances.decision_threshold)
        outputs = list(figures.outputs)
        outputs[index] = dataclasses.replace(out, reference_accuracy=original)
        return Figures(tuple(outputs))

    def _fit(self, reference: Reference) -> Reference:
        """The reference cut (or repeated) to the fixed batch size of a fixed-shape file."""
        if self.fixed_batch is None:
            return reference
        size = self.fixed_batch
        batches = [
            ReferenceBatch(
                {k: _fit_rows(v, size) for k, v in b.feed.items()},
                tuple(_fit_rows(o, size) for o in b.outputs),
                None if b.labels is None else _fit_rows(np.asarray(b.labels), size),
            )
            for b in reference.batches
        ]
        return Reference(batches, reference.names, reference.kinds)


def _fit_rows(array: np.ndarray, size: int) -> np.ndarray:
    if len(array) < size:
        array = np.concatenate([array] * (size // len(array) + 1))
    return array[:size]


def _accuracy(outputs: np.ndarray, labels: np.ndarray, kind: str, threshold: float) -> float:
    if kind == "probability":
        return float(np.mean((outputs.reshape(-1) >= threshold) == (labels.reshape(-1) > 0)))
    return float(np.mean(outputs.argmax(axis=-1) == labels))
