"""Structured channel pruning: remove whole output channels and everything that depends on them.

The model is traced with torch.fx; `_channels.analyze` groups channels that must go together
(residual additions, squeeze-excitation gates, depthwise and grouped convs, concatenation,
flatten into a Linear) and blocks every group it cannot follow safely. Each prunable group loses
its least important channels (filter L1/L2 norm, or |gamma| of the BatchNorm after it), and
`_shrink.shrink` cuts them out of every layer involved. The result is the user's own model with
smaller tensors: fewer parameters and multiply-accumulates on any runtime.

We use our own engine rather than Torch-Pruning: Torch-Pruning handles the common families, but it
treats operations it does not know (channel shuffle, `torch.roll`) as element-wise and silently
produces wrong outputs, fails outright on channel slicing, and cannot name what it left alone.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import fx, nn

from exporter.errors import CompressionError, PlanError
from exporter.modelstats import batch_one
from exporter.passes._channels import ChannelGraph, analyze
from exporter.passes._graph import (
    TraceFailure,
    check_patterns_match,
    matching,
    parse_assignments,
)
from exporter.passes._lineage import record_pruned_outputs
from exporter.passes._shrink import shrink
from exporter.passes.prune_repair import (
    calibration_batches,
    compensate_removed_inputs,
    input_means,
    recalibrate_batchnorm,
)
from exporter.passes.layer_cost import CostModel, MeasuredLatencyCost, Precision, make_cost_model, whole_model_ms
from exporter.passes.residual_branches import ResidualBranch, find_branches, remove_in_order, without_branch
from exporter.passes.speed_goal import SPEED_STEP, SpeedGoal, plan_for_speed
from exporter.passes.base import CompressionPass, PassConfig, PassContext, PassResult, register_pass, setting


@dataclass(frozen=True)
class PruneConfig(PassConfig):
    """Settings of `prune`."""

    ratio: float = setting(
        0.5,
        "fraction of output channels to remove, in [0, 1): from every prunable layer (scope=local) "
        "or from all of them together (scope=global); not used when speedup or latency_ms is set",
    )
    speedup: float | None = setting(
        None,
        "speed goal instead of a ratio: the pruned model, in the target's precision (int8 for cpu-int8), must be "
        "this many times faster than the ORIGINAL FLOAT model at batch 1 by the cost model's estimate (> 1; "
        "with cost=macs: this many times fewer MACs); per-group channel counts are chosen NetAdapt-style",
        enables_pass=True,
    )
    latency_ms: float | None = setting(
        None,
        "speed goal as a budget: estimated batch-1 latency of the pruned model in the target's precision, in ms "
        "on this CPU (cost=int8-latency only)",
        enables_pass=True,
    )
    cost: Literal["int8-latency", "macs"] = setting(
        "int8-latency",
        "cost model of a speed goal: int8-latency (each layer's kernel time at a few channel counts, measured "
        "on this CPU with onnxruntime, float and quantized; cached in ~/.cache/exporter) or macs (from shapes)",
    )
    sensitivity: Literal["output", "importance"] = setting(
        "output",
        "what a speed goal weighs each saving against: output (the change of the model's outputs on up to "
        "32 calibration samples with that group alone pruned, measured at 4 counts per group) or importance "
        "(the normalised channel importance removed)",
    )
    blocks: Literal["auto", "keep"] = setting(
        "auto",
        "under a speed goal with output sensitivity: auto lets a residual block's branch go whole (replaced by its "
        "mean output on calibration samples) where that buys more time per unit of output error than thinning "
        "channels, which is where small nets spend their time at batch 1 (per-operator cost); keep: never",
    )
    repair: Literal["auto", "none"] = setting(
        "auto",
        "after cutting, from up to 256 calibration samples (no labels, no training): move the removed inputs' mean "
        "contribution into each consumer's bias and re-estimate BatchNorm statistics (auto: when there is "
        "calibration data; none: cut only)",
    )
    importance: Literal["l1", "l2", "bn_scale"] = setting(
        "l1", "how channels are ranked: l1 or l2 norm of each filter, or bn_scale (|gamma| of the BatchNorm after it)"
    )
    scope: Literal["local", "global"] = setting(
        "local",
        "local: every layer loses `ratio` of its channels; global: the least important channels of the "
        "whole model go, `ratio` of the total (importances are normalised per layer); not used with a speed goal",
    )
    layer_ratios: tuple[str, ...] = setting(
        (), "per-layer ratios as PATTERN=RATIO items (fnmatch on layer names, first match wins), e.g. 'layer4.*=0.7'"
    )
    ignore: tuple[str, ...] = setting(
        (),
        "fnmatch patterns of layers whose output channels are kept (their inputs may still shrink); "
        "layers producing the model output, such as the classifier head, are always kept",
    )
    round_to: int = setting(
        1,
        "keep every pruned layer's channel count a multiple of this; 8 keeps onnxruntime's int8 convs on fast "
        "paths (with a speed goal, 1 means 16: onnxruntime's int8 depthwise convs run 2x slower at odd multiples of 8)",
    )

    def validate(self) -> None:
        """Ratios in [0, 1), `round_to` at least 1, `layer_ratios` items of the form PATTERN=RATIO."""
        if not 0.0 <= self.ratio < 1.0:
            raise PlanError(f"bad prune ratio {self.ratio}: expected a fraction in [0, 1), e.g. 0.5")
        if self.round_to < 1:
            raise PlanError(f"bad prune round_to {self.round_to}: expected an integer >= 1")
        parse_assignments(self.layer_ratios, "prune layer_ratios", 0.0, 1.0)
        if self.speedup is not None and self.latency_ms is not None:
            raise PlanError("prune speedup and latency_ms are two ways to set one goal: give only one")
        if self.speedup is not None and not self.speedup > 1.0:
            raise PlanError(f"bad prune speedup {self.speedup}: expected a factor > 1, e.g. 3 for 3x faster than float")
        if self.latency_ms is not None and not self.latency_ms > 0.0:
            raise PlanError(f"bad prune latency_ms {self.latency_ms}: expected a positive budget in milliseconds")
        if self.latency_ms is not None and self.cost != "int8-latency":
            raise PlanError("prune latency_ms needs cost int8-latency (a budget in ms needs measured latencies)")

    @property
    def speed_goal(self) -> SpeedGoal | None:
        """The speed goal, when `speedup` or `latency_ms` is set."""
        if self.speedup is None and self.latency_ms is None:
            return None
        return SpeedGoal(speedup=self.speedup, latency_ms=self.latency_ms)


@register_pass
class Prune(CompressionPass):
    """Remove the least important output channels of every prunable channel group."""

    name = "prune"
    Config = PruneConfig
    order = 20
    shorthand = "ratio"
    summary_line = "structured channel pruning: smaller tensors, fewer MACs"

    def __init__(self, config: PruneConfig, cost_model: CostModel | None = None) -> None:
        """`cost_model` replaces the one `config.cost` names (tests inject a fixed table)."""
        super().__init__(config)
        self.cost_model = cost_model

    def apply(self, model: nn.Module, ctx: PassContext) -> PassResult:
        """Analyse channel dependencies, pick channels per group, cut them, and check the model still runs."""
        config: PruneConfig = self.config
        names = [n for n, _ in model.named_modules() if n]
        for setting_name, patterns in (
            ("prune ignore", config.ignore),
            ("prune layer_ratios", [p for p, _ in parse_assignments(config.layer_ratios, "", 0.0, 1.0)]),
        ):
            problem = check_patterns_match(names, patterns, setting_name)
            if problem:
                raise CompressionError(problem)
        example = batch_one(ctx.example_inputs)
        try:
            graph = analyze(model, example)
        except TraceFailure as exc:
            reason = f"{exc}; the model is left unpruned"
            return PassResult(model, skipped=[{"layer": "<model>", "reason": reason}], notes=[reason])
        with torch.no_grad():
            reference = _shapes(model(*example))
        notes: list[str] = []
        speed = _SpeedInputs(
            example, self._cost_model(ctx), _precision(ctx), {}, _probe_inputs(ctx, config), ctx.input_specs,
        )  # fmt: skip
        plan = _plan(model, graph, config, notes, speed)
        kept = {root: _select(scores, count, graph.spaces.groups[root]) for root, (scores, count) in plan.items()}
        repair_batches = _repair_batches(ctx, config) if kept else None
        if repair_batches:
            compensated = compensate_removed_inputs(model, graph, kept, input_means(model, graph, repair_batches))
        changes = shrink(model, graph, kept)
        record_pruned_outputs(model, graph, kept)  # lineage: which original channels each layer kept
        if speed.removed:
            # means on the thinned model: the branch's input and the addition's width have changed
            remove_in_order(model, speed.removed, repair_batches or [speed.probe if speed.probe is not None else example])
            changes += [{"layer": b.label, "type": "residual branch", "removed": list(b.layers)} for b in speed.removed]
        _check_runs(model, example, reference)
        if repair_batches:
            norms = recalibrate_batchnorm(model, repair_batches)
            notes.append(
                f"repaired from {sum(len(b[0]) for b in repair_batches)} calibration samples: {len(compensated)} "
                f"layer(s) took their removed inputs' mean into their bias, {norms} BatchNorm(s) re-estimated"
            )
        skipped = [
            {"layer": layer, "reason": "; ".join(graph.spaces.reasons[root])}
            for root in graph.spaces.roots()
            if graph.spaces.reasons[root]
            for layer in graph.spaces.producers[root]
        ]
        roots = graph.spaces.roots()
        before = sum(graph.spaces.size[r] for r in roots)
        summary = {
            "channel_groups": len(roots),
            "groups_pruned": len(kept),
            "groups_kept_whole": sum(1 for r in roots if graph.spaces.reasons[r]),
            "channels_before": before,
            "channels_after": before - sum(graph.spaces.size[r] - len(k) for r, k in kept.items()),
            **speed.summary,
        }
        return PassResult(model, changes=changes, skipped=skipped, notes=notes, summary=summary)


    def _cost_model(self, ctx: PassContext) -> CostModel | None:
        if self.config.speed_goal is None:
            return None
        return self.cost_model or make_cost_model(self.config.cost, ctx.quantization)


@dataclass
class _SpeedInputs:
    """What a speed goal needs besides the config; `summary` receives the allocation's figures."""

    example: tuple[torch.Tensor, ...]
    cost_model: CostModel | None
    precision: Precision
    summary: dict[str, Any]
    probe: tuple[torch.Tensor, ...] | None = None
    specs: list[Any] | None = None
    removed: list[ResidualBranch] = dataclasses.field(default_factory=list)
    """Residual branches the allocation removes whole (set by `_plan`)."""

    def feeds(self) -> list[dict[str, Any]]:
        """Up to 8 single samples (probe or example inputs) as onnxruntime feeds."""
        inputs = self.probe if self.probe is not None else self.example
        return [{s.name: t[i : i + 1].numpy() for s, t in zip(self.specs, inputs)} for i in range(min(8, len(inputs[0])))]

    def check(
        self, model: nn.Module, graph: ChannelGraph, scores: dict[int, torch.Tensor],
        fixed: dict[int, tuple[torch.Tensor, int]], branches: list[ResidualBranch], notes: list[str], scratch: Path,
    ) -> Any:  # fmt: skip
        """A callable measuring an allocation's real speedup over the original float model (measured costs only).

        The original's float ONNX is exported once, into `scratch`, at the first check.
        """
        if not isinstance(self.cost_model, MeasuredLatencyCost) or not self.specs:
            return None
        from exporter.onnx_export import export_onnx
        from exporter.passes.layer_cost import measured_speedup

        inputs = self.probe if self.probe is not None else self.example
        original = scratch / "original.onnx"

        def measure(allocation: Any) -> float | None:
            counts = {**{r: k for r, (_, k) in fixed.items()}, **allocation.keep}
            trial = copy.deepcopy(model)
            kept = {root: _select(scores[root], count, graph.spaces.groups[root]) for root, count in counts.items()}
            shrink(trial, _for_copy(graph, trial), kept)
            remove_in_order(trial, [b for b in branches if b.add in allocation.removed_adds], [inputs])
            try:
                if not original.is_file():
                    export_onnx(model, self.specs, original, opset=18, dynamic_batch=True)
                return measured_speedup(
                    original, trial, self.precision, self.specs, self.cost_model.scheme, self.feeds(),
                    cache=self.cost_model.speed_check_cache,
                )
            except Exception as exc:  # export or onnxruntime: the estimate stands alone
                notes.append(f"measured check skipped ({type(exc).__name__}: {str(exc)[:200]})")
                return None

        return measure

    def whole_model(self, model: nn.Module, notes: list[str]) -> Any:
        """A callable timing the whole original model (float and int8) for a measured cost model, else None."""
        if not isinstance(self.cost_model, MeasuredLatencyCost) or not self.specs:
            return None
        feeds = self.feeds()

        def timing() -> Any:
            try:
                return whole_model_ms(
                    model, self.specs, self.cost_model.scheme, feeds, cache=self.cost_model.whole_model_cache
                )
            except Exception as exc:  # export or onnxruntime: estimate from the layers alone
                notes.append(f"whole-model calibration skipped ({type(exc).__name__}: {str(exc)[:200]})")
                return None

        return timing


