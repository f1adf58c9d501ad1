"""Pass `slim`: let training decide which channels to prune (network slimming).

The model is trained against the original (distillation, as in `distill`) with an extra L1
penalty on the scales of every BatchNorm and GroupNorm layer, which drives the scales of channels
the outputs do not need toward zero. The scales get their own, larger learning rate (`scale_lr`)
so they can reach zero within a short run.

Two forms of the penalty (`normalize`):
- on (default): `penalty * sum over layers of ||scale||_1 / ||scale||_2`, trained with batch
  statistics. Shrinking a whole layer's scales alike does not lower it, so only singling out
  channels does; with a plain L1 term and batch statistics the network would cheat that way,
  because the next BatchNorm undoes a uniform shrink.
- off: network slimming's `penalty * sum |scale|`, with BatchNorm statistics frozen during
  training (which is what stops the cheat there). On the digits sample this form leaves a worse
  starting point for `distill`, whose batch statistics no longer match what slim trained for.

After training, a channel
whose |scale| is below `threshold` times the largest |scale| of its layer is dead: its scale and
shift are set to exactly 0, so its normalised output is 0 and removing it changes nothing
downstream (for activations with f(0) = 0, such as ReLU). At most `max_ratio` of a layer's
channels die; the rest keep their trained values.

With `prune` on (the default), slim then runs the registered `prune` pass with
`importance="bn_scale"` and, per layer, a ratio equal to the fraction of its channels that died
(`layer_ratios` keyed by the conv or linear layer writing each BatchNorm's input), so the learned
scales, not a fixed number, decide how much each layer loses. Channels that `prune` ties together
(residual additions) are pruned by the lowest ratio among the tied layers (items are listed from
the lowest ratio, and `prune` uses the first that matches). Order 15: before `prune` (20), so a
plain `--prune` flag can still prune further.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from exporter.errors import PlanError
from exporter.passes.base import PASSES, CompressionPass, PassConfig, PassContext, PassResult, register_pass, setting
from exporter.passes.prune_repair import calibration_batches, recalibrate_batchnorm
from exporter.training.settings import Rendezvous, TrainSettings, check_training_settings

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class SlimConfig(PassConfig):
    """Settings of the `slim` pass (CLI: `--slim PENALTY` switches it on and sets the penalty)."""

    penalty: float = setting(1.0, "L1 strength on BatchNorm/GroupNorm scales (higher = more channels die)")
    normalize: bool = setting(
        True, "penalise per-layer L1/L2 of the scales, batch statistics (false: plain L1, frozen statistics)"
    )
    threshold: float = setting(0.05, "a channel is dead when |scale| < threshold * the largest |scale| of its layer")
    max_ratio: float = setting(0.9, "at most this fraction of a layer's channels may die")
    prune: bool = setting(True, "remove the dead channels with the prune pass (importance bn_scale)")
    epochs: int | None = setting(None, "passes over the data; none = 10, or no limit with --slim-minutes")
    minutes: float | None = setting(None, "time budget in minutes")
    lr: float = setting(1e-3, "peak learning rate")
    scale_lr: float = setting(0.05, "peak learning rate of the penalised scales (they must travel far in a short run)")
    optimizer: Literal["adam", "adamw", "sgd"] = setting("adam", "optimizer (sgd uses Nesterov momentum 0.9)")
    schedule: Literal["cosine", "constant"] = setting("cosine", "learning-rate schedule")
    batch_size: int = setting(32, "global batch size (split across processes)")
    temperature: float = setting(4.0, "softmax temperature of the soft targets")
    alpha: float = setting(0.9, "weight of the soft (teacher) loss; 1 - alpha goes to labels when the data has them")
    data: str | None = setting(None, "training data: any calibration source; none = the calibration set")
    resume: bool = setting(False, "continue from the checkpoint in the checkpoint folder")
    checkpoint_dir: str | None = setting(None, "checkpoint folder; none = .<out>.checkpoints/slim beside the output folder (kept until a run succeeds)")
    nproc: int = setting(1, "training processes on this machine (DistributedDataParallel via torchrun)")
    seed: int | None = setting(None, "random seed of the data order; none = the plan's seed")

    def validate(self) -> None:
        """Non-negative penalty; threshold in [0, 1); max_ratio in [0, 1); a batch that splits over nproc;
        and the training checks `distill` makes."""
        check_training_settings(self, "slim")
        if self.penalty < 0:
            raise PlanError(f"bad slim penalty {self.penalty}: expected 0 or more, e.g. 1")
        if not 0.0 <= self.threshold < 1.0:
            raise PlanError(f"bad slim threshold {self.threshold}: expected a fraction of the largest scale in [0, 1)")
        if not 0.0 <= self.max_ratio < 1.0:
            raise PlanError(f"bad slim max_ratio {self.max_ratio}: expected a fraction in [0, 1)")
        if self.temperature <= 0:
            raise PlanError(f"bad slim temperature {self.temperature}: expected a positive number such as 4")
        if not 0.0 <= self.alpha <= 1.0:
            raise PlanError(f"bad slim alpha {self.alpha}: expected a weight between 0 and 1")
        if self.nproc < 1:
            raise PlanError(f"bad slim nproc {self.nproc}: expected 1 or more")
        if self.batch_size % self.nproc:
            raise PlanError(
                f"slim batch_size {self.batch_size} does not split over {self.nproc} processes: "
                f"use a multiple of {self.nproc}"
            )


@register_pass
class SlimPass(CompressionPass):
    """Train with an L1 penalty on normalisation scales, zero the dead channels, and prune them."""

    name = "slim"
    Config = SlimConfig
    order = 15
    shorthand = "penalty"
    summary_line = "{dead_channels} of {channels} channels died; agreement {agreement_after}"

    def apply(self, model: "nn.Module", ctx: PassContext) -> PassResult:
        from exporter.training import run_recovery
        from exporter.training.losses import scale_layers

        config: SlimConfig = self.config
        settings = TrainSettings.from_config(
            config,
            seed=ctx.seed,
            l1_penalty=config.penalty,
            l1_normalized=config.normalize,
            batchnorm="train" if config.normalize else "frozen",
            keep="last",
        )
        scales_before = {name: _scale_figures(module) for name, module in scale_layers(model)}
        run = run_recovery(
            model,
            ctx,
            settings,
            pass_name=self.name,
            data_path=config.data,
            rendezvous=Rendezvous(nproc=config.nproc),
            checkpoint_dir=config.checkpoint_dir,
            resume=config.resume,
        )
        model = run.student
        changes = zero_dead_channels(model, config.threshold, config.max_ratio, scales_before)
        dead = sum(row["dead_channels"] for row in changes)
        # Training moved the weights under the running statistics, and zeroing moved them again: re-estimate them
        # once on calibration data, so the exact cut below starts from statistics of the model as it now is.
        renormed = recalibrate_batchnorm(model, calibration_batches(ctx)) if dead else 0
        summary = {
            "penalty": config.penalty,
            "threshold": config.threshold,
            "channels": sum(row["channels"] for row in changes),
            "dead_channels": dead,
            "training": {k: v for k, v in run.summary.items() if k != "history"},
            "history": run.summary["history"],
            "agreement_before": run.summary["agreement_before"],
            "after_training": run.summary["after"],
            "after_zeroing": run.measure(model),
        }
        summary["agreement_after"] = summary["after_zeroing"]["agreement"]
        notes = list(run.notes)
        if renormed:
            notes.append(f"{renormed} BatchNorm(s) re-estimated on calibration data after zeroing the dead channels")
        if not changes:
            notes.append("the model has no BatchNorm or GroupNorm layer: slim had no scales to penalise")
        skipped: list[dict[str, Any]] = []
        if config.prune and dead:
            model, pruned = prune_dead_channels(model, ctx, changes, notes)
            changes += pruned.changes
            skipped += pruned.skipped
            notes += pruned.notes
            summary["prune"] = dict(pruned.summary)
            summary["after_prune"] = run.measure(model)
            summary["agreement_after"] = summary["after_prune"]["agreement"]
        elif config.prune:
            notes.append(
                f"no channel fell below the threshold: nothing to prune (raise --slim penalty above {config.penalty})"
            )
        return PassResult(model=model, changes=changes, skipped=skipped, notes=notes, summary=summary)


def _scale_figures(module: "nn.Module") -> dict[str, float]:
    scale = module.weight.detach().abs()
    return {"mean": round(float(scale.mean()), 6), "l1_over_l2": _l1_over_l2(scale)}


def _l1_over_l2(scale) -> float:
    """||scale||_1 / ||scale||_2: from 1 (one live channel) to sqrt(channels) (all equal)."""
    return round(float(scale.abs().sum() / scale.norm().clamp_min(1e-12)), 4)


def zero_dead_channels(
    model: "nn.Module", threshold: float, max_ratio: float, scales_before: dict[str, dict[str, float]] | None = None
) -> list[dict[str, Any]]:
    """Set scale and shift of every dead channel to 0 (see the module docstring); one change row per layer
    with the channel counts and, before training and before zeroing, the mean |scale| and `l1_over_l2`.

    Within a layer, the channels die smallest |scale| first, and never more than `max_ratio` of them.
    """
    import torch

    from exporter.training.losses import scale_layers

    rows = []
    with torch.no_grad():
        for name, module in scale_layers(model):
            scale = module.weight.detach().abs()
            limit = int(max_ratio * scale.numel())
            candidates = torch.nonzero(scale < threshold * scale.max()).flatten()
            dead = candidates[scale[candidates].argsort()][:limit].sort().values
            module.weight[dead] = 0.0
            if module.bias is not None:
                module.bias[dead] = 0.0
            rows.append(
                {
                    "layer": name,
                    "channels": int(scale.numel()),
                    "dead_channels": int(dead.numel()),
                    "mean_scale": [(scales_before or {}).get(name, {}).get("mean"), round(float(scale.mean()), 6)],
                    "l1_over_l2": [(scales_before or {}).get(name, {}).get("l1_over_l2"), _l1_over_l2(scale)],
                }
            )
    return rows


def producers_of_batchnorms(model: "nn.Module") -> dict[str, str]:
    """BatchNorm layer name -> the conv or linear layer whose output it normalises (torch.fx trace)."""
    from torch import fx, nn

    graph = model.graph if isinstance(model, fx.GraphModule) else fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    found = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.modules.batchnorm._BatchNorm):
            continue
        source = node.args[0] if node.args else None
        if isinstance(source, fx.Node) and source.op == "call_module":
            if isinstance(modules.get(source.target), (nn.modules.conv._ConvNd, nn.Linear)):
                found[node.target] = source.target
    return found


def prune_dead_channels(
    model: "nn.Module", ctx: PassContext, rows: list[dict[str, Any]], notes: list[str]
) -> tuple["nn.Module", PassResult]:
    """Run `prune` with `importance=bn_scale` and each layer's dead fraction as its ratio."""
    try:
        producers = producers_of_batchnorms(model)
    except Exception as exc:  # fx raises many types for untraceable models
        notes.append(
            f"torch.fx could not trace the model ({type(exc).__name__}), so the dead channels stay zeroed, unpruned"
        )
        return model, PassResult(model)
    ratios = []
    for row in rows:
        if row["dead_channels"] and row["layer"] in producers:
            ratios.append((row["dead_channels"] / row["channels"], producers[row["layer"]]))
        elif row["dead_channels"]:
            notes.append(f"{row['layer']} follows no conv or linear layer: its dead channels stay zeroed, unpruned")
    ratios.sort()
    prune_class = PASSES.get("prune")
    layer_ratios = [f"{layer}={ratio!r}" for ratio, layer in ratios]
    config = prune_class.Config.from_dict(
        # repair none: a dead channel's output is exactly 0, so cutting it is exact; re-estimating BatchNorm would not be.
        {"ratio": 0.0, "importance": "bn_scale", "layer_ratios": layer_ratios, "repair": "none"}, "prune"
    )
    result = prune_class(config).apply(model, ctx)
    result.summary["layer_ratios"] = layer_ratios
    # prune reports on every group, including those left at ratio 0: keep what concerns the layers slim asked for.
    asked = [layer for _, layer in ratios]
    result.notes = [note for note in result.notes if any(layer in note for layer in asked)]
    result.skipped = [row for row in result.skipped if row.get("layer") in asked]
    return result.model, result
