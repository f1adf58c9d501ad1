"""Pass `distill`: recover the accuracy that pruning and low-rank decomposition lost.

Knowledge distillation: the student (the model after the preceding passes) is trained to match the
teacher (the original model, untouched) on the user's data: the calibration set, or any
calibration source given as `data`. Classifier logits get soft targets, `T^2 * KL` between
temperature-scaled outputs, mixed with cross-entropy on labels when the data has them
(`alpha` weighs the soft part; without labels only soft targets are used); other outputs get MSE
or cosine (`loss`). After each epoch the student is measured on the held-out split and the best
one is kept; `patience` epochs without a better student end the run.

Little data (a few hundred calibration images) goes further with `augment`: every step shows the
student new crops, flips and mixtures of the samples, which the teacher labels on the spot
(`training/augment.py`; `auto` augments image-like inputs only). When an earlier pass pruned the
model, `features` also matches the outputs of up to `feature_layers` pruned layers to the
teacher's same layers at the kept channels (`training/features.py`, weighed by `feature_weight`).
Without `epochs` or `minutes` the run is sized to show the student about TARGET_SAMPLES samples.
Checkpoints after each epoch let `resume` continue a stopped run. `nproc` > 1 trains
with DistributedDataParallel under torchrun (gloo on CPU, nccl on CUDA): the global batch is split
across processes, so the same seed and batch give the same student as one process. Across
machines, run the same export on each with `nnodes`, its own `node_rank` and the `rdzv_endpoint`
(`host:port`) of node 0. The record has held-out agreement and accuracy before and after, the
best epoch, epochs run, samples seen and seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from exporter.errors import PlanError
from exporter.passes.base import CompressionPass, PassConfig, PassContext, PassResult, register_pass, setting
from exporter.training.settings import (
    ENDPOINT_PATTERN,
    MAX_AUTO_EPOCHS,
    Rendezvous,
    TrainSettings,
    check_training_settings,
)

if TYPE_CHECKING:
    from torch import nn

TARGET_SAMPLES = 45_000
"""Samples the student sees when neither `epochs` nor `minutes` is set (at least 10, at most 300 epochs).