def _repair_batches(ctx: PassContext, config: PruneConfig) -> list[tuple[torch.Tensor, ...]] | None:
    """Up to 256 calibration samples for the repair, or None when it is off or there is no data."""
    if config.repair == "none":
        return None
    return calibration_batches(ctx) or None


def _probe_inputs(ctx: PassContext, config: PruneConfig) -> tuple[torch.Tensor, ...] | None:
    """Up to 32 calibration samples (else the example inputs) for the output-error curves of a speed goal."""
    if config.speed_goal is None or config.sensitivity != "output":
        return None
    if ctx.calib is None or len(ctx.calib) == 0:
        return tuple(ctx.example_inputs)
    from calibration import iter_batches

    batch = next(iter(iter_batches(ctx.calib.subset(range(min(32, len(ctx.calib)))), ctx.input_specs, 32)))
    return tuple(torch.from_numpy(batch.inputs[s.name]) for s in ctx.input_specs)


def _change_measure(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> Any:
    """`change(trial)`: relative squared change of a trial model's outputs on `inputs` against `model`'s."""
    with torch.no_grad():
        reference = _tensors(model(*inputs))
    scale = sum(float(r.double().pow(2).sum()) for r in reference) or 1.0

    def change(trial: nn.Module) -> float:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # many small forwards: one thread each avoids oversubscribing shared cores
        try:
            with torch.no_grad():
                got = _tensors(trial(*inputs))
        finally:
            torch.set_num_threads(threads)
        return sum(float((g.double() - r.double()).pow(2).sum()) for g, r in zip(got, reference)) / scale

    return change


def _output_error(
    model: nn.Module, graph: ChannelGraph, scores: dict[int, torch.Tensor], inputs: tuple[torch.Tensor, ...]
) -> Any:
    """`error(root, keep)`: relative squared change of the outputs when only that group keeps `keep` channels."""
    change = _change_measure(model, inputs)

    def error(root: int, keep: int) -> float:
        trial = copy.deepcopy(model)
        shrink(trial, _for_copy(graph, trial), {root: _select(scores[root], keep, graph.spaces.groups[root])})
        return change(trial)

    return error


def _for_copy(graph: ChannelGraph, trial: nn.Module) -> ChannelGraph:
    """`graph` with its editable reshape nodes taken from `trial` (a deep copy of the analysed graph module)."""
    if not graph.sized_reshapes:
        return graph
    nodes = {node.name: node for node in trial.graph.nodes}
    moved = [dataclasses.replace(r, node=nodes[r.node.name]) for r in graph.sized_reshapes]
    return dataclasses.replace(graph, sized_reshapes=moved)


def _tensors(output: Any) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (tuple, list)):
        return [t for o in output for t in _tensors(o)]
    if isinstance(output, dict):
        return [t for o in output.values() for t in _tensors(o)]
    return []


