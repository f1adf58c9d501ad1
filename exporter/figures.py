"""What a model's outputs are, the figures that compare a candidate with the reference, and the one gate rule table.

Every output of a model has a *kind*, detected from the reference model's outputs on held-out data
(and the labels, when there are any) or set by the user (`--output-kind`):

| kind | what it is | judged by |
|---|---|---|
| `logits` | classifier scores (raw or log-softmax), class on the last axis | top-1 agreement, cosine, SQNR, accuracy drop |
| `probabilities` | softmax rows (non-negative, summing to 1) | top-1 agreement, mean absolute error, accuracy drop |
| `probability` | independent probabilities in [0, 1] (sigmoid: voice activity, multi-label) | mean absolute error, decision agreement at the threshold, accuracy drop |
| `embedding` | a vector compared by direction (speaker, sentence, face embeddings) | cosine |
| `regression` | anything else: values, boxes, feature maps | cosine, SQNR, absolute error |

Top-1 agreement is never computed for an embedding or a probability output: the arg-max of an
embedding or of frame-wise probabilities means nothing, so it must not fail a run.

`RULES` is the single table of gate rules (figure, direction, which `Tolerances` field gives the
threshold, which kinds it applies to). `check` judges `Figures` against tolerances with it, `meets`
answers yes/no for a search goal, and `rule_passes` is the one comparison (with its epsilon).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, Sequence, get_args

import numpy as np

from exporter.errors import PlanError

OutputKind = Literal["logits", "probabilities", "probability", "embedding", "regression"]
OUTPUT_KINDS: tuple[str, ...] = get_args(OutputKind)
Direction = Literal[">=", "<="]

CLASSIFIER_KINDS = frozenset({"logits", "probabilities"})
LABELLED_KINDS = frozenset({"logits", "probabilities", "probability"})

_SUM_TOLERANCE = 1e-3
"""Softmax rows sum to 1 within this; L2-normalised rows have norm 1 within this (relative)."""
_MIN_EMBEDDING_DIM = 8
"""A unit-norm row shorter than this is not called an embedding (2-D directions, unit quaternions)."""
_LABEL_ACCURACY_FLOOR = 0.5
"""Labels prove an output is a classifier when its arg-max matches them at least this often (and 3x chance)."""
_GAP_RATIO = 1.5
_MIN_SPREAD = 0.05
"""Unlabelled 2-D scores count as logits when each row's top value stands clear of the runner-up as in
a classifier (the median gap between the two largest values, in units of the row's standard
deviation, is at least `_GAP_RATIO` times that of Gaussian rows of the same width) and the arg-max
falls on more than one column and on at least `_MIN_SPREAD` of min(samples, columns) (an embedding
with one dominant dimension has a large gap but always the same arg-max). Measured: digits CNN
logits 3.4x (10 of 10 columns), EfficientNet-Lite0 ImageNet logits on photo crops 2.3x (58 of
1000), MiniLM mean-pooled sentence embedding 1.03x, its CLS vector 57x but always one column."""
EPSILON = 1e-12
"""Slack for `<=` rules: a measured figure equal to its threshold up to float rounding passes."""


# --- kinds ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KindDecision:
    """The kind of one model output and why: detected from the reference outputs, or set by the user."""

    name: str
    kind: OutputKind
    reason: str
    overridden: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for report.json."""
        return dataclasses.asdict(self)


