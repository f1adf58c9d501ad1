"""Automatic fallback to float: re-quantize with the most sensitive layers kept in float until the goal is met.

The search, in order, each step a *trial* (one re-quantization, evaluated by the caller's `evaluate`
and gated with the target's tolerances overridden by the budget's goals):

1. the calibration methods the target does not use (Percentile, Entropy, MinMax, in that order:
   Entropy is the slowest), then a per-tensor mix that takes for each activation the range with
   the lowest quantize-dequantize error on the calibration data among the methods calibrated so
   far; it stops as soon as one passes. The best becomes the base of step 2.
2. units kept in float (onnxruntime's `nodes_to_exclude`), following the sensitivity ranking of
   `exporter.accuracy.sensitivity` on the base model: single layers, and for a layer whose input
   quantization is its worst part, that input tensor (its producer and every consumer). Known troublemakers rank ahead of equally
   bad layers: around attention and normalization in transformer encoders (Softmax,
   LayerNormalization, activation x activation MatMul, the residual Add before a normalization),
   the first and last layers of small convolutional nets, also offered together as one unit.
   `greedy` adds one unit at a time, keeping it unless the figures get worse (units often only help
   together); `bisect` finds the shortest passing prefix of the ranking.
3. when a passing set holds several units, each (each group of a bundle) is tried back in int8,
   last added first, while trials remain.

Keeping a layer in float takes more than `nodes_to_exclude`: onnxruntime's `WeightBiasQuantization`
optimizer would quantize the float weights of excluded Conv/Gemm layers when the file is loaded;
every trial pins them float (`exporter.accuracy.pin`) and records which layers it pinned.

Bounded by `budget.max_trials` and `budget.max_minutes` (a trial is not started when the slowest
one so far would overrun). The outcome is always the best model found: among passing trials the
fastest (latency measured at batch 1, one thread; within 5 % and 0.02 ms counts as a tie, then
fewer float layers win), else the one closest to passing, and the notes say which and why.

The graph side of the units (troublemakers, tensor neighbourhoods) is `exporter.accuracy.units`;
re-quantizing a trial (calibration caches, the per-tensor mix) is `exporter.accuracy.requantize`.
"""

from __future__ import annotations

import dataclasses
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
from exporter.accuracy.requantize import PER_TENSOR, Requantizer
from exporter.accuracy.sensitivity import DB_LIMIT, TRANSPARENT_OPS, layer_sensitivity, node_ranking
from exporter.accuracy.units import GraphIndex, input_dominated, troublemakers
from exporter.inputs import InputSpec
from targets.profile import QuantScheme, Tolerances

PRIOR_BONUS_DB = 6.0
"""Known troublemakers rank as if their isolated SQNR were this much lower."""
MAX_TENSOR_GROUP = 16
WORSE_MARGIN = 0.05
"""Greedy keeps a unit in float unless the gate deficit grew by more than this fraction."""
LATENCY_TIE = 0.05
LATENCY_FLOOR_MS = 0.02
"""Passing candidates within 5 % (and 0.02 ms) of the fastest count as equally fast: timing noise."""
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
    plot_svg: str = ""

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


# --- the search --------------------------------------------------------------------------------


