"""Pass `distill`: recover the accuracy that pruning and low-rank decomposition lost.

Knowledge distillation: the student (the model after the preceding passes) is trained to match the
teacher (the original model, untouched) on the user's data: the calibration set, or any
calibration source given as `data`. Classifier logits get soft targets, `T^2 * KL` between
temperature-scaled outputs, mixed with cross-entropy on labels when the data has them
(`alpha` weighs the soft part; without labels only soft targets are used); other outputs get MSE
or cosine (`loss`). After each epoch the student is measured on the held-out split and the best
one is kept. Checkpoints after each epoch let `resume` continue a stopped run. `nproc` > 1 trains
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
    Rendezvous,
    TrainSettings,
    check_training_settings,
)

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class DistillConfig(PassConfig):
    """Settings of the `distill` pass (CLI: `--distill-<field>`; `--distill` switches it on)."""

    temperature: float = setting(4.0, "softmax temperature of the soft targets (higher = softer)")
    alpha: float = setting(0.9, "weight of the soft (teacher) loss; 1 - alpha goes to labels when the data has them")
    epochs: int | None = setting(None, "passes over the data; none = 10, or no limit with --distill-minutes")
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
        from exporter.training import run_recovery

        config: DistillConfig = self.config
        settings = TrainSettings.from_config(config, seed=ctx.seed)
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
        )
        return PassResult(model=run.student, notes=run.notes, summary=run.summary)