def _precision(ctx: PassContext) -> Precision:
    """The precision the pruned model will run in: int8 for a static int8 target (and outside the pipeline), else float.

    Not the faster of int8 and float per layer: a float layer between int8 ones costs a dequantize and a
    quantize, and on the MobileNetV2 pruned to 4x (96x96) keeping its depthwise convs in float made the int8
    model 22% slower (0.447 against 0.366 ms), though each of them alone is faster in float. The search keeps
    layers in float only when plain int8 misses the gate or is slower than float, so int8 is what is deployed.
    """
    scheme = ctx.quantization
    if scheme is None:
        return "int8"
    return "int8" if scheme.mode == "static" else "float"


def _plan(
    model: nn.Module, graph: ChannelGraph, config: PruneConfig, notes: list[str], speed: _SpeedInputs
) -> dict[int, tuple[torch.Tensor, int]]:
    """For each group to prune: its channel importances and how many channels it keeps."""
    spaces = graph.spaces
    layer_ratios = parse_assignments(config.layer_ratios, "prune layer_ratios", 0.0, 1.0)
    for pattern in config.ignore:
        for layer in matching(graph.producers, pattern):
            spaces.block(graph.producers[layer], f"matches the prune ignore pattern {pattern!r}")
    ratios: dict[int, float] = {}
    pooled: list[int] = []
    for root in spaces.roots():
        if spaces.reasons[root]:
            continue
        if spaces.size[root] % spaces.groups[root]:
            spaces.block(root, f"its {spaces.size[root]} channels do not split into {spaces.groups[root]} groups")
            continue
        override = next((r for p, r in layer_ratios if matching(spaces.producers[root], p)), None)
        if override is not None:
            ratios[root] = override
        elif config.scope == "global" or config.speed_goal is not None:
            pooled.append(root)
        else:
            ratios[root] = config.ratio
    scores = {root: _importance(model, graph, root, config.importance, notes) for root in [*ratios, *pooled]}
    if pooled and config.speed_goal is None:
        ratios.update(_global_ratios({r: scores[r] for r in pooled}, config.ratio))
    plan = {}
    for root, ratio in ratios.items():
        size, step = spaces.size[root], math.lcm(spaces.groups[root], config.round_to)
        remove = round(ratio * size)
        if remove == 0:
            continue
        keep = max(step, round((size - remove) / step) * step)
        if keep < size:
            plan[root] = (scores[root], keep)
    goal = config.speed_goal
    if goal is not None and speed.cost_model is not None:
        step = SPEED_STEP if config.round_to == 1 else config.round_to
        branches = _removable_branches(model, config)
        with tempfile.TemporaryDirectory(prefix="exporter-speed-check-") as scratch:
            allocation = plan_for_speed(
                model, speed.example, graph, {r: scores[r] for r in pooled},
                {r: math.lcm(spaces.groups[r], step) for r in pooled}, {r: k for r, (_, k) in plan.items()},
                goal, speed.cost_model, speed.precision,
                _output_error(model, graph, scores, speed.probe) if speed.probe is not None else None,
                speed.whole_model(model, notes),
                branches, _branch_error(model, speed.probe) if branches and speed.probe is not None else None,
                speed.check(model, graph, scores, plan, branches, notes, Path(scratch)),
            )  # fmt: skip
        plan.update({root: (scores[root], keep) for root, keep in allocation.keep.items()})
        speed.removed = [b for b in branches if b.add in allocation.removed_adds]
        speed.summary.update(allocation.summary())
        notes += allocation.notes()
    return plan