class _Search:
    """One run of the search: the trials so far, the ranking of units and the notes for the report."""

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
        self.requantizer = Requantizer(request, self.work_dir)
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
        # Percentile first: Entropy's threshold search is the slowest calibration by far.
        methods = [m for m in ("percentile", "entropy", "minmax") if m != own] + [PER_TENSOR]
        best = base
        for method in methods:
            if not self._budget_left():
                break
            trial = self._trial(f"calibration {method}", method, [])
            if method == PER_TENSOR and self.requantizer.mix_note:
                trial["note"] = f"per-tensor ranges: {self.requantizer.mix_note}"
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
        if passing and (len(passing["units"]) > 1 or any(u.get("parts") for u in passing["units"])):
            self._prune(passing, method)
        if not analysed:
            self.notes.append("layers were ranked by known troublemakers only (sensitivity analysis failed)")

    def _greedy(self, units: list[dict], method: str, base: dict) -> dict | None:
        kept: list[dict] = []
        current = base
        for unit in units:
            covered = {n for u in kept for n in u["nodes"]}
            if set(unit["nodes"]) <= covered:
                continue  # already float as part of a kept unit
            if not self._budget_left():
                break
            trial = self._trial(f"float {self._unit_label(unit)}", method, [*kept, unit], added=unit, previous=current)
            if trial["passed"]:
                return trial
            if trial["deficit"] > current["deficit"] * (1 + WORSE_MARGIN) + 1e-9 or "error" in trial:
                trial["note"] = "made it worse: put back in int8"
            else:
                # Kept even without a visible gain: float units often only help together (a transformer's
                # residual stream and its classifier); the pruning step puts unneeded ones back in int8.
                kept.append(unit)
                current = trial
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
        parts = []
        for unit in passing["units"]:
            if unit.get("parts"):
                parts.extend(
                    {**unit, "key": f"{unit['key']}#{i}", "nodes": part, "parts": None,
                     "row": {"module": f"{self.requantizer.module_of(part[0]) or part[0]} group"}}
                    for i, part in enumerate(unit["parts"])
                )
            else:
                parts.append(unit)
        current = {**passing, "units": parts}
        for unit in reversed(parts):
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
        """Candidate units to keep in float, ranked by measured isolated SQNR, troublemakers boosted.

        Two kinds: a *layer* (one node: its weights and computation go float) and, for a layer whose
        input quantization is its worst part, a *tensor* (that input kept float: its producer, the
        pass-through ops in between, and every consumer, since each quantized consumer would put the
        QuantizeLinear back). The residual stream of a transformer with outlier features needs the
        second kind.
        """
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
        graph = GraphIndex(model)
        units: list[dict] = []
        tensors_seen: set[str] = set()
        for row in rows:
            name = row["node"]
            score = row["worst_sqnr_db"] - (PRIOR_BONUS_DB if name in priors else 0.0)
            units.append({"key": name, "nodes": [name], "score": round(score, 3), "why": self._why(row, priors.get(name)), "row": row})
            if not input_dominated(row):
                continue
            for source, nodes in graph.tensor_groups(name):
                if source in tensors_seen or len(nodes) > MAX_TENSOR_GROUP:
                    continue
                tensors_seen.add(source)
                prior = next((priors[n] for n in nodes if n in priors), None)
                label = modules.get(graph.producer_name(source), "") or source
                why = (
                    f"keeps the output of {label} float for {row.get('module') or name} (input quantization "
                    f"SQNR {row['input_sqnr_db']:.1f} dB): its producer and all {len(nodes) - 1} other node(s) touching it"
                )
                if prior:
                    why = f"known troublemaker: {prior}; {why}"
                units.append(
                    {
                        "key": f"tensor:{source}",
                        "nodes": nodes,
                        "score": round(row["input_sqnr_db"] - (PRIOR_BONUS_DB if prior else 0.0), 3),
                        "why": why,
                        "row": {**row, "module": f"output of {label}"},
                    }
                )
        bundle = self._troublemaker_bundle(model, graph, priors, ranked)
        if bundle is not None:
            units.append(bundle)
        units.sort(key=lambda u: (u["score"], len(u["nodes"])))
        self.ranking = units
        return units

    def _troublemaker_bundle(self, model, graph: GraphIndex, priors: dict[str, str], ranked: list[dict]) -> dict | None:
        """All known troublemakers as one unit, ranked by its worst measured member minus the bonus.

        Transformer encoders: the neighbourhood of every normalization (its input and output tensors
        kept float, i.e. the residual stream where outlier features live). Small CNNs: the first and
        last layers. Its parts can go back to int8 one by one when a passing set is pruned.
        """
        norms = [n for n in model.graph.node if n.op_type in ("LayerNormalization", "SimplifiedLayerNormalization")]
        if norms:
            parts = []
            for norm in norms:
                parts.extend(nodes for _, nodes in graph.tensor_groups(norm.name) if len(nodes) <= MAX_TENSOR_GROUP)
                output = graph.output_group(norm.name)
                if len(output) <= MAX_TENSOR_GROUP:
                    parts.append(output)
            why = "known troublemaker: the neighbourhood of a normalization in a transformer (residual stream, outlier features)"
        else:
            parts = [[name] for name, reason in priors.items() if "small convolutional net" in reason]
            why = "known troublemaker: first and last layers of a small convolutional net"
        parts = [p for p in parts if p]
        if len(parts) < 2:
            return None
        worst = {row["node"]: row["worst_sqnr_db"] for row in ranked}
        measured = [worst[n] for part in parts for n in part if n in worst]
        score = (min(measured) if measured else DB_LIMIT) - PRIOR_BONUS_DB
        nodes = list(dict.fromkeys(n for part in parts for n in part))
        return {"key": "troublemakers", "nodes": nodes, "parts": parts, "score": round(score, 3), "why": why,
                "row": {"module": f"known troublemakers ({len(parts)} groups)"}}

    @staticmethod
    def _why(row: dict, prior: str | None) -> str:
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
        return "; ".join(parts) or "ranked by the search"

    # -- trials

    def _trial(self, label: str, method: str, units: list[dict], added: dict | None = None, previous: dict | None = None) -> dict:
        number = len(self.trials)
        excluded = list(dict.fromkeys(n for unit in units for n in unit["nodes"]))
        path = self.work_dir / f"trial_{number:02d}.onnx"
        started = time.perf_counter()
        pinned: list[str] = []
        try:
            excluded, pinned = self.requantizer.quantize(method, excluded, path, number)
            summary = self.request.evaluate(path)
        except Exception as exc:  # a failed trial is recorded and the search goes on
            trial = self._record(number, label, method, excluded, path, None, time.perf_counter() - started)
            trial["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            return trial
        trial = self._record(number, label, method, excluded, path, summary, time.perf_counter() - started)
        trial["units"] = units
        trial["pinned"] = pinned
        if added is not None and previous is not None and trial["latency_ms"] is not None and previous["latency_ms"]:
            trial["added"] = added["key"]
            trial["latency_delta_ms"] = round(trial["latency_ms"] - previous["latency_ms"], 4)
        return trial

    def _record(self, number, label, method, excluded, path, summary, seconds) -> dict:
        from exporter.validate import check_gate

        checks = check_gate(summary, self.tolerances) if summary is not None else []
        passed = summary is not None and all(c.passed for c in checks)
        latency = None
        timing_start = time.perf_counter()
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
            "seconds": round(seconds + time.perf_counter() - timing_start, 3),
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
        """One calibration sample per input (the model's fixed batch size when it has one)."""
        try:
            reader = self.request.make_reader()
            batch = reader.get_next()
        except Exception:
            batch = None
        if not batch:
            self.notes.append("no calibration batch to time with: latency not measured")
            return None
        model = onnx.load(str(self.request.float_path), load_external_data=False)
        sizes = {}
        for item in model.graph.input:
            dims = item.type.tensor_type.shape.dim
            sizes[item.name] = dims[0].dim_value if dims and dims[0].HasField("dim_value") else 1
        feed = {}
        for name, value in batch.items():
            size = max(1, sizes.get(name, 1))
            rows = value[:size]
            if len(rows) < size:
                rows = np.concatenate([rows] * (size // len(rows) + 1))[:size]
            feed[name] = np.ascontiguousarray(rows)
        return feed

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
        if len(passing) > 1:
            self._retime(passing)
        if passing:
            timed = [t for t in passing if t["latency_ms"] is not None]
            if timed:
                fastest = min(t["latency_ms"] for t in timed)
                ties = [t for t in timed if t["latency_ms"] <= fastest * (1 + LATENCY_TIE) + LATENCY_FLOOR_MS]
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
        nodes_in_float = self._nodes_in_float(best)
        for trial in self.trials:  # units are internal; the report reads excluded / excluded_modules
            units = trial.pop("units", None) or []
            trial["float_units"] = [unit["key"] for unit in units]
        return FallbackOutcome(
            best_path=best_path,
            met=met,
            nodes_in_float=nodes_in_float,
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
            plot_svg=self._plot(),
        )

    def _plot(self) -> str:
        """SVG of the per-layer error of the model the analysis ran on (empty without an analysis)."""
        if not self.sensitivity:
            return ""
        from exporter.accuracy.plot import error_plot_svg

        return error_plot_svg(self.sensitivity, "Per-layer int8 error before the fallback (isolated SQNR)")

    def _retime(self, passing: list[dict], rounds: int = 3, finalists: int = 4) -> None:
        """Time the passing candidates again, interleaved, keeping each one's best median: one timing
        per trial is too noisy to pick the fastest of files that differ by a layer or two."""
        from exporter.runtime import onnx_latency_ms

        if self.latency_feed is None:
            return
        chosen = sorted(passing, key=lambda t: (len(t["excluded"]), t["trial"]))[:finalists]
        for trial in passing:
            if trial not in chosen:
                trial["latency_ms"] = None  # not a finalist: one noisy timing must not win
        best = {t["trial"]: t["latency_ms"] for t in chosen}
        for _ in range(rounds):
            for trial in chosen:
                try:
                    value = onnx_latency_ms(trial["path"], self.latency_feed, threads=1, repeats=self.request.latency_repeats)
                except Exception:
                    continue
                previous = best[trial["trial"]]
                best[trial["trial"]] = value if previous is None else min(previous, value)
        for trial in chosen:
            if best[trial["trial"]] is not None:
                trial["latency_ms"] = round(best[trial["trial"]], 4)
        self.notes.append(f"{len(chosen)} passing candidate(s) timed again, interleaved ({rounds} rounds)")

    def _nodes_in_float(self, best: dict) -> list[dict]:
        rows = {row["node"]: row for row in node_ranking(self.sensitivity)}
        units: dict[str, dict] = {}
        for unit in [*best.get("units", []), *self.ranking]:  # the units this trial kept float first
            for node in unit["nodes"]:
                units.setdefault(node, unit)
        marginal = {t["added"]: t["latency_delta_ms"] for t in self.trials if "added" in t}
        float_sizes = self.requantizer.weight_bytes()
        entries = []
        for node in best["excluded"]:
            row = rows.get(node, {})
            unit = units.get(node)
            if unit and unit["key"] == node:
                why = unit["why"]
            elif unit:
                own = self._why(row, None) if row else ""
                why = unit["why"] + (f"; this node: {own}" if own and own != "ranked by the search" else "")
            else:
                why = "kept in float"
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
                    "pinned": node in best.get("pinned", []),
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
        return name + (f" ({len(unit['nodes'])} nodes)" if len(unit["nodes"]) > 1 else "")


def _sqnr(trial: dict) -> float:
    summary = trial.get("summary") or {}
    value = summary.get("sqnr_db")
    return float(value) if value is not None else -DB_LIMIT


def _delta(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None:
        return None
    return round(value - reference, 4)
