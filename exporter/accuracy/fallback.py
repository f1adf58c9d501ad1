"""Automatic fallback to float: re-quantize with the most sensitive layers kept in float until the goal is met.

The search, in order, each step a *trial* (one re-quantization, evaluated by the caller's `evaluate`
and gated with the target's tolerances overridden by the budget's goals):

1. other calibration methods (Entropy, Percentile, MinMax) on the whole model, then a per-tensor
   mix that takes for each activation the range with the lowest quantization error on the
   calibration data; it stops as soon as one passes. The best becomes the base of step 2.
2. layers kept in float (onnxruntime's `nodes_to_exclude`), following the sensitivity ranking of
   `exporter.accuracy.sensitivity` on the base model. Known troublemakers rank ahead of equally
   bad layers: around attention and normalization in transformer encoders (Softmax,
   LayerNormalization, activation x activation MatMul, the residual Add before a normalization),
   the first and last layers of small convolutional nets. `greedy` adds one layer at a time and
   keeps it only if the figures improve; `bisect` finds the shortest passing prefix of the ranking.
3. when a passing set holds several layers, each is tried back in int8 (least sensitive first).

Bounded by `budget.max_trials` and `budget.max_minutes` (a trial is not started when the slowest
one so far would overrun). The outcome is always the best model found: among passing trials the
fastest (latency measured at batch 1, one thread; within 3 % counts as a tie, then fewer float
layers win), else the one closest to passing, and the notes say which and why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx

from exporter.accuracy.budget import AccuracyBudget
from exporter.accuracy.modules import node_module_map
from exporter.accuracy.sensitivity import DB_LIMIT, TRANSPARENT_OPS, layer_sensitivity, node_ranking
from exporter.inputs import InputSpec
from targets.profile import QuantScheme, Tolerances

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
PER_TENSOR = "per_tensor"
PRIOR_BONUS_DB = 6.0
"""Known troublemakers rank as if their isolated SQNR were this much lower."""
INPUT_DOMINANCE_DB = 6.0
"""A layer whose input quantization is this much worse than its weights and output takes its input's producer along."""
SMALL_CNN_LAYERS = 30
LATENCY_TIE = 0.03
MIX_SAMPLES = 64
SENSITIVITY_BATCHES = 2


@dataclass
class FallbackRequest:
    """What the search needs; the caller has already made and evaluated the plain quantized model.

    `evaluate(path)` returns a validation summary (`exporter.validate.compare_onnx` keys);
    `make_reader()` a fresh calibration reader; `tolerances` are the target's.
    """

    float_path: Path
    scheme: QuantScheme
    input_specs: Sequence[InputSpec]
    make_reader: Callable[[], Any]
    evaluate: Callable[[Path], dict]
    tolerances: Tolerances
    budget: AccuracyBudget
    work_dir: Path
    baseline_path: Path
    baseline_summary: dict
    latency_repeats: int = 20