def detect_kind(
    reference: np.ndarray, labels: np.ndarray | None = None, input_shapes: dict[str, tuple[int, ...]] | None = None
) -> tuple[OutputKind, str]:
    """Decide what one output is from the reference model's values on held-out data (batch axis first).

    The rules, in order: integer or 0-d outputs and 4-D+ tensors are regression (feature maps);
    rows on the last axis that are non-negative and sum to 1 are softmax `probabilities`; rows whose
    exponentials sum to 1 are log-softmax `logits`; rows of unit L2 norm (8+ values) are an
    `embedding`; outputs of rank <= 3 with every value in [0, 1] are a sigmoid `probability`; one
    value per sample is regression. What remains is a 2-D/3-D score vector, logits or embedding:
    labels that the arg-max matches (>= 50 % and 3x chance) make it `logits`; an output with the
    shape of one of the model's inputs (`input_shapes`, batch axis first) is regression (a recurrent
    state fed back, or an image-to-image output); otherwise,
    rows whose top value stands clear of the runner-up as in a classifier, with the arg-max spread
    over several columns, are `logits` (see `_GAP_RATIO`), and anything else is an `embedding`
    (judged by cosine, which also holds a misjudged classifier to a strict bar).
    """
    array = np.asarray(reference)
    shape = tuple(array.shape)
    if array.ndim == 0 or not np.issubdtype(array.dtype, np.floating):
        return "regression", f"a {array.dtype} tensor of shape {shape}"
    if array.ndim >= 4:
        return "regression", f"a feature map of shape {shape}"
    x = array.astype(np.float64)
    if not np.all(np.isfinite(x)):
        return "regression", "the reference output holds NaN or Inf"
    width = shape[-1] if array.ndim >= 2 else 1
    rows = x.reshape(-1, width)
    if width > 1 and rows.min() >= 0.0 and np.allclose(rows.sum(axis=1), 1.0, atol=_SUM_TOLERANCE):
        return "probabilities", f"every row of {width} values is non-negative and sums to 1 (softmax)"
    if width > 1 and rows.max() <= 0.0 and np.allclose(np.exp(rows).sum(axis=1), 1.0, atol=_SUM_TOLERANCE):
        return "logits", f"every row of {width} values is a log-softmax (exponentials sum to 1)"
    if width >= _MIN_EMBEDDING_DIM:
        norms = np.linalg.norm(rows, axis=1)
        if np.allclose(norms, 1.0, rtol=_SUM_TOLERANCE, atol=0.0):
            return "embedding", f"every row of {width} values has unit L2 norm"
    if array.ndim <= 3 and rows.min() >= 0.0 and rows.max() <= 1.0:
        return "probability", f"every value lies in [0, 1] and rows do not sum to 1 (sigmoid), shape {shape}"
    if width == 1:
        return "regression", f"one unbounded value per {'sample' if array.ndim <= 2 else 'position'}, shape {shape}"
    accuracy = _label_accuracy(rows if array.ndim == 2 else None, labels)
    if accuracy is not None and accuracy >= max(_LABEL_ACCURACY_FLOOR, 3.0 / width):
        return "logits", f"the arg-max of its {width} columns matches the labels on {accuracy:.0%} of samples"
    for name, shape_in in (input_shapes or {}).items():
        if tuple(shape_in[1:]) == shape[1:]:
            return "regression", f"it has the shape of input {name!r} {shape[1:]} (a state fed back, or an input-shaped result)"
    ratio, columns = _gap_ratio(rows), np.unique(rows.argmax(axis=1))
    distinct = len(columns)
    label_note = f"; labels match its arg-max on only {accuracy:.0%}" if accuracy is not None else ""
    if ratio >= _GAP_RATIO and distinct >= max(2, _MIN_SPREAD * min(len(rows), width)):
        return "logits", (
            f"each row's top value stands clear of the rest as in a classifier (top-2 gap {ratio:.1f}x a random "
            f"row's) and the arg-max falls on {distinct} of {width} columns{label_note}"
        )
    return "embedding", (
        f"{width} unnormalised values without a classifier's clear winners (top-2 gap {ratio:.1f}x a random row's, "
        f"arg-max on {distinct} of {width} columns){label_note}; judged by cosine (pass --output-kind logits "
        "if it is a classifier)"
    )


def _label_accuracy(rows: np.ndarray | None, labels: np.ndarray | None) -> float | None:
    if rows is None or labels is None:
        return None
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(rows) or not np.issubdtype(labels.dtype, np.integer):
        return None
    return float(np.mean(rows.argmax(axis=1) == labels))


def _gap_ratio(rows: np.ndarray) -> float:
    """Median (largest - second largest) / row std, over the same for seeded Gaussian rows of the same width."""
    def median_gap(values: np.ndarray) -> float:
        ordered = np.sort(values, axis=1)
        std = values.std(axis=1)
        return float(np.median((ordered[:, -1] - ordered[:, -2]) / np.where(std > 0, std, np.inf)))

    null = median_gap(np.random.default_rng(0).standard_normal((512, rows.shape[1])))
    return median_gap(rows) / null if null > 0 else 0.0


