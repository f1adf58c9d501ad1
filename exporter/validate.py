"""Validation: run the reference PyTorch model once on held-out data, then compare candidates with it.

`reference_outputs` runs a PyTorch model over the held-out samples, keeps every output of every
batch (a model's nested tuple/list/dict outputs are flattened in order, as the ONNX export does)
and decides each output's kind (`exporter.figures.decide_kinds`). `compare_onnx` / `compare_torch`
run a candidate on the same feeds and return `exporter.figures.Figures`; `check_gate` judges them
with the one rule table, `exporter.figures.RULES`. `exporter.evaluation.Evaluator` wraps these for
the pipeline and the accuracy search.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from exporter.figures import (
    LABELLED_KINDS, Figures, GateCheck, KindDecision, OutputFigures, check, compare_output, decide_kinds,
)
from exporter.inputs import InputSpec
from exporter.progress import progress

__all__ = ["GateCheck", "Reference", "ReferenceBatch", "check_gate", "compare_onnx", "compare_torch", "reference_outputs"]


@dataclass(frozen=True)
class ReferenceBatch:
    """One held-out batch: the input feed, every reference output, and the labels (or None).

    Unpacks as `(feed, first output, labels)` for code written for single-output models.
    """

    feed: dict[str, np.ndarray]
    outputs: tuple[np.ndarray, ...]
    labels: np.ndarray | None = None

    @property
    def output(self) -> np.ndarray:
        """The first output."""
        return self.outputs[0]

    def _legacy(self) -> tuple:
        return (self.feed, self.outputs[0], self.labels)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._legacy())

    def __getitem__(self, index: int) -> Any:
        return self._legacy()[index]

    def __len__(self) -> int:
        return 3


@dataclass
class Reference:
    """Reference outputs of one PyTorch model on the held-out data, with each output's name and kind.

    Behaves as the list of its `ReferenceBatch`es (iterate, index, slice, len).
    """

    batches: list[ReferenceBatch]
    names: tuple[str, ...]
    kinds: tuple[KindDecision, ...] = field(default_factory=tuple)
    _stacked: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def __iter__(self) -> Iterator[ReferenceBatch]:
        return iter(self.batches)

    def __getitem__(self, index):
        return self.batches[index]

    def __len__(self) -> int:
        return len(self.batches)

    def __bool__(self) -> bool:
        return bool(self.batches)

    def stacked(self, index: int) -> np.ndarray:
        """Every batch of output `index` concatenated along the batch axis (computed once)."""
        if index not in self._stacked:
            self._stacked[index] = np.concatenate([b.outputs[index] for b in self.batches])
        return self._stacked[index]

    def labels(self) -> np.ndarray | None:
        """All labels concatenated, or None unless every batch has them."""
        if not self.batches or any(b.labels is None for b in self.batches):
            return None
        return np.concatenate([np.asarray(b.labels) for b in self.batches])

    def with_kinds(self, kinds: Sequence[KindDecision]) -> "Reference":
        """The same batches judged with other kinds (e.g. the original model's, for a compressed model)."""
        return Reference(self.batches, self.names, tuple(kinds), self._stacked)


def output_names_for(count: int) -> list[str]:
    """The exported file's output names: `output` for one output, `output_0..n` for several."""
    from exporter.onnx_export import output_names_for as names

    return names(count)


def flatten_outputs(out: Any) -> tuple[np.ndarray, ...]:
    """A model's outputs as a flat tuple of arrays (tuples/lists in order, dict values in order)."""
    import torch

    if isinstance(out, torch.Tensor):
        return (out.detach().cpu().numpy(),)
    if isinstance(out, dict):
        return tuple(a for v in out.values() for a in flatten_outputs(v))
    if isinstance(out, (tuple, list)):
        return tuple(a for v in out for a in flatten_outputs(v))
    return (np.asarray(out),)


def reference_outputs(
    model, samples, specs: Sequence[InputSpec], batch_size: int, overrides: Sequence[tuple[str, str]] = ()
) -> Reference:
    """Run the PyTorch reference once over `samples`, keep every output, and decide each output's kind.

    Computed once per run and reused for every candidate file (float ONNX, quantized, fallbacks).
    `overrides` are `--output-kind` settings ((name or "", kind), ...).
    """
    import torch

    from calibration import iter_batches

    batches = []
    with torch.no_grad():
        for batch in progress(iter_batches(samples, specs, batch_size), "reference outputs", unit="batch"):
            out = model(*[torch.from_numpy(batch.inputs[s.name]) for s in specs])
            batches.append(ReferenceBatch(batch.inputs, flatten_outputs(out), batch.labels))
    names = tuple(output_names_for(len(batches[0].outputs))) if batches else ("output",)
    reference = Reference(batches, names)
    if batches:
        stacked = [reference.stacked(i) for i in range(len(names))]
        inputs = {name: tuple(array.shape) for name, array in batches[0].feed.items()}
        reference.kinds = decide_kinds(names, stacked, reference.labels(), overrides, inputs)
    return reference


def compare(reference: Reference, candidates: Iterable[Sequence[np.ndarray]], decision_threshold: float = 0.5) -> Figures:
    """Figures of candidate outputs (one sequence of arrays per reference batch, in order) against `reference`."""
    collected: list[list[np.ndarray]] = [[] for _ in reference.names]
    for batch, outputs in zip(reference.batches, candidates):
        if len(outputs) != len(batch.outputs):
            raise ValueError(f"the candidate has {len(outputs)} outputs, the reference {len(batch.outputs)}")
        for i, array in enumerate(outputs):
            collected[i].append(np.asarray(array))
    labels = reference.labels()
    labelled = labelled_output(reference)
    outputs: list[OutputFigures] = []
    for i, decision in enumerate(reference.kinds):
        outputs.append(compare_output(
            decision.name, decision.kind, reference.stacked(i), np.concatenate(collected[i]),
            labels=labels if i == labelled else None, decision_threshold=decision_threshold,
        ))
    return Figures(tuple(outputs))


def labelled_output(reference: Reference) -> int | None:
    """Index of the output the labels describe: the first classifier or probability output with one row per label."""
    labels = reference.labels()
    if labels is None:
        return None
    for i, decision in enumerate(reference.kinds):
        if decision.kind in LABELLED_KINDS and len(reference.stacked(i)) == len(labels):
            return i
    return None


def compare_onnx(onnx_path: Path, reference: Reference, desc: str = "validating", decision_threshold: float = 0.5) -> Figures:
    """Run `onnx_path` on the reference batches and compare every output with the reference."""
    from exporter.runtime import run_onnx, session_for

    session = session_for(onnx_path, threads=2)
    runs = (run_onnx(session, b.feed) for b in progress(reference.batches, desc, total=len(reference), unit="batch"))
    return compare(reference, runs, decision_threshold)


def torch_figures(model, reference: Reference, decision_threshold: float = 0.5) -> Figures:
    """Run a (compressed) PyTorch model on the reference batches and compare every output."""
    import torch

    def runs():
        with torch.no_grad():
            for b in reference.batches:
                yield flatten_outputs(model(*[torch.from_numpy(v) for v in b.feed.values()]))

    return compare(reference, runs(), decision_threshold)


def compare_torch(model, reference: Reference) -> dict[str, Any]:
    """`torch_figures` as plain data (`Figures.to_dict()`), the form pass records keep."""
    return torch_figures(model, reference).to_dict()


def check_gate(figures: Figures | dict[str, Any], tolerances) -> list[GateCheck]:
    """Judge figures with the target's tolerances (`exporter.figures.check`); unset or inapplicable figures are skipped.

    Also takes the plain-data form (`Figures.to_dict()`); a flat dict from before per-output figures
    is read as one output, a classifier when it has a top-1 agreement, else regression.
    """
    if isinstance(figures, dict):
        figures = _figures_from_dict(figures)
    return check(figures, tolerances)


def _figures_from_dict(data: dict[str, Any]) -> Figures:
    if data.get("outputs"):
        return Figures.from_dict(data)
    kind = "logits" if data.get("top1_agreement") is not None else "regression"
    return Figures((OutputFigures(
        name="output", kind=kind, samples=int(data.get("samples") or 0),
        max_abs_error=float(data.get("max_abs_error") or 0.0), mean_abs_error=float(data.get("mean_abs_error") or 0.0),
        cosine=float(data.get("cosine", 1.0)), sqnr_db=float(data.get("sqnr_db", float("inf"))),
        top1_agreement=data.get("top1_agreement"), reference_accuracy=data.get("reference_accuracy"),
        candidate_accuracy=data.get("candidate_accuracy"),
    ),))
