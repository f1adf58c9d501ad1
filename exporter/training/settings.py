"""What one training run does, as frozen plain data that travels to torchrun workers as JSON."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from exporter.errors import PlanError

DEVICE_PATTERN = re.compile(r"^(cpu|cuda|mps|xpu)(:\d+)?$")
"""Device strings the passes accept: `cpu`, `cuda`, `cuda:1`, `mps`, `xpu:0`."""

ENDPOINT_PATTERN = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")
"""A rendezvous endpoint: `host:port` (IPv6 hosts in brackets)."""

DEFAULT_EPOCHS = 10
"""Epochs when neither `epochs` nor a time budget is given (and at least this many with `target_samples`)."""

MAX_AUTO_EPOCHS = 300
"""The most epochs `target_samples` asks for (a handful of samples would otherwise ask for thousands)."""


@dataclass(frozen=True)
class TrainSettings:
    """Settings of one student-training run (the passes translate their configs into this).

    `batch_size` is the global batch: with N processes each one takes `batch_size / N` samples of
    every step, so the same seed and batch size give the same student whatever N is. `epochs=None`
    means 10 epochs without a time budget and "until the budget is spent" with one. `alpha` weighs
    the soft (teacher) loss against the hard (label) loss. `l1_penalty` > 0 adds
    `l1_penalty` times the L1 norm of the BatchNorm scales to the loss (the `slim` pass; per layer
    divided by the L2 norm when `l1_normalized`), and `scale_lr` gives those scales their own
    learning rate. `keep` is `best` (the
    student with the best held-out figures, the untrained one included) or `last` (the student
    after the final step, which `slim` needs: the penalty lowers agreement on purpose).
    `augment` (`auto`, `none`, `light`, `strong`; `flip` `on`, `off` or `auto`: mirrored images when the teacher's
    class does not change on them) is the
    augmentation of `augment.py`; `feature_weight` weighs the feature-matching loss (the layers
    come with the run); `patience` stops the run after that many epochs without a better student.
    `target_samples`, when set and neither `epochs` nor `minutes` is, sets the epochs so that
    the student sees about that many samples (between DEFAULT_EPOCHS and MAX_AUTO_EPOCHS)."""

    epochs: int | None = None
    minutes: float | None = None
    lr: float = 1e-3
    optimizer: str = "adam"
    schedule: str = "cosine"
    weight_decay: float = 0.0
    batch_size: int = 32
    loss: str = "auto"
    temperature: float = 4.0
    alpha: float = 0.9
    batchnorm: str = "train"
    l1_penalty: float = 0.0
    l1_normalized: bool = False
    scale_lr: float | None = None
    keep: str = "best"
    augment: str = "none"
    flip: str = "auto"
    feature_weight: float = 0.0
    patience: int | None = None
    target_samples: int | None = None
    seed: int = 0
    teacher_device: str = "cpu"
    student_device: str = "cpu"

    @property
    def max_epochs(self) -> int | None:
        """The epoch limit: `epochs`, else 10 without a time budget, else None (the budget decides)."""
        if self.epochs is not None:
            return self.epochs
        return DEFAULT_EPOCHS if self.minutes is None else None

    def epoch_limit(self, sample_count: int) -> int | None:
        """The epoch limit for `sample_count` training samples: `max_epochs`, or the `target_samples` rule."""
        if self.epochs is None and self.minutes is None and self.target_samples:
            wanted = -(-self.target_samples // max(sample_count, 1))
            return min(max(wanted, DEFAULT_EPOCHS), MAX_AUTO_EPOCHS)
        return self.max_epochs

    @classmethod
    def from_config(cls, config: Any, seed: int, **overrides: Any) -> "TrainSettings":
        """Settings from a pass config: every field the two share by name, `seed` unless the config
        sets one, then `overrides` (for fields a pass names differently)."""
        shared = {f.name for f in dataclasses.fields(cls)} & {f.name for f in dataclasses.fields(config)}
        values = {name: getattr(config, name) for name in shared}
        values["seed"] = seed if values.get("seed") is None else values["seed"]
        return cls(**{**values, **overrides})

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for the worker's job file and the checkpoint fingerprint)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainSettings":
        """Inverse of `to_dict`."""
        return cls(**data)


@dataclass(frozen=True)
class Rendezvous:
    """Where the processes of a distributed run meet (torchrun's static rendezvous).

    One machine (`nnodes == 1`, no `endpoint`): torchrun `--standalone`. Several machines: every
    machine runs the same export with its own `node_rank`, and `endpoint` ("host:port") names
    the machine of node 0, which must be reachable from the others.
    """

    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    endpoint: str | None = None

    @property
    def world_size(self) -> int:
        """Processes in the whole run, over every machine."""
        return self.nproc * self.nnodes

    def torchrun_flags(self) -> list[str]:
        """The torchrun command-line flags for this rendezvous."""
        flags = ["--nproc_per_node", str(self.nproc)]
        if self.nnodes == 1 and self.endpoint is None:
            return ["--standalone", *flags]
        host, _, port = (self.endpoint or "127.0.0.1:29500").rpartition(":")
        return [
            *flags,
            "--nnodes",
            str(self.nnodes),
            "--node_rank",
            str(self.node_rank),
            "--master_addr",
            host,
            "--master_port",
            port,
        ]

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form."""
        return dataclasses.asdict(self)


def device_syntax_error(value: str, where: str) -> str | None:
    """One error line when `value` is not a device string the passes accept, else None."""
    if DEVICE_PATTERN.match(value):
        return None
    return f"bad device {value!r} for {where}: expected cpu, cuda, cuda:N, mps or xpu"


def check_training_settings(config: Any, pass_name: str) -> None:
    """The `PlanError` checks the training passes share: positive epochs, minutes, lr and batch size,
    non-negative weight decay, known device names."""
    epochs = getattr(config, "epochs", None)
    if epochs is not None and epochs < 1:
        raise PlanError(f"bad {pass_name} epochs {epochs}: expected 1 or more")
    minutes = getattr(config, "minutes", None)
    if minutes is not None and minutes <= 0:
        raise PlanError(f"bad {pass_name} minutes {minutes}: expected a positive time budget")
    if config.lr <= 0:
        raise PlanError(f"bad {pass_name} lr {config.lr}: expected a positive learning rate such as 0.001")
    if config.batch_size < 1:
        raise PlanError(f"bad {pass_name} batch_size {config.batch_size}: expected 1 or more")
    if getattr(config, "weight_decay", 0.0) < 0:
        raise PlanError(f"bad {pass_name} weight_decay {config.weight_decay}: expected 0 or more")
    for name in ("teacher_device", "student_device"):
        if hasattr(config, name):
            error = device_syntax_error(getattr(config, name), f"{pass_name} {name}")
            if error:
                raise PlanError(error)