def parse_output_kinds(values: Sequence[str] | str | None) -> tuple[tuple[str, str], ...]:
    """Parse `--output-kind` values: `KIND` (every output) or `NAME=KIND`; returns ((name or "", kind), ...).

    Raises `PlanError` with one line for an unknown kind or an output named twice.
    """
    if values is None:
        return ()
    items = [values] if isinstance(values, str) else list(values)
    parsed: dict[str, str] = {}
    for item in items:
        text = str(item).strip()
        name, sep, kind = text.rpartition("=")
        name, kind = name.strip(), kind.strip().lower()
        if kind not in OUTPUT_KINDS or (sep and not name):
            raise PlanError(
                f"bad --output-kind {text!r}: expected KIND or OUTPUT=KIND with KIND one of {', '.join(OUTPUT_KINDS)} "
                "(e.g. --output-kind embedding or --output-kind output_1=logits)"
            )
        if name in parsed:
            raise PlanError(f"--output-kind sets {name or 'every output'!r} twice")
        parsed[name] = kind
    return tuple(parsed.items())


def decide_kinds(
    names: Sequence[str],
    outputs: Sequence[np.ndarray],
    labels: np.ndarray | None,
    overrides: Sequence[tuple[str, str]] = (),
    input_shapes: dict[str, tuple[int, ...]] | None = None,
) -> tuple[KindDecision, ...]:
    """The kind of every output: the user's `overrides` first (by name, or "" for all), else `detect_kind`.

    Labels are offered to every output's detection (an embedding's arg-max does not match them).
    Raises `PlanError` when an override names an output the model does not have.
    """
    table = dict(overrides)
    unknown = sorted(set(table) - set(names) - {""})
    if unknown:
        raise PlanError(
            f"--output-kind names output {unknown[0]!r} but the model's outputs are {', '.join(names)}"
        )
    decisions = []
    for name, values in zip(names, outputs):
        if name in table or "" in table:
            kind = table.get(name, table.get(""))
            decisions.append(KindDecision(name, kind, f"set by --output-kind {kind}", overridden=True))
            continue
        kind, reason = detect_kind(values, labels, input_shapes)
        decisions.append(KindDecision(name, kind, reason))
    return tuple(decisions)


# --- figures -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputFigures:
    """How closely one output of a candidate matches the reference, over every held-out sample.

    `top1_agreement` exists for classifier kinds only, `decision_agreement` for `probability`
    outputs only (share of values on the same side of `decision_threshold`); accuracies exist when
    labels do and this output is the labelled one. `None` means "does not apply".
    """

    name: str
    kind: OutputKind
    samples: int
    max_abs_error: float
    mean_abs_error: float
    cosine: float
    sqnr_db: float
    top1_agreement: float | None = None
    decision_agreement: float | None = None
    reference_accuracy: float | None = None
    candidate_accuracy: float | None = None

    @property
    def accuracy_drop(self) -> float | None:
        """Reference accuracy minus candidate accuracy (a fraction), when both are known."""
        if self.reference_accuracy is None or self.candidate_accuracy is None:
            return None
        return self.reference_accuracy - self.candidate_accuracy

    def value(self, figure: str) -> float | None:
        """The value of a figure by name (`accuracy_drop` included)."""
        return getattr(self, figure)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for report.json (with `accuracy_drop`)."""
        return {**dataclasses.asdict(self), "accuracy_drop": self.accuracy_drop}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OutputFigures":
        """Inverse of `to_dict` (infinite SQNR may arrive as the text "inf")."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        for key in ("sqnr_db", "max_abs_error", "mean_abs_error", "cosine"):
            if isinstance(values.get(key), str):
                values[key] = float(values[key])
        return cls(**values)


@dataclass(frozen=True)
class Figures:
    """Figures of a candidate against the reference: one `OutputFigures` per model output, in order.

    The aggregate (`value(figure)`, and the flat keys of `to_dict`) is the worst output for each
    figure: the lowest agreement, cosine and SQNR, the highest error and accuracy drop.
    """

    outputs: tuple[OutputFigures, ...]

    @property
    def samples(self) -> int:
        """Held-out samples compared."""
        return self.outputs[0].samples if self.outputs else 0

    def output(self, name: str) -> OutputFigures:
        """The figures of the output called `name`."""
        for out in self.outputs:
            if out.name == name:
                return out
        raise KeyError(f"no output named {name!r}; outputs are {', '.join(o.name for o in self.outputs)}")

    def value(self, figure: str) -> float | None:
        """The aggregate of `figure` over the outputs where it applies (worst one), or None."""
        values = [v for v in (out.value(figure) for out in self.outputs) if v is not None]
        if not values:
            return None
        if figure in ("reference_accuracy", "candidate_accuracy"):
            return values[0]
        return max(values) if WORSE_IS_HIGHER.get(figure, False) else min(values)

    def to_dict(self) -> dict[str, Any]:
        """Plain data: the aggregate figures as flat keys, plus `outputs` (one dict per output)."""
        flat: dict[str, Any] = {"samples": self.samples}
        for figure in AGGREGATE_FIGURES:
            flat[figure] = self.value(figure)
        flat["outputs"] = [out.to_dict() for out in self.outputs]
        return flat

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Figures":
        """Inverse of `to_dict`."""
        return cls(tuple(OutputFigures.from_dict(o) for o in data.get("outputs", [])))