@dataclass
class FallbackOutcome:
    """The best model found and everything the report says about the search.

    `nodes_in_float`: one dict per layer kept in float (node, module, op_type, why, error figures,
    size and latency cost). `trials`: every trial, the plain model first (trial 0). `cost`: size and
    latency of the best model against the plain quantized one.
    """

    best_path: Path
    met: bool
    nodes_in_float: list[dict]
    trials: list[dict]
    best_summary: dict
    notes: list[str]
    seconds: float
    sensitivity: list[dict]
    best_trial: int = 0
    calibration_method: str = ""
    goal: str = ""
    tolerances: dict = field(default_factory=dict)
    gate: list[dict] = field(default_factory=list)
    cost: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for report.json (paths as text)."""
        data = dataclasses.asdict(self)
        data["best_path"] = str(self.best_path)
        return data


def search_fallback(request: FallbackRequest) -> FallbackOutcome:
    """Run the search described in the module docstring and return the best model found."""
    return _Search(request).run()


# --- gate figures ------------------------------------------------------------------------------


def gate_deficit(checks: Sequence[Any]) -> float:
    """How far a candidate is from passing: 0 when every check passes, else a sum of scaled gaps.

    Each failed check adds its gap in units of the slack the threshold allows: agreement and cosine
    per (1 - threshold), SQNR per 10 dB, accuracy drop per max(threshold, 0.5 pt), max abs error per
    decade.
    """
    total = 0.0
    for check in checks:
        if check.passed:
            continue
        gap = abs(check.measured - check.threshold)
        if check.figure in ("top1_agreement", "cosine"):
            total += gap / max(1.0 - check.threshold, 1e-3)
        elif check.figure == "sqnr_db":
            total += gap / 10.0
        elif check.figure == "accuracy_drop":
            total += gap / max(check.threshold, 0.005)
        elif check.figure == "max_abs_error":
            total += math.log10(max(check.measured, 1e-30) / max(check.threshold, 1e-30))
        else:
            total += gap
    return round(total, 6)


def troublemakers(model: onnx.ModelProto) -> dict[str, str]:
    """Nodes known to suffer from int8 without measuring, with the reason (see the module docstring)."""
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    ops = {node.op_type for node in graph.node}
    found: dict[str, str] = {}
    if ops & {"Softmax", "LayerNormalization", "SimplifiedLayerNormalization"}:
        for node in graph.node:
            if node.op_type == "Softmax":
                found[node.name] = "softmax of attention: int8 flattens small probabilities"
            elif node.op_type in ("LayerNormalization", "SimplifiedLayerNormalization"):
                found[node.name] = "layer normalization: per-tensor int8 of outlier features"
            elif node.op_type == "MatMul" and not any(i in initializers for i in node.input):
                found[node.name] = "attention product (activation x activation MatMul)"
            elif node.op_type == "Add" and any(
                c.op_type in ("LayerNormalization", "SimplifiedLayerNormalization") for c in consumers.get(node.output[0], [])
            ):
                found[node.name] = "residual Add feeding a normalization (outlier features)"
    weighted = [
        node
        for node in graph.node
        if node.op_type in ("Conv", "Gemm", "MatMul", "ConvTranspose") and any(i in initializers for i in node.input[1:])
    ]
    if "Conv" in ops and not found and 0 < len(weighted) <= SMALL_CNN_LAYERS:
        found.setdefault(weighted[0].name, "first layer of a small convolutional net")
        found.setdefault(weighted[-1].name, "last layer of a small convolutional net")
    return found


# --- the search --------------------------------------------------------------------------------


class _Search:
    def __init__(self, request: FallbackRequest) -> None:
        self.request = request
        self.budget = request.budget
        self.tolerances = request.budget.tolerances(request.tolerances)
        self.work_dir = Path(request.work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.start = time.perf_counter()
        self.deadline = self.start + self.budget.max_minutes * 60.0
        self.trials: list[dict] = []
        self.notes: list[str] = []
        self.sensitivity: list[dict] = []
        self.ranking: list[dict] = []
        self.requantizer = _Requantizer(request, self.work_dir)
        self.stop_reason = ""

    # -- driver

    def run(self) -> FallbackOutcome:
        self.latency_feed = self._latency_feed()
        base = self._record(0, "plain", self.request.scheme.calibration_method, [], self.request.baseline_path,
                            self.request.baseline_summary, seconds=0.0)
        if base["passed"]:
            self.notes.append("the plain quantized model already meets the goal; nothing to search")
            return self._outcome()
        self.notes.append(f"plain int8 ({base['calibration']}) misses the goal: {'; '.join(base['failed_checks'])}")
        base = self._calibration_phase(base)
        if not self._passing() and self._budget_left():
            self._fallback_phase(base)
        return self._outcome()

    def _calibration_phase(self, base: dict) -> dict:
        if not self.budget.try_calibration_methods:
            return base
        if not self.requantizer.static:
            self.notes.append(f"calibration methods not tried: quantization mode {self.request.scheme.mode!r} does not calibrate")
            return base
        own = self.request.scheme.calibration_method
        methods = [m for m in ("entropy", "percentile", "minmax") if m != own] + [PER_TENSOR]
        best = base
        for method in methods:
            if not self._budget_left():
                break
            trial = self._trial(f"calibration {method}", method, [])
            if trial["passed"]:
                self.notes.append(f"calibration {method} alone meets the goal")
                return trial
            if self._better(trial, best):
                best = trial
        if best is not base:
            self.notes.append(f"best calibration without float layers: {best['calibration']} (trial {best['trial']})")
        return best

    def _fallback_phase(self, base: dict) -> None:
        method = base["calibration"]
        analysed = self._analyse(base)
        units = self._units()
        if not units:
            self.notes.append("no quantized layer can be kept in float: the search stops")
            return
        if self.budget.strategy == "bisect":
            passing = self._bisect(units, method, base)
        else:
            passing = self._greedy(units, method, base)
        if passing and len(passing["units"]) > 1:
            self._prune(passing, method)
        if not analysed:
            self.notes.append("layers were ranked by known troublemakers only (sensitivity analysis failed)")

    def _greedy(self, units: list[dict], method: str, base: dict) -> dict | None:
        kept: list[dict] = []
        current = base
        for unit in units:
            if not self._budget_left():
                break
            trial = self._trial(f"float {self._unit_label(unit)}", method, [*kept, unit], added=unit, previous=current)
            if trial["passed"]:
                return trial
            if self._better(trial, current):
                kept.append(unit)
                current = trial
            else:
                trial["note"] = "no improvement: layer put back in int8"
        return None

    def _bisect(self, units: list[dict], method: str, base: dict) -> dict | None:
        if not self._budget_left():
            return None
        everything = self._trial(f"float top {len(units)} layers", method, units)
        if not everything["passed"]:
            self.notes.append(f"even {len(units)} layers in float miss the goal")
            return None
        low, high, best = 0, len(units), everything
        while high - low > 1 and self._budget_left():
            middle = (low + high) // 2
            trial = self._trial(f"float top {middle} layers", method, units[:middle])
            if trial["passed"]:
                high, best = middle, trial
            else:
                low = middle
        return best

    def _prune(self, passing: dict, method: str) -> None:
        """Try each layer of a passing set back in int8, least sensitive first; keep what still passes."""
        current = passing
        for unit in reversed(list(passing["units"])):
            if not self._budget_left() or len(current["units"]) <= 1:
                break
            rest = [u for u in current["units"] if u["key"] != unit["key"]]
            trial = self._trial(f"back to int8: {self._unit_label(unit)}", method, rest)
            if trial["passed"]:
                current = trial

    # -- analysis

    def _analyse(self, base: dict) -> bool:
        """Sensitivity rows on the base model; False when only known troublemakers can rank."""
        started = time.perf_counter()
        try:
            analysis_path = self.requantizer.analysis_model(base, self.work_dir / "sensitivity_base.onnx")
            feeds = self._sensitivity_feeds()
            self.sensitivity = layer_sensitivity(
                self.requantizer.prepared, analysis_path, feeds, self.work_dir / "sensitivity", preprocessed=True
            )
            ok = True
        except Exception as exc:  # analysis is an aid: the trials still decide
            self.notes.append(f"sensitivity analysis failed ({type(exc).__name__}: {str(exc)[:160]})")
            self.sensitivity = []
            ok = False
        self.notes.append(f"sensitivity analysis: {len(self.sensitivity)} rows in {time.perf_counter() - started:.1f} s")
        return ok

    def _units(self) -> list[dict]:
        """Candidate units to keep in float, ranked: measured isolated SQNR, troublemakers boosted."""
        model = onnx.load(str(self.requantizer.prepared), load_external_data=False)
        priors = troublemakers(model)
        modules = node_module_map(model)
        ops = {node.name: node.op_type for node in model.graph.node}
        ranked = node_ranking(self.sensitivity)
        seen = {row["node"] for row in ranked}
        rows = list(ranked)
        for name, reason in priors.items():  # troublemakers the analysis could not measure
            if name not in seen and name in ops and ops[name] not in TRANSPARENT_OPS:
                rows.append({"node": name, "op_type": ops[name], "module": modules.get(name, ""), "worst_sqnr_db": DB_LIMIT})
        units = []
        for row in rows:
            name = row["node"]
            score = row["worst_sqnr_db"] - (PRIOR_BONUS_DB if name in priors else 0.0)
            nodes = [name, *self._input_producers(model, row)]
            units.append(
                {
                    "key": name,
                    "nodes": nodes,
                    "score": round(score, 3),
                    "why": self._why(row, priors.get(name), nodes),
                    "row": row,
                }
            )
        units.sort(key=lambda u: u["score"])
        self.ranking = units
        return units

    def _input_producers(self, model: onnx.ModelProto, row: dict) -> list[str]:
        """The upstream layer(s) whose output quantization dominates this layer's error, if it does."""
        inputs = row.get("input_sqnr_db")
        others = [v for v in (row.get("weight_sqnr_db"), row.get("output_sqnr_db")) if v is not None]
        if inputs is None or not others or inputs + INPUT_DOMINANCE_DB > min(others):
            return []
        producer = {out: node for node in model.graph.node for out in node.output}
        initializers = {init.name for init in model.graph.initializer}
        node = next((n for n in model.graph.node if n.name == row["node"]), None)
        found: list[str] = []
        for name in (node.input if node is not None else []):
            current = producer.get(name) if name not in initializers else None
            while current is not None:
                found.append(current.name)
                if current.op_type not in TRANSPARENT_OPS or not current.input:
                    break
                current = producer.get(current.input[0])
        return found

    @staticmethod
    def _why(row: dict, prior: str | None, nodes: list[str]) -> str:
        parts = []
        if prior:
            parts.append(f"known troublemaker: {prior}")
        sqnr = row.get("worst_sqnr_db")
        if sqnr is not None and sqnr < DB_LIMIT:
            figures = []
            for label, key in (("weights", "weight_sqnr_db"), ("inputs", "input_sqnr_db"), ("output", "output_sqnr_db")):
                if row.get(key) is not None:
                    figures.append(f"{label} {row[key]:.1f}")
            parts.append(f"isolated SQNR {sqnr:.1f} dB" + (f" ({', '.join(figures)})" if figures else ""))
        if len(nodes) > 1:
            parts.append(f"its input quantization dominates, so its producer {', '.join(nodes[1:])} goes too")
        return "; ".join(parts) or "ranked by the search"

    # -- trials

    def _trial(self, label: str, method: str, units: list[dict], added: dict | None = None, previous: dict | None = None) -> dict:
        number = len(self.trials)
        excluded = list(dict.fromkeys(n for unit in units for n in unit["nodes"]))
        path = self.work_dir / f"trial_{number:02d}.onnx"
        started = time.perf_counter()
        try:
            self.requantizer.quantize(method, excluded, path, number)
            summary = self.request.evaluate(path)
        except Exception as exc:  # a failed trial is recorded and the search goes on
            trial = self._record(number, label, method, excluded, path, None, time.perf_counter() - started)
            trial["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            return trial
        trial = self._record(number, label, method, excluded, path, summary, time.perf_counter() - started)
        trial["units"] = units
        if added is not None and previous is not None and trial["latency_ms"] is not None and previous["latency_ms"]:
            trial["added"] = added["key"]
            trial["latency_delta_ms"] = round(trial["latency_ms"] - previous["latency_ms"], 4)
        return trial

    def _record(self, number, label, method, excluded, path, summary, seconds) -> dict:
        from exporter.validate import check_gate

        checks = check_gate(summary, self.tolerances) if summary is not None else []
        passed = summary is not None and all(c.passed for c in checks)
        latency = None
        if summary is not None and self.latency_feed is not None:
            from exporter.runtime import onnx_latency_ms

            try:
                latency = round(onnx_latency_ms(path, self.latency_feed, threads=1, repeats=self.request.latency_repeats), 4)
            except Exception:  # timing is informative; a model that runs for validation but not here is odd
                latency = None
        trial = {
            "trial": number,
            "label": label,
            "calibration": method,
            "excluded": list(excluded),
            "excluded_modules": [self.requantizer.module_of(n) for n in excluded],
            "summary": summary,
            "passed": bool(passed),
            "failed_checks": [c.describe() for c in checks if not c.passed],
            "deficit": gate_deficit(checks) if summary is not None else float(DB_LIMIT),
            "latency_ms": latency,
            "size_bytes": Path(path).stat().st_size if Path(path).exists() else None,
            "seconds": round(seconds, 3),
            "path": str(path),
            "units": [],
        }
        self.trials.append(trial)
        return trial

    def _better(self, a: dict, b: dict) -> bool:
        """Is trial `a` closer to passing than `b` (deficit, then SQNR)?"""
        key_a = (a["deficit"], -_sqnr(a))
        key_b = (b["deficit"], -_sqnr(b))
        return key_a < key_b

    def _passing(self) -> list[dict]:
        return [t for t in self.trials if t["passed"]]

    def _budget_left(self) -> bool:
        used = len(self.trials) - 1
        if used >= self.budget.max_trials:
            self.stop_reason = f"trial limit reached ({self.budget.max_trials})"
            return False
        durations = [t["seconds"] for t in self.trials[1:]]
        expected = max(durations) if durations else 0.0
        if time.perf_counter() + expected > self.deadline:
            self.stop_reason = f"time limit reached ({self.budget.max_minutes:g} min)"
            return False
        return True

    # -- inputs for analysis and timing

    def _latency_feed(self) -> dict[str, np.ndarray] | None:
        try:
            reader = self.request.make_reader()
            batch = reader.get_next()
        except Exception:
            batch = None
        if not batch:
            self.notes.append("no calibration batch to time with: latency not measured")
            return None
        return {name: np.ascontiguousarray(value[:1]) for name, value in batch.items()}

    def _sensitivity_feeds(self) -> list[dict[str, np.ndarray]]:
        reader = self.request.make_reader()
        feeds = []
        while len(feeds) < SENSITIVITY_BATCHES:
            batch = reader.get_next()
            if batch is None:
                break
            feeds.append(batch)
        return feeds

    # -- result

    def _outcome(self) -> FallbackOutcome:
        passing = self._passing()
        if passing:
            timed = [t for t in passing if t["latency_ms"] is not None]
            if timed:
                fastest = min(t["latency_ms"] for t in timed)
                ties = [t for t in timed if t["latency_ms"] <= fastest * (1 + LATENCY_TIE)]
            else:
                ties = passing
            best = min(ties, key=lambda t: (len(t["excluded"]), -_sqnr(t), t["trial"]))
        else:
            best = min(self.trials, key=lambda t: (t["deficit"], -_sqnr(t), t["trial"]))
        base = self.trials[0]
        met = bool(best["passed"])
        tried = len(self.trials) - 1
        if met:
            if best["trial"]:
                self.notes.append(
                    f"goal met by trial {best['trial']} ({best['label']}) with {len(best['excluded'])} layer(s) in float"
                    + (f"; fastest of {len(passing)} passing candidates" if len(passing) > 1 else "")
                )
        else:
            why = self.stop_reason or "no more candidates"
            self.notes.append(
                f"goal NOT met after {tried} trial(s) ({why}); returning the closest candidate: trial {best['trial']} "
                f"({best['label']}), still failing {'; '.join(best['failed_checks']) or 'the gate'}"
            )
        final = self.work_dir / "fallback_best.onnx"
        if best["trial"] and Path(best["path"]).exists():
            shutil.copyfile(best["path"], final)
            best_path = final
        else:
            best_path = Path(best["path"])
        self._cleanup(keep={best["path"], str(self.request.baseline_path)})
        from exporter.validate import check_gate

        gate = [c.to_dict() for c in check_gate(best["summary"], self.tolerances)] if best["summary"] else []
        cost = {
            "size_bytes": _delta(best["size_bytes"], base["size_bytes"]),
            "latency_ms": _delta(best["latency_ms"], base["latency_ms"]),
            "baseline_size_bytes": base["size_bytes"],
            "baseline_latency_ms": base["latency_ms"],
            "size_bytes_best": best["size_bytes"],
            "latency_ms_best": best["latency_ms"],
        }
        for trial in self.trials:  # units are internal; the report reads excluded / excluded_modules
            trial.pop("units", None)
        return FallbackOutcome(
            best_path=best_path,
            met=met,
            nodes_in_float=self._nodes_in_float(best),
            trials=self.trials,
            best_summary=best["summary"] or {},
            notes=self.notes,
            seconds=round(time.perf_counter() - self.start, 3),
            sensitivity=self.sensitivity,
            best_trial=best["trial"],
            calibration_method=best["calibration"],
            goal=self.budget.describe(),
            tolerances=dataclasses.asdict(self.tolerances),
            gate=gate,
            cost=cost,
        )

    def _nodes_in_float(self, best: dict) -> list[dict]:
        rows = {row["node"]: row for row in node_ranking(self.sensitivity)}
        units = {node: unit for unit in self.ranking for node in unit["nodes"]}
        marginal = {t["added"]: t["latency_delta_ms"] for t in self.trials if "added" in t}
        float_sizes = self.requantizer.weight_bytes()
        entries = []
        for node in best["excluded"]:
            row = rows.get(node, {})
            unit = units.get(node)
            why = unit["why"] if unit and unit["key"] == node else (
                f"producer of the input of {unit['key']} ({unit['why']})" if unit else "kept in float"
            )
            weights = float_sizes.get(node, (0, 0))
            entries.append(
                {
                    "node": node,
                    "module": self.requantizer.module_of(node),
                    "op_type": row.get("op_type") or self.requantizer.op_of(node),
                    "why": why,
                    "sqnr_db": row.get("sqnr_db"),
                    "weight_sqnr_db": row.get("weight_sqnr_db"),
                    "input_sqnr_db": row.get("input_sqnr_db"),
                    "output_sqnr_db": row.get("output_sqnr_db"),
                    "float_weight_bytes": weights[0],
                    "size_cost_bytes": weights[1],
                    "latency_cost_ms": marginal.get(node),
                }
            )
        return entries

    def _cleanup(self, keep: set[str]) -> None:
        """Delete the trial files that lost (they can be large); the report keeps their figures."""
        for trial in self.trials[1:]:
            if trial["path"] not in keep:
                Path(trial["path"]).unlink(missing_ok=True)
                trial["path"] = None

    @staticmethod
    def _unit_label(unit: dict) -> str:
        row = unit["row"]
        name = row.get("module") or unit["key"]
        return name + (f" (+{len(unit['nodes']) - 1} producer)" if len(unit["nodes"]) > 1 else "")


class _Requantizer:
    """Re-quantizes the float model with a calibration method and a set of float nodes.

    Static mode: pre-processing once, calibration once per method (kept as onnxruntime calibration
    caches), then `quantize_static` from the cache for each trial, with the same translation of
    the scheme as the static quantizer (`ort_static_arguments`). Other modes go through
    `quantize_model` with `nodes_to_exclude`.
    """

    def __init__(self, request: FallbackRequest, work_dir: Path) -> None:
        self.request = request
        self.work_dir = work_dir
        self.static = request.scheme.mode == "static"
        self.caches: dict[str, Path] = {}
        self.mix_note = ""
        self._prepared: Path | None = None
        self._modules: dict[str, str] | None = None
        self._ops: dict[str, str] | None = None

    @property
    def prepared(self) -> Path:
        """The float model after onnxruntime's pre-processing (what the quantizer actually reads)."""
        if self._prepared is None:
            from exporter.quantizers.static import preprocess_for_quantization

            path = self.work_dir / "preprocessed.onnx"
            preprocess_for_quantization(Path(self.request.float_path), path)
            self._prepared = path
        return self._prepared

    def module_of(self, node: str) -> str:
        if self._modules is None:
            self._modules = node_module_map(self.prepared)
        return self._modules.get(node, "")

    def op_of(self, node: str) -> str:
        if self._ops is None:
            model = onnx.load(str(self.prepared), load_external_data=False)
            self._ops = {n.name: n.op_type for n in model.graph.node}
        return self._ops.get(node, "")

    def weight_bytes(self) -> dict[str, tuple[int, int]]:
        """Per node: (float bytes of its weights, bytes saved by int8) — what keeping it float costs."""
        model = onnx.load(str(self.prepared), load_external_data=False)
        inits = {init.name: init for init in model.graph.initializer}
        result = {}
        for node in model.graph.node:
            total = saved = 0
            for name in node.input:
                init = inits.get(name)
                if init is None:
                    continue
                size = int(np.prod(init.dims)) * onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
                total += size
                if len(init.dims) >= 2:  # weights go to 8 bits; biases to int32 (no saving)
                    saved += size - int(np.prod(init.dims))
            result[node.name] = (total, saved)
        return result

    def quantize(self, method: str, excluded: list[str], out: Path, number: int) -> None:
        if not self.static:
            from exporter.quantizers import QuantizeRequest, quantize_model

            scratch = self.work_dir / f"trial_{number:02d}_work"
            scratch.mkdir(exist_ok=True)
            quantize_model(
                QuantizeRequest(
                    float_path=Path(self.request.float_path),
                    out_path=out,
                    scheme=self.request.scheme,
                    input_specs=self.request.input_specs,
                    work_dir=scratch,
                    make_reader=self.request.make_reader,
                    nodes_to_exclude=tuple(excluded),
                )
            )
            return
        self._quantize_static(method, excluded, out, qdq=False)

    def analysis_model(self, base: dict, out: Path) -> Path:
        """A QDQ model of the base trial for the sensitivity analysis (the trial itself when it is QDQ)."""
        if self.static and (self.request.scheme.format != "qdq" or base["trial"] == 0):
            self._quantize_static(base["calibration"], base["excluded"], out, qdq=True)
            return out
        return Path(base["path"])

    def _quantize_static(self, method: str, excluded: list[str], out: Path, qdq: bool) -> None:
        from onnxruntime.quantization import QuantFormat, quantize_static

        from exporter.errors import QuantizationError
        from exporter.quantizers.static import ort_static_arguments

        cache = self.cache(method)
        args_method = "minmax" if method == PER_TENSOR else method
        scheme = dataclasses.replace(self.request.scheme, calibration_method=args_method)
        arguments = dict(ort_static_arguments(scheme, tuple(excluded)).quantize)
        if qdq:
            arguments["quant_format"] = QuantFormat.QDQ
        try:
            with _quiet():
                quantize_static(
                    str(self.prepared), str(out), calibration_data_reader=None, calibration_cache_path=str(cache), **arguments
                )
        except Exception as exc:
            raise QuantizationError(f"onnxruntime quantize_static failed: {type(exc).__name__}: {exc}") from exc

    def cache(self, method: str) -> Path:
        """The calibration cache for `method` (computed on first use)."""
        if method in self.caches:
            return self.caches[method]
        path = self.work_dir / f"calibration.{method}.json"
        path.unlink(missing_ok=True)
        if method == PER_TENSOR:
            self._mix_cache(path)
        else:
            from exporter.quantizers.static import calibrate_ranges, ort_static_arguments

            scheme = dataclasses.replace(self.request.scheme, calibration_method=method)
            calibrate_ranges(self.prepared, self.request.make_reader(), ort_static_arguments(scheme), path)
        self.caches[method] = path
        return path

    def _mix_cache(self, path: Path) -> None:
        """Per tensor, the range (MinMax / Entropy / Percentile) with the lowest quantize-dequantize
        error on the calibration data (at most `MIX_SAMPLES` samples); saved as a MinMax cache."""
        from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData, load_tensors_data, save_tensors_data

        ranges = {m: load_tensors_data(self.cache(m)).data for m in CALIBRATION_METHODS}
        errors = _range_errors(self.prepared, self.request.make_reader(), ranges, self.request.scheme, self.work_dir)
        chosen: dict[str, TensorData] = {}
        counts = {m: 0 for m in CALIBRATION_METHODS}
        own = self.request.scheme.calibration_method
        for name, data in ranges["minmax"].items():
            per_method = errors.get(name)
            method = own if own in CALIBRATION_METHODS else "minmax"
            if per_method:
                method = min(per_method, key=lambda m: (per_method[m], m != own))
            low, high = ranges[method][name].range_value
            chosen[name] = TensorData(lowest=np.asarray(low, dtype=np.float32), highest=np.asarray(high, dtype=np.float32))
            counts[method] += 1
        save_tensors_data(TensorsData(CalibrationMethod.MinMax, chosen), path)
        self.mix_note = ", ".join(f"{n} {m}" for m, n in counts.items() if n)


def _range_errors(model_path: Path, reader: Any, ranges: dict[str, dict], scheme: QuantScheme, work_dir: Path) -> dict[str, dict[str, float]]:
    """Mean squared quantize-dequantize error of each calibrated tensor under each method's range."""
    import onnxruntime as ort
    from onnxruntime.quantization.qdq_loss_debug import modify_model_output_intermediate_tensors
    from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType

    qtype = getattr(onnx.TensorProto, scheme.activation_type.upper())
    qmin, qmax = get_qmin_qmax_for_qType(qtype, symmetric=scheme.activation_symmetric)
    params: dict[str, dict[str, tuple[float, float]]] = {}
    for method, data in ranges.items():
        for name, tensor in data.items():
            low, high = tensor.range_value
            zero, scale = compute_scale_zp(
                np.asarray(low, dtype=np.float32), np.asarray(high, dtype=np.float32), qmin, qmax, scheme.activation_symmetric
            )
            params.setdefault(name, {})[method] = (float(scale), float(zero))
    augmented = work_dir / "calibration_mix_augmented.onnx"
    with _quiet():
        modify_model_output_intermediate_tensors(str(model_path), str(augmented))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(str(augmented), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    suffix = "_ReshapedSavedOutput"
    sums: dict[str, dict[str, float]] = {}
    seen = 0
    while seen < MIX_SAMPLES:
        batch = reader.get_next()
        if batch is None:
            break
        seen += len(next(iter(batch.values())))
        for name, value in zip(names, session.run(None, batch)):
            tensor = name[: -len(suffix)] if name.endswith(suffix) else name
            if tensor not in params:
                continue
            x = np.asarray(value, dtype=np.float64)
            for method, (scale, zero) in params[tensor].items():
                q = np.clip(np.round(x / scale) + zero, float(qmin), float(qmax))
                error = float(np.sum(((q - zero) * scale - x) ** 2))
                sums.setdefault(tensor, {}).setdefault(method, 0.0)
                sums[tensor][method] += error
    return sums


def _sqnr(trial: dict) -> float:
    summary = trial.get("summary") or {}
    value = summary.get("sqnr_db")
    return float(value) if value is not None else -DB_LIMIT


def _delta(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None:
        return None
    return round(value - reference, 4)


@contextlib.contextmanager
def _quiet():
    """onnxruntime's quantization tools print and log freely; keep that out of the user's terminal."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)