On the MobileNetV2 pruned to 4x (300 calibration images, 200 held out) the held-out loss was still falling at
150 epochs (best 0.060 in a 67-epoch run, 0.044 at epoch 150); the kept student's test accuracy went from 0.962
(20,000 samples) to 0.967 (45,000)."""


@dataclass(frozen=True)
class DistillConfig(PassConfig):
    """Settings of the `distill` pass (CLI: `--distill-<field>`; `--distill` switches it on)."""

    temperature: float = setting(4.0, "softmax temperature of the soft targets (higher = softer)")
    alpha: float = setting(0.9, "weight of the soft (teacher) loss; 1 - alpha goes to labels when the data has them")
    epochs: int | None = setting(
        None,
        f"passes over the data; none = enough for about {TARGET_SAMPLES:,} samples (10 to {MAX_AUTO_EPOCHS} epochs), "
        "or no limit with --distill-minutes",
    )
    patience: int | None = setting(
        20,
        "stop after this many epochs without a better held-out agreement or loss; none = never stop early "
        "(10 stopped MobileNetV2 at epoch 22 of 84, 12 points of accuracy short: gains come late, as the rate decays)",
    )
    augment: Literal["auto", "none", "light", "strong"] = setting(
        "auto",
        "augmentation of the training batches (crops, flips, noise, mixup; the teacher labels the same views): "
        "auto = light for image inputs (N,C,H,W floats), none otherwise",
    )
    flip: Literal["auto", "on", "off"] = setting(
        "auto",
        "mirror images left-right when augmenting: auto = when the teacher's class stays the same on 9 in 10 "
        "mirrored held-out images (photos yes; digits, text no)",
    )
    features: Literal["auto", "none"] = setting(
        "auto", "match pruned layers' outputs to the teacher's kept channels: auto = when a pass pruned the model"
    )
    feature_weight: float = setting(0.1, "weight of the feature-matching loss against the output loss")
    feature_layers: int = setting(4, "how many pruned layers to match at most (evenly spaced, the deepest included)")
    minutes: float | None = setting(None, "time budget in minutes; training stops when it is spent")
    lr: float = setting(1e-3, "peak learning rate")
    optimizer: Literal["adam", "adamw", "sgd"] = setting("adam", "optimizer (sgd uses Nesterov momentum 0.9)")
    schedule: Literal["cosine", "constant"] = setting(
        "cosine", "learning-rate schedule over the epochs or the time budget"
    )
    weight_decay: float = setting(0.0, "weight decay of the optimizer")
    batch_size: int = setting(32, "global batch size (split across processes)")
    loss: Literal["auto", "kl", "mse", "cosine"] = setting(
        "auto", "loss against the teacher: kl for class logits, mse or cosine for embeddings and regression"
    )
    batchnorm: Literal["train", "frozen"] = setting(
        "train", "BatchNorm statistics: re-estimated from batches (train) or kept as they are (frozen)"
    )
    data: str | None = setting(None, "training data: any calibration source; none = the calibration set")
    resume: bool = setting(False, "continue from the checkpoint in the checkpoint folder")
    checkpoint_dir: str | None = setting(None, "checkpoint folder; none = .<out>.checkpoints/distill beside the output folder (kept until a run succeeds)")
    nproc: int = setting(1, "training processes on this machine (DistributedDataParallel via torchrun)")
    nnodes: int = setting(1, "machines taking part in distributed training")
    node_rank: int = setting(0, "this machine's rank (0 .. nnodes-1)")
    rdzv_endpoint: str | None = setting(None, "host:port of node 0 for a run across machines")
    teacher_device: str = setting("cpu", "device of the teacher (cpu, cuda, cuda:N, mps)")
    student_device: str = setting("cpu", "device of the student (cpu, cuda, cuda:N, mps)")
    seed: int | None = setting(None, "random seed of the data order; none = the plan's seed")

    def validate(self) -> None:
        """Positive temperature, lr, batch, epochs, minutes, nproc, nnodes; alpha in [0, 1]; a global batch
        that splits evenly over every process; a node rank below nnodes; an endpoint for several machines;
        device names torch knows."""
        check_training_settings(self, "distill")
        if self.patience is not None and self.patience < 1:
            raise PlanError(f"bad distill patience {self.patience}: expected 1 or more epochs, or none")
        if self.feature_weight < 0:
            raise PlanError(f"bad distill feature_weight {self.feature_weight}: expected 0 or more")
        if self.feature_layers < 1:
            raise PlanError(f"bad distill feature_layers {self.feature_layers}: expected 1 or more")
        if self.temperature <= 0:
            raise PlanError(f"bad distill temperature {self.temperature}: expected a positive number such as 4")
        if not 0.0 <= self.alpha <= 1.0:
            raise PlanError(
                f"bad distill alpha {self.alpha}: expected a weight between 0 and 1 (1 = soft targets only)"
            )
        for name in ("nproc", "nnodes"):
            if getattr(self, name) < 1:
                raise PlanError(f"bad distill {name} {getattr(self, name)}: expected 1 or more")
        if not 0 <= self.node_rank < self.nnodes:
            raise PlanError(
                f"bad distill node_rank {self.node_rank}: expected 0 .. {self.nnodes - 1} for {self.nnodes} machine(s)"
            )
        world = self.nproc * self.nnodes
        if self.batch_size % world:
            raise PlanError(
                f"distill batch_size {self.batch_size} does not split over {world} processes: use a multiple of {world}"
            )
        if self.rdzv_endpoint is not None and not ENDPOINT_PATTERN.match(self.rdzv_endpoint):
            raise PlanError(
                f"bad distill rdzv_endpoint {self.rdzv_endpoint!r}: expected host:port, e.g. 10.0.0.1:29500"
            )
        if self.nnodes > 1 and self.rdzv_endpoint is None:
            raise PlanError(
                f"distill nnodes {self.nnodes} needs --distill-rdzv-endpoint host:port (the address of node 0)"
            )


@register_pass
class DistillPass(CompressionPass):
    """Train the compressed model to match the original one; keeps the best student on held-out data."""

    name = "distill"
    Config = DistillConfig
    order = 90
    shorthand = None
    summary_line = "agreement {agreement_before} -> {agreement_after} in {epochs_run} epochs, {seconds}s"

    def apply(self, model: "nn.Module", ctx: PassContext) -> PassResult:
        from exporter.passes._lineage import kept_channels
        from exporter.training import run_recovery
        from exporter.training.features import choose_layers

        config: DistillConfig = self.config
        settings = TrainSettings.from_config(config, seed=ctx.seed, target_samples=TARGET_SAMPLES)
        layers, notes = [], []
        lineage = kept_channels(model)
        if config.features == "auto" and lineage and config.feature_weight > 0:
            layers, notes = choose_layers(model, ctx.teacher, lineage, config.feature_layers)
        rendezvous = Rendezvous(
            nproc=config.nproc, nnodes=config.nnodes, node_rank=config.node_rank, endpoint=config.rdzv_endpoint
        )
        run = run_recovery(
            model,
            ctx,
            settings,
            pass_name=self.name,
            data_path=config.data,
            rendezvous=rendezvous,
            checkpoint_dir=config.checkpoint_dir,
            resume=config.resume,
            feature_layers=layers,
        )
        return PassResult(model=run.student, notes=notes + run.notes, summary=run.summary)