AGGREGATE_FIGURES = (
    "top1_agreement", "decision_agreement", "cosine", "sqnr_db", "max_abs_error", "mean_abs_error",
    "reference_accuracy", "candidate_accuracy", "accuracy_drop",
)


def compare_output(
    name: str,
    kind: OutputKind,
    reference: np.ndarray,
    candidate: np.ndarray,
    labels: np.ndarray | None = None,
    decision_threshold: float = 0.5,
) -> OutputFigures:
    """Figures of one output: `reference` and `candidate` hold every held-out sample (batch axis first).

    Cosine is the mean over samples of the cosine between flattened rows; SQNR is over the whole
    tensor; top-1 agreement is the arg-max over the last axis at every position; decision agreement
    the share of values on the same side of `decision_threshold`; accuracies use `labels` (one per
    sample) against the arg-max (classifiers) or the decision (a single probability per sample).
    """
    from exporter.metrics import cosine_similarity, sqnr_db

    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise ValueError(f"output {name!r}: candidate shape {cand.shape} differs from the reference's {ref.shape}")
    diff = np.abs(ref - cand)
    top1 = decision = ref_acc = cand_acc = None
    if kind in CLASSIFIER_KINDS and ref.ndim >= 2 and ref.shape[-1] > 1:
        ref_top, cand_top = ref.argmax(axis=-1), cand.argmax(axis=-1)
        top1 = float(np.mean(ref_top == cand_top))
        if labels is not None and ref.ndim == 2 and len(labels) == len(ref):
            ref_acc, cand_acc = float(np.mean(ref_top == labels)), float(np.mean(cand_top == labels))
    if kind == "probability":
        ref_on, cand_on = ref >= decision_threshold, cand >= decision_threshold
        decision = float(np.mean(ref_on == cand_on))
        if labels is not None and ref.size == len(labels) == len(ref):
            flat_labels = np.asarray(labels).reshape(-1)
            ref_acc = float(np.mean(ref_on.reshape(-1) == (flat_labels > 0)))
            cand_acc = float(np.mean(cand_on.reshape(-1) == (flat_labels > 0)))
    return OutputFigures(
        name=name,
        kind=kind,
        samples=int(len(ref)) if ref.ndim else 1,
        max_abs_error=float(diff.max()) if diff.size else 0.0,
        mean_abs_error=float(diff.mean()) if diff.size else 0.0,
        cosine=cosine_similarity(*_cosine_rows(ref, cand)),
        sqnr_db=sqnr_db(ref, cand),
        top1_agreement=top1,
        decision_agreement=decision,
        reference_accuracy=ref_acc,
        candidate_accuracy=cand_acc,
    )


