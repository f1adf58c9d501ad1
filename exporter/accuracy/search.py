"""The mixed-precision search: which units of the int8 model run in float, decided by error and time.

Given the plain int8 model (already made and judged by the pipeline), in order:

1. **units and timings**: every quantized unit (`units`), its kernel time in int8 and in float on
   this CPU (`latency`, from onnxruntime's profiler), or timings supplied by the caller;
2. **speed**: units whose int8 form is slower go to float (`decision.slower_in_int8`); with measured
   timings the choice is then profiled in place a few times, moving units whose time there says
   otherwise (a new Q/DQ boundary included), and the fastest profiled set is kept;
3. **accuracy**, while the goal is missed: each unit's own output error (`ranking`), then float
   prefixes of `decision.accuracy_order` of growing size (1, 2, 4, ...) until one passes, then a
   bisection for the shortest passing prefix, and that set with its short int8 gaps filled (fewer
   int8/float boundaries, each a Q/DQ pair and a layout change);
4. **the end-to-end check**: the finalists, the plain model and the float model are timed at batch
   1, interleaved; `decision.pick_final` chooses, so the result is never slower than the float
   model (the float model itself when every passing mix is).

Bounded by a time budget and a trial count; the best candidate so far is always kept. Timings and
errors are cached in the output folder (`cache`). Every step is a `Trial` (`trials`); the outcome
carries one `LayerDecision` per unit for the report.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import onnx

from exporter.accuracy.cache import CACHE_FILE, cache_key, load_cache, save_cache
from exporter.accuracy.decision import (
    SLOWER_FLOOR_MS, SLOWER_MARGIN, Candidate, LayerDecision, accuracy_order, pick_final, slower_in_int8,
)
from exporter.accuracy.latency import UnitTiming, attribute_kernels, measure_unit_timings, profile_kernels, profile_runs
from exporter.accuracy.mixed import float_units, folded_activations
from exporter.accuracy.ranking import rank_units
from exporter.accuracy.trials import Evaluator, Trial, TrialRunner
from exporter.accuracy.units import name_unnamed_nodes, quantized_units
from exporter.progress import progress_bar

log = logging.getLogger("exporter")

GAP = 2
"""Int8 runs of at most this many units between float ones are filled (`fill_gaps`): each boundary costs
a Q/DQ pair and a layout change, often more than the int8 run saves."""
SETTLE_ROUNDS = 4
"""At most this many in-place profiles refine the speed choice (`_Search._settle`)."""

Clock = Callable[[Mapping[str, Path]], dict[str, float]]
"""Times files (key -> path) at batch 1 and returns key -> ms; the default times them interleaved."""


@dataclass
class SearchRequest:
    """What the search needs. `float_path`: the float ONNX; `plain_path`: the plain int8 QDQ model and
    `plain_figures` its figures; `prepared_path`: the float model as the quantizer read it (after
    pre-processing: same node names); `goal`: the tolerances to meet; `seconds`, `max_trials`: the
    budget; `ranking_feeds`: calibration batches for the per-unit error; `latency_feed`: one batch-1
    feed; `cache_in`/`cache_out`: cache files; `timings`, `clock`: supplied measurements (tests)."""

    float_path: Path
    plain_path: Path
    prepared_path: Path
    plain_figures: Any
    evaluator: Evaluator
    goal: Any
    work_dir: Path
    latency_feed: dict[str, np.ndarray]
    ranking_feeds: Sequence[dict[str, np.ndarray]] = ()
    seconds: float = 300.0
    max_trials: int = 16
    scheme: str = ""
    cache_in: Path | None = None
    cache_out: Path | None = None
    timings: Mapping[str, UnitTiming] | None = None
    clock: Clock | None = None
    latency_repeats: int = 20
    algorithms: Mapping[str, Sequence[str]] = field(default_factory=dict)
    why: str = ""


@dataclass
class SearchOutcome:
    """The chosen file and everything the report says about the search."""

    best_path: Path
    best: Trial
    met: bool
    why: str
    trials: list[Trial]
    decisions: list[LayerDecision]
    notes: list[str]
    seconds: float
    stop_reason: str = ""
    latency_ms: dict[str, float] = field(default_factory=dict)
    cache_hit: dict[str, bool] = field(default_factory=dict)
    slower_than_float: bool = False

    @property
    def chose_float_model(self) -> bool:
        """Is the written file the float model itself?"""
        return self.best.is_float_model

    def to_dict(self) -> dict[str, Any]:
        """Plain data for report.json."""
        return {
            "met": self.met, "why": self.why, "best_trial": self.best.number, "float_model": self.chose_float_model,
            "float_units": list(self.best.float_units), "seconds": round(self.seconds, 3), "stop_reason": self.stop_reason,
            "notes": list(self.notes), "latency_ms": self.latency_ms, "cache_hit": self.cache_hit,
            "slower_than_float": self.slower_than_float,
            "trials": [t.to_dict() for t in self.trials], "decisions": [d.to_dict() for d in self.decisions],
        }


def run_search(request: SearchRequest) -> SearchOutcome:
    """Run the search of the module docstring and return the best candidate found."""
    return _Search(request).run()


SECONDS_BASE = 60.0
SECONDS_PER_MILLION_PARAMS = 60.0
SECONDS_MAX = 420.0


def fill_gaps(order: Sequence[str], chosen: set[str], gap: int) -> set[str]:
    """`chosen` plus every run of at most `gap` unchosen units lying between chosen ones in `order`."""
    result = set(chosen)
    positions = [i for i, name in enumerate(order) if name in chosen]
    for left, right in zip(positions, positions[1:]):
        if 1 < right - left <= gap + 1:
            result.update(order[left + 1:right])
    return result


def auto_search_seconds(float_path: Path) -> float:
    """The default time budget: 60 s plus 60 s per million float parameters, at most 7 minutes.

    (A 5 M-parameter ImageNet CNN gets 6 minutes, which keeps its whole default export under 10.)
    """
    model = onnx.load(str(float_path), load_external_data=False)
    params = sum(int(np.prod(init.dims)) for init in model.graph.initializer)
    return min(SECONDS_MAX, SECONDS_BASE + SECONDS_PER_MILLION_PARAMS * params / 1e6)


def batches_from(reader: Any, count: int) -> list[dict[str, np.ndarray]]:
    """The first `count` batches of a calibration reader."""
    batches = []
    while len(batches) < count:
        batch = reader.get_next()
        if batch is None:
            break
        batches.append(batch)
    if not batches:
        raise ValueError("the calibration reader gave no batch")
    return batches


def slower_than_float(int8_path: Path, float_path: Path, feed: dict[str, np.ndarray], repeats: int = 15) -> bool:
    """Is the int8 file slower than the float file at batch 1 (interleaved medians, best of two rounds)?"""
    from exporter.runtime import interleaved_latency_ms, session_for

    sessions = {"int8": session_for(int8_path, threads=1), "float": session_for(float_path, threads=1)}
    calls = {k: (lambda s=s: s.run(None, feed)) for k, s in sessions.items()}
    best: dict[str, float] = {}
    for _ in range(2):
        for k, v in interleaved_latency_ms(calls, repeats=repeats).items():
            best[k] = min(v, best.get(k, math.inf))
    return best["int8"] > best["float"]


def algorithm_notes(ptq_log: Any) -> dict[str, list[str]]:
    """Per ONNX node, one short text per PTQ record (`exporter.ptq.records`) for the decision table."""
    if ptq_log is None:
        return {}
    import dataclasses

    notes: dict[str, list[str]] = {}
    for node, records in ptq_log.by_node().items():
        for record in records:
            figures = {k: v for k, v in dataclasses.asdict(record).items()
                       if k not in ("node", "algorithm", "next_node", "tensor")}
            shown = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in list(figures.items())[:3])
            notes.setdefault(node, []).append(f"{record.algorithm}: {shown}" if shown else record.algorithm)
    return notes


class _Search:
    def __init__(self, request: SearchRequest) -> None:
        self.request = request
        self.start = time.perf_counter()
        self.deadline = self.start + max(request.seconds, 0.0)
        self.work = Path(request.work_dir)
        self.work.mkdir(parents=True, exist_ok=True)
        self.notes: list[str] = []
        self.stop_reason = ""
        self.speed_set: list[str] = []
        self.cache_hit = {"timings": False, "errors": False}

    # -- driver

    def run(self) -> SearchOutcome:
        r = self.request
        quant = onnx.load(str(r.plain_path))
        plain_path = Path(r.plain_path)
        if name_unnamed_nodes(quant):
            plain_path = self.work / "plain.named.onnx"
            onnx.save(quant, str(plain_path))
        prepared = onnx.load(str(r.prepared_path))
        name_unnamed_nodes(prepared)
        self.units = quantized_units(quant)
        self.by_name = {u.name: u for u in self.units}
        folded = folded_activations(prepared, quant)
        self.runner = TrialRunner(quant, folded, prepared, r.evaluator, r.goal, self.work)
        plain = self.runner.record("plain int8", [], plain_path, r.plain_figures)
        if r.why:
            self.notes.append(f"searching because {r.why}")
        key = cache_key([r.float_path, r.plain_path], list(r.ranking_feeds), r.scheme)
        self.cache = load_cache(r.cache_in, key)
        self.timings = self._timings(quant, folded, prepared)
        self.errors_db: dict[str, float] = dict(self.cache.errors_db)
        self.cache_hit["errors"] = bool(self.errors_db)
        self._save_cache()
        bar = progress_bar("searching the int8/float mix", total=r.max_trials, unit="trial")
        self.bar = bar
        try:
            current = plain
            if self.speed_set and self._budget_left():
                current = self._trial(f"int8 slower than float: {len(self.speed_set)} unit(s) in float", self.speed_set)
                if not current.passed and plain.passed:
                    self.notes.append("moving the slower units to float broke the gate; kept them in int8")
                    self.speed_set, current = [], plain
            if not current.passed:
                self._accuracy_phase(current, folded, prepared, quant)
            float_trial = self.runner.record("float model", [u.name for u in self.units], Path(r.float_path),
                                             is_float_model=True)
        finally:
            bar.close()
        return self._finish(float_trial)

    def _accuracy_phase(self, base: Trial, folded: dict, prepared: onnx.ModelProto, quant: onnx.ModelProto) -> None:
        if not self._budget_left():
            return
        if not self.errors_db:
            if not self.request.ranking_feeds:
                self.notes.append("no calibration batches to rank layers with: only the speed decision was made")
                return
            started = time.perf_counter()
            self.errors_db = rank_units(quant, self.units, folded, prepared, self.request.ranking_feeds, self.deadline)
            self.notes.append(f"measured each layer's own int8 error: {len(self.errors_db)} of {len(self.units)} layers "
                              f"in {time.perf_counter() - started:.1f} s")
            self._save_cache()
        order = accuracy_order(self.errors_db, self.timings, set(self.speed_set))
        if not order:
            self.notes.append("no layer left to move to float")
            return
        low, high, passing = 0, None, None
        size = 1
        while self._budget_left():
            size = min(size, len(order))
            trial = self._trial(f"{size} most harmful layer(s) in float", self.speed_set + order[:size])
            if trial.passed:
                high, passing = size, trial
                break
            low = size
            if size == len(order):
                self.notes.append(f"even every layer in float ({len(order)}) misses the goal")
                return
            size *= 2
        while passing is not None and high - low > 1 and self._budget_left():
            middle = (low + high) // 2
            trial = self._trial(f"{middle} most harmful layer(s) in float", self.speed_set + order[:middle])
            if trial.passed:
                high, passing = middle, trial
            else:
                low = middle
        if passing is not None:
            filled = fill_gaps([u.name for u in self.units], set(passing.float_units), GAP)
            if len(filled) > len(passing.float_units) and self._budget_left():
                self._trial(f"{high} most harmful layer(s) in float, int8 gaps of <= {GAP} filled", sorted(filled))

    # -- pieces

    def _timings(self, quant: onnx.ModelProto, folded: dict, prepared: onnx.ModelProto) -> dict[str, UnitTiming]:
        r = self.request
        names = {u.name for u in self.units}
        if r.timings is not None:
            timings = {n: t for n, t in r.timings.items() if n in names}
            self.notes.append(f"unit timings supplied by the caller ({len(timings)} units)")
            self.speed_set = [n for n in slower_in_int8(timings)]
            return timings
        if self.cache.timings:
            self.cache_hit["timings"] = True
            timings = self.cache.timings
            self.speed_set = [n for n in self.cache.speed_set if n in names]
            self.notes.append(f"unit timings from the cache ({len(timings)} units)")
            return timings
        started = time.perf_counter()
        everything, _ = float_units(quant, list(names), folded, prepared)
        float_path = self.work / "all_units_float.onnx"
        onnx.save(everything, str(float_path))
        plain_path = self.runner.trials[0].path
        runs = profile_runs(self._one_run_seconds(plain_path))
        timings = measure_unit_timings(plain_path, float_path, quant, everything, names, r.latency_feed, runs)
        slower = self._settle(slower_in_int8(timings), timings, quant, folded, prepared, names, runs)
        self.speed_set = slower
        self.cache.speed_set = list(slower)
        total8 = sum(t.int8_ms for t in timings.values())
        totalf = sum(t.float_ms for t in timings.values())
        self.notes.append(f"profiled {len(timings)} units in int8 ({total8:.3f} ms) and float ({totalf:.3f} ms) "
                          f"at batch 1, {runs} runs each, in {time.perf_counter() - started:.1f} s")
        self.cache.timings = timings
        return timings

    def _settle(self, start: list[str], timings: dict[str, UnitTiming], quant: onnx.ModelProto, folded: dict,
                prepared: onnx.ModelProto, names: set[str], runs: int) -> list[str]:
        """Profile the speed choice in place and move units whose time there says otherwise, up to
        `SETTLE_ROUNDS` times; keep the set with the lowest profiled total.

        In place, a float unit among int8 ones pays for its new Q/DQ boundary (back to int8 if that
        makes it slower than its int8 form), and an int8 unit among float ones pays for its own (to
        float if that makes it slower than its float form).
        """
        r = self.request
        seen: dict[frozenset, float] = {frozenset(): sum(t.int8_ms for t in timings.values())}
        current = frozenset(start)
        for round_ in range(SETTLE_ROUNDS):
            if not current or current in seen:
                break
            mixed, _ = float_units(quant, sorted(current), folded, prepared)
            path = self.work / f"speed_round_{round_}.onnx"
            onnx.save(mixed, str(path))
            in_place = attribute_kernels(profile_kernels(path, r.latency_feed, runs), mixed, names)
            seen[current] = sum(in_place.values())
            back = {n for n in current if in_place[n] > timings[n].int8_ms * (1 + SLOWER_MARGIN) + SLOWER_FLOOR_MS}
            forward = {n for n in names - current if in_place[n] > timings[n].float_ms * (1 + SLOWER_MARGIN) + SLOWER_FLOOR_MS}
            current = frozenset((current - back) | forward)
        best = min(seen, key=lambda s: (seen[s], len(s)))
        self.notes.append(
            f"speed choice settled in place over {len(seen) - 1} profile(s): {len(best)} unit(s) in float, "
            f"{seen[best]:.3f} ms of kernels against {seen[frozenset()]:.3f} ms all int8"
        )
        return sorted(best)

    def _one_run_seconds(self, path: Path) -> float:
        from exporter.runtime import session_for

        session = session_for(path, threads=1)
        session.run(None, self.request.latency_feed)
        started = time.perf_counter()
        session.run(None, self.request.latency_feed)
        return time.perf_counter() - started

    def _trial(self, label: str, names: Sequence[str]) -> Trial:
        trial = self.runner.run(label, list(dict.fromkeys(names)))
        self.bar.update(1)
        self.bar.set_postfix(best=f"{min(t.deficit for t in self.runner.trials):.3g}")
        verdict = "pass" if trial.passed else ("error: " + trial.error if trial.error else "; ".join(trial.failed_checks))
        log.info("search trial %d (%s): %s", trial.number, label, verdict)
        return trial

    def _budget_left(self) -> bool:
        made = len(self.runner.trials) - 1
        if made >= self.request.max_trials:
            self.stop_reason = f"trial limit reached ({self.request.max_trials})"
            return False
        durations = [t.seconds for t in self.runner.trials[1:]]
        expected = max(durations) if durations else 0.0
        if time.perf_counter() + expected > self.deadline:
            self.stop_reason = f"time budget reached ({self.request.seconds / 60:.1f} min)"
            return False
        return True

    def _save_cache(self) -> None:
        self.cache.errors_db = dict(self.errors_db) if hasattr(self, "errors_db") else self.cache.errors_db
        if self.request.cache_out is not None:
            save_cache(self.request.cache_out, self.cache)

    # -- the end

    def _finish(self, float_trial: Trial) -> SearchOutcome:
        trials = self.runner.trials
        evaluated = [t for t in trials if t.figures is not None and not t.error]
        finalists = self._finalists(evaluated, float_trial)
        latency = self._time({f"trial {t.number}": t.path for t in finalists})
        for t in finalists:
            t.latency_ms = latency.get(f"trial {t.number}")
        float_ms = float_trial.latency_ms
        candidates = [Candidate(f"trial {t.number}", t.passed, t.deficit, len(t.float_units), t.latency_ms, t.is_float_model)
                      for t in finalists]
        choice = pick_final(candidates, float_ms)
        best = trials[int(choice.key.split()[1])]
        plain = trials[0]
        if not choice.met:
            why = self.stop_reason or "no candidate left to try"
            fails = "; ".join(best.failed_checks) or "the gate"
            choice_line = (f"goal NOT met after {len(trials) - 2} trial(s) ({why}): the best candidate, trial {best.number} "
                           f"({best.label}), still fails {fails}")
        else:
            choice_line = choice.why if best.number else choice.why.replace("trial 0", "the plain int8 model")
        self.notes.append(choice_line)
        best_path = self.work / "search_best.onnx"
        shutil.copyfile(best.path, best_path)
        return SearchOutcome(
            best_path=best_path, best=best, met=choice.met, why=choice_line, trials=trials,
            decisions=self._decisions(best), notes=self.notes, seconds=time.perf_counter() - self.start,
            stop_reason=self.stop_reason,
            latency_ms={"float": float_ms, "plain": plain.latency_ms, "best": best.latency_ms},
            cache_hit=self.cache_hit, slower_than_float=choice.slower_than_float,
        )

    def _finalists(self, evaluated: list[Trial], float_trial: Trial) -> list[Trial]:
        """The plain model, the float model, the speed trial, and the passing trials with fewest float units."""
        chosen = {0: evaluated[0], float_trial.number: float_trial}
        passing = sorted((t for t in evaluated if t.passed and not t.is_float_model), key=lambda t: len(t.float_units))
        for t in passing[:3]:
            chosen[t.number] = t
        speed = [t for t in evaluated if t.float_units and tuple(sorted(self.speed_set)) == t.float_units]
        for t in speed[:1]:
            chosen[t.number] = t
        if not passing:
            closest = min(evaluated, key=lambda t: (t.deficit, t.number))
            chosen[closest.number] = closest
        return [chosen[k] for k in sorted(chosen)]

    def _time(self, files: Mapping[str, Path]) -> dict[str, float]:
        if self.request.clock is not None:
            return dict(self.request.clock(files))
        from exporter.runtime import interleaved_latency_ms, session_for

        sessions = {k: session_for(p, threads=1) for k, p in files.items()}
        feed = self.request.latency_feed
        calls = {k: (lambda s=s: s.run(None, feed)) for k, s in sessions.items()}
        best: dict[str, float] = {}
        for _ in range(3):  # the best of three interleaved medians: one burst of load cannot decide
            for k, v in interleaved_latency_ms(calls, repeats=self.request.latency_repeats).items():
                best[k] = min(v, best.get(k, math.inf))
        return {k: round(v, 4) for k, v in best.items()}

    def _decisions(self, best: Trial) -> list[LayerDecision]:
        floated = set(best.float_units)
        speed = set(self.speed_set)
        rows = []
        for unit in self.units:
            timing = self.timings.get(unit.name)
            error = self.errors_db.get(unit.name)
            int8_ms = timing.int8_ms if timing else None
            float_ms = timing.float_ms if timing else None
            if best.is_float_model:
                precision, why = "float", "the float model was written; " + _int8_case(timing, error)
            elif unit.name in floated and unit.name in speed:
                precision, why = "float", f"int8 slower: {_ms(int8_ms)} vs {_ms(float_ms)} in float"
            elif unit.name in floated:
                precision = "float"
                why = "error: " + (f"int8 alone costs the output {error:.1f} dB SQNR" if error is not None else "ranked harmful")
                if timing is not None:
                    why += f"; float costs {_ms(max(timing.saved_ms, 0.0))}"
            else:
                precision, why = "int8", _int8_case(timing, error)
            rows.append(LayerDecision(unit.name, unit.module, unit.op_type, precision, why,
                                      error, _round(int8_ms), _round(float_ms),
                                      tuple(self.request.algorithms.get(unit.name, ()))))
        return rows


def _int8_case(timing: UnitTiming | None, error: float | None) -> str:
    """What int8 does for a unit: the time it saves (or loses alone) and the output error it adds alone."""
    parts = []
    if timing is not None:
        parts.append(f"int8 saves {_ms(timing.saved_ms)}" if timing.saved_ms >= 0 else
                     f"int8 {_ms(-timing.saved_ms)} slower alone, not in place")
    if error is not None:
        parts.append(f"int8 alone: {error:.1f} dB SQNR at the output")
    return "; ".join(parts) or "kept int8"


def _ms(value: float | None) -> str:
    return "?" if value is None else f"{value:.3f} ms"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 5)


__all__ = ["CACHE_FILE", "SearchOutcome", "SearchRequest", "run_search"]