def _removable_branches(model: nn.Module, config: PruneConfig) -> list[ResidualBranch]:
    """The residual branches a speed goal may remove: none unless `blocks` is auto on an editable graph module."""
    if config.blocks != "auto" or config.sensitivity != "output" or not isinstance(model, fx.GraphModule):
        return []
    ignored = [name for pattern in config.ignore for name in matching(dict(model.named_modules()), pattern)]
    return [b for b in find_branches(model) if not set(b.layers) & set(ignored)]


def _branch_error(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> Any:
    """`error(branch)`: relative squared change of the outputs with only that branch replaced by its mean."""
    change = _change_measure(model, inputs)
    return lambda branch: change(without_branch(model, branch, inputs))


def _global_ratios(scores: dict[int, torch.Tensor], ratio: float) -> dict[int, float]:
    """Per-group ratios that remove `ratio` of all pooled channels, lowest normalised importance first."""
    normalised = {root: s / s.mean().clamp_min(1e-12) for root, s in scores.items()}
    everything = torch.cat(list(normalised.values()))
    remove = round(ratio * everything.numel())
    if remove == 0:
        return {root: 0.0 for root in scores}
    threshold = everything.sort().values[remove - 1]
    return {root: float((s <= threshold).sum()) / s.numel() for root, s in normalised.items()}


def _importance(model: nn.Module, graph: ChannelGraph, root: int, kind: str, notes: list[str]) -> torch.Tensor:
    """One score per channel of the group: summed over the layers that write it (or the BatchNorms after them)."""
    spaces = graph.spaces
    if kind == "bn_scale":
        total = torch.zeros(spaces.size[root])
        found = False
        for name, layout in graph.outputs.items():
            module = model.get_submodule(name)
            if not isinstance(module, nn.modules.batchnorm._BatchNorm) or module.weight is None:
                continue
            offset = 0
            for seg in layout.segments:
                if seg.space is not None and spaces.find(seg.space) == root:
                    gamma = module.weight.detach().abs()[offset : offset + seg.length * seg.inner]
                    total += gamma.reshape(seg.length, seg.inner).sum(1)
                    found = True
                offset += seg.length * seg.inner
        if found:
            return total
        notes.append(f"no BatchNorm follows {', '.join(spaces.producers[root])}: ranked by l1 instead of bn_scale")
        kind = "l1"
    p = 1 if kind == "l1" else 2
    total = torch.zeros(spaces.size[root])
    for name in spaces.producers[root]:
        weight = model.get_submodule(name).weight.detach()
        total += weight.flatten(1).norm(p=p, dim=1)
    return total


def _select(scores: torch.Tensor, keep: int, groups: int) -> torch.Tensor:
    """Indices of the `keep` most important channels, the same number from each of `groups` chunks, sorted."""
    chunk, per_chunk = scores.numel() // groups, keep // groups
    picked = [g * chunk + scores[g * chunk : (g + 1) * chunk].topk(per_chunk).indices for g in range(groups)]
    return torch.cat(picked).sort().values


def _shapes(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return tuple(output.shape)
    if isinstance(output, (tuple, list)):
        return [_shapes(o) for o in output]
    if isinstance(output, dict):
        return {k: _shapes(v) for k, v in output.items()}
    return None


def _check_runs(model: nn.Module, example: tuple[torch.Tensor, ...], reference: Any) -> None:
    """Raise `CompressionError` if the pruned model fails or changes its output shapes (an engine bug)."""
    try:
        with torch.no_grad():
            got = _shapes(model(*example))
    except Exception as exc:
        raise CompressionError(
            f"prune produced a model that fails on the example inputs ({type(exc).__name__}: {exc}); "
            "keep the layers involved with --prune-ignore"
        ) from None
    if got != reference:
        raise CompressionError(f"prune changed the model's output shapes from {reference} to {got}")