def _cosine_rows(ref: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows for the cosine: one per sample, or the whole tensor as one row when a sample is a single value
    (the cosine of two scalars is only their sign agreement)."""
    if ref.ndim == 0 or ref.size == len(ref):
        return ref.reshape(1, -1), cand.reshape(1, -1)
    return ref.reshape(len(ref), -1), cand.reshape(len(cand), -1)


# --- the rule table and the gate -----------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One gate rule: `figure` must be `direction` the threshold from the first set `tolerance` field.

    `tolerance` lists `Tolerances` fields in order of preference (e.g. an embedding's cosine uses
    `min_embedding_cosine`, else `min_cosine`); the rule applies to outputs of the given `kinds`.
    """

    figure: str
    direction: Direction
    tolerance: tuple[str, ...]
    kinds: frozenset[str]

    def threshold(self, tolerances: Any) -> tuple[str, float] | None:
        """(field, threshold) from the first field of `tolerances` that is set, or None (not gated)."""
        for name in self.tolerance:
            value = getattr(tolerances, name, None)
            if value is not None:
                return name, float(value)
        return None


_ALL = frozenset(OUTPUT_KINDS)
RULES: tuple[Rule, ...] = (
    Rule("top1_agreement", ">=", ("min_top1_agreement",), CLASSIFIER_KINDS),
    Rule("decision_agreement", ">=", ("min_decision_agreement",), frozenset({"probability"})),
    Rule("cosine", ">=", ("min_cosine",), frozenset({"logits", "regression"})),
    Rule("cosine", ">=", ("min_embedding_cosine", "min_cosine"), frozenset({"embedding"})),
    Rule("sqnr_db", ">=", ("min_sqnr_db",), frozenset({"logits", "regression"})),
    Rule("max_abs_error", "<=", ("max_abs_error",), _ALL),
    Rule("mean_abs_error", "<=", ("max_probability_mean_abs_error",), frozenset({"probabilities", "probability"})),
    Rule("accuracy_drop", "<=", ("max_accuracy_drop",), LABELLED_KINDS),
)
"""The gate: every rule that applies to an output's kind and has a threshold set is checked."""

WORSE_IS_HIGHER: dict[str, bool] = {
    **{rule.figure: rule.direction == "<=" for rule in RULES},
    "mean_abs_error": True,
}
"""For the aggregate over outputs: is a higher value worse? (from the rule table)."""


def rule_passes(measured: float, threshold: float, direction: str) -> bool:
    """The one comparison of the gate: `measured >= threshold`, or `measured <= threshold` up to `EPSILON`."""
    if direction == ">=":
        return measured >= threshold
    if direction == "<=":
        return measured <= threshold + EPSILON
    raise ValueError(f"unknown rule direction {direction!r}")


@dataclass(frozen=True)
class GateCheck:
    """One thresholded figure of one output: `measured` compared with `threshold` by `rule` (">=" or "<=").

    `output` names the output on multi-output models (empty for a single output); `tolerance` is the
    `Tolerances` field the threshold came from; `kind` is the output's kind.
    """

    figure: str
    measured: float
    threshold: float
    rule: str
    passed: bool
    output: str = ""
    tolerance: str = ""
    kind: str = ""

    def describe(self) -> str:
        """e.g. `top1_agreement 0.912 >= 0.95: FAIL`, or `output_1: cosine 0.5 >= 0.99: FAIL`."""
        where = f"{self.output}: " if self.output else ""
        verdict = "pass" if self.passed else "FAIL"
        return f"{where}{self.figure} {_fmt(self.measured)} {self.rule} {_fmt(self.threshold)}: {verdict}"

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for report.json."""
        return dataclasses.asdict(self)


def check(figures: Figures, tolerances: Any) -> list[GateCheck]:
    """Judge every output of `figures` with every rule of `RULES` that applies to its kind and is set.

    `tolerances` is a `targets.profile.Tolerances` (or anything with its field names). A figure that
    does not apply (None) or a threshold that is not set is skipped, never failed.
    """
    named = len(figures.outputs) > 1
    checks = []
    for out in figures.outputs:
        for rule in RULES:
            if out.kind not in rule.kinds:
                continue
            source = rule.threshold(tolerances)
            measured = out.value(rule.figure)
            if source is None or measured is None:
                continue
            tolerance, threshold = source
            checks.append(GateCheck(
                figure=rule.figure,
                measured=float(measured),
                threshold=threshold,
                rule=rule.direction,
                passed=rule_passes(float(measured), threshold, rule.direction),
                output=out.name if named else "",
                tolerance=tolerance,
                kind=out.kind,
            ))
    return checks


def meets(figures: Figures, goal: Any) -> bool:
    """Does every output meet every rule of `goal` (a `Tolerances`)? The search's yes/no question."""
    return all(c.passed for c in check(figures, goal))


def failed(checks: Sequence[GateCheck]) -> list[str]:
    """One description per failed check, in order (for the error line and the report)."""
    return [c.describe() for c in checks if not c.passed]


def _fmt(value: float) -> str:
    if isinstance(value, float) and math.isinf(value):
        return str(value)
    return f"{value:.4g}"


__all__ = [
    "OUTPUT_KINDS", "RULES", "Figures", "GateCheck", "KindDecision", "OutputFigures", "OutputKind", "Rule",
    "check", "compare_output", "decide_kinds", "detect_kind", "failed", "meets", "parse_output_kinds", "rule_passes",
]
