"""The training loop: one code path for a single process and for every DistributedDataParallel rank.

Rules:
- The teacher runs in eval mode without gradients on its own device; its outputs move to the
  student's device. The caller's teacher is never changed (it is copied when it has to move).
- The student trains in train mode; with `batchnorm="frozen"` its BatchNorm layers stay in eval
  mode (running statistics fixed, scales and shifts still learn). With several processes and
  `batchnorm="train"`, batch statistics are shared across processes (`syncbn`).
- Steps follow `data.epoch_steps`; the loss is summed per sample and divided by the global step
  size, plus the L1 penalty on normalisation scales (`losses.l1_scale_penalty`); the learning
  rate follows `optim.lr_factor`.
- With augmentation (`augment`), every process augments the whole global step the same way, then
  trains on its chunk; teacher and student see the same augmented samples. Mixed samples get mixed
  label distributions for the hard-target term.
- With `feature_layers` and `feature_weight` > 0, `feature_weight` times the feature-matching loss
  (`features.FeatureMatch`) is added per sample.
- Before the first epoch and after each one, the student is measured on the held-out set; the
  best one (lowest loss, then highest top-1 agreement; epoch 0 is the student as it came) is
  what the run returns, or the last one with `keep="last"`. With `patience`, the run stops when
  `patience` epochs in a row brought neither a better held-out agreement nor a lower held-out loss
  (rank 0 decides for every process).
- A time budget stops the run between steps; with several processes the elapsed time is the
  maximum over processes, so they all stop at the same step.
- After each epoch (and every `CHECKPOINT_SECONDS` within a long epoch) the first process of each
  machine writes a checkpoint; `resume` continues from the next step it records.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from exporter.errors import CompressionError
from exporter.progress import progress_bar
from exporter.training import checkpoint as ckpt
from exporter.training.augment import augment, chunk_positions, decide_flip, resolve_mode
from exporter.training.data import TrainData, epoch_steps, shard, steps_per_epoch
from exporter.training.devices import resolve_device
from exporter.training.evaluate import TeacherCache, evaluate, forward, score
from exporter.training.features import FeatureLayer, FeatureMatch
from exporter.training.losses import DistillationLoss, l1_scale_penalty, resolve_kinds
from exporter.training.optim import build_optimizer, lr_factor, scale_lr
from exporter.training.settings import TrainSettings
from exporter.training.syncbn import share_batch_statistics

CHECKPOINT_SECONDS = 600.0
"""Also write a checkpoint mid-epoch when this many seconds passed since the last one."""


@dataclass(frozen=True)
class World:
    """This process's place in the run: global rank, number of processes, rank on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def writes_files(self) -> bool:
        """The first process of each machine writes checkpoints and the result."""
        return self.local_rank == 0

    @property
    def shows_progress(self) -> bool:
        """Only the first process draws the progress bar."""
        return self.rank == 0


@dataclass
class TrainOutcome:
    """What a run did. `history[0]` is the student before training (epoch 0); epochs count from 1."""

    history: list[dict[str, Any]]
    best_epoch: int
    epochs_done: int
    epochs_this_run: int
    resumed_at: dict[str, int] | None
    samples_seen: int
    seconds: float
    stopped_by: str
    loss_kinds: tuple[str, ...]
    best: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    augment: str = "none"
    feature_layers: list[str] = field(default_factory=list)

    @property
    def before(self) -> dict[str, Any]:
        """Held-out figures of the student as it came."""
        return self.history[0]

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (the torchrun worker sends it back as JSON)."""
        return dict(self.__dict__, loss_kinds=list(self.loss_kinds))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainOutcome":
        """Inverse of `to_dict`."""
        return cls(**dict(data, loss_kinds=tuple(data["loss_kinds"])))


def train(
    student: nn.Module,
    teacher: nn.Module,
    train_data: TrainData,
    val_data: TrainData,
    input_names: Sequence[str],
    settings: TrainSettings,
    *,
    world: World = World(),
    checkpoint_dir: Path | None = None,
    checkpoint_flag: str = "the checkpoint folder",
    resume: bool = False,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    desc: str = "training",
    feature_layers: Sequence[FeatureLayer] = (),
) -> tuple[nn.Module, TrainOutcome]:
    """Train `student` (changed in place) to match `teacher` on `train_data`; return the kept student and the outcome."""
    names = list(input_names)
    student_device = resolve_device(settings.student_device, "student_device")
    teacher_device = resolve_device(settings.teacher_device, "teacher_device")
    teacher = teacher_on_device(teacher, teacher_device)
    student.to(student_device)
    torch.manual_seed(settings.seed + world.rank)

    first_rows = list(range(min(len(val_data), 2)))
    with torch.no_grad():
        probe = forward(teacher, val_data.batch(first_rows)[0], names, teacher_device)
    loss_fn = DistillationLoss(resolve_kinds(settings.loss, probe), settings.temperature, settings.alpha)
    notes = []
    if loss_fn.kinds[0] == "kl" and not train_data.has_labels:
        notes.append("the distillation data has no labels: trained on soft targets only")
    elif loss_fn.kinds[0] == "kl" and not loss_fn.uses_labels:
        notes.append("alpha is 1.0: trained on soft targets only, labels unused")

    augment_mode = resolve_mode(settings.augment, val_data.batch(first_rows)[0], settings.epoch_limit(len(train_data)))
    flip = False
    if augment_mode != "none":
        probe, _ = val_data.batch(list(range(min(len(val_data), settings.batch_size))))
        flip, why = decide_flip(settings.flip, lambda x: forward(teacher, x, names, teacher_device)[0], probe)
        notes.append(f"augmented the training batches ({augment_mode}; the teacher labels the same views); {why}")
    matcher = _feature_match(student, teacher, feature_layers, val_data, names, settings, notes)
    val_cache = TeacherCache.build(teacher, val_data, names, settings.batch_size, teacher_device)
    optimizer = build_optimizer(student, settings.optimizer, settings.lr, settings.weight_decay, settings.scale_lr)
    sample_count = len(train_data)
    per_epoch = steps_per_epoch(sample_count, settings.batch_size)
    max_epochs = settings.epoch_limit(sample_count)
    total_steps = max_epochs * per_epoch if max_epochs is not None else None
    budget = settings.minutes * 60.0 if settings.minutes is not None else None

    state = _fresh_state()
    run_print = ckpt.fingerprint(student, sample_count, settings.to_dict())
    resumed_at = None
    if resume and checkpoint_dir is not None:
        saved = ckpt.load_checkpoint(checkpoint_dir)
        if saved is None:
            notes.append(f"--resume: no checkpoint in {checkpoint_dir}, started from the beginning")
        else:
            path = checkpoint_dir / ckpt.CHECKPOINT_NAME
            ckpt.check_fingerprint(saved["fingerprint"], run_print, path, checkpoint_flag)
            student.load_state_dict(saved["student"])
            optimizer.load_state_dict(saved["optimizer"])
            torch.set_rng_state(saved["rng"])
            state = {k: saved[k] for k in _fresh_state()}
            resumed_at = {"epoch": state["epoch"], "step": state["step"]}
    if not state["history"]:
        before = evaluate(student, val_data, val_cache, names, loss_fn, student_device)
        state["history"] = [_entry(0, before, 0, 0.0)]
        state["best"] = _candidate(0, before, state["history"][0], student)

    model = _wrap(student, world, settings)
    undo_sharing = share_batch_statistics(student) if world.size > 1 and settings.batchnorm == "train" else None
    bar = progress_bar(desc, total=total_steps, unit="step") if world.shows_progress else _SilentBar()
    bar.update(state["epoch"] * per_epoch + state["step"])
    start, last_save = time.perf_counter(), time.perf_counter()
    prior_seconds = state["seconds"]
    epochs_this_run, stopped_by = 0, "epochs"

    def elapsed() -> float:
        seconds = prior_seconds + time.perf_counter() - start
        if world.size > 1 and budget is not None:
            shared = torch.tensor([seconds], dtype=torch.float64)
            dist.all_reduce(shared, op=dist.ReduceOp.MAX)
            seconds = float(shared)
        return seconds

    try:
        while max_epochs is None or state["epoch"] < max_epochs:
            epoch = state["epoch"]
            _set_train_mode(student, settings.batchnorm)
            tally = np.zeros(3)  # local sums: loss over samples, samples the student agreed on, samples
            steps = epoch_steps(sample_count, settings.batch_size, settings.seed, epoch)
            for step in range(state["step"], len(steps)):
                spent = elapsed() if budget is not None else 0.0
                if budget is not None and spent >= budget:
                    stopped_by = "time"
                    break
                done = epoch * per_epoch + step
                progress = max(done / total_steps if total_steps else 0.0, spent / budget if budget else 0.0)
                scale_lr(optimizer, lr_factor(settings.schedule, progress))
                tally += _step(
                    model, student, teacher, train_data, steps[step], (augment_mode, flip, epoch, step), matcher,
                    names, loss_fn, optimizer, settings, world, student_device, teacher_device,
                )
                state["step"] = step + 1
                state["samples_seen"] += len(steps[step])
                bar.update(1)
                bar.set_postfix(loss=f"{tally[0] / tally[2]:.4f}", agree=_agreement_text(tally, loss_fn))
                if world.writes_files and checkpoint_dir and time.perf_counter() - last_save > CHECKPOINT_SECONDS:
                    state["seconds"] = prior_seconds + time.perf_counter() - start
                    _save(checkpoint_dir, student, optimizer, state, run_print)
                    last_save = time.perf_counter()
            finished_epoch = state["step"] >= len(steps)
            if not tally[2] and not finished_epoch:
                break
            if world.size > 1:
                shared = torch.from_numpy(tally)
                dist.all_reduce(shared)
                tally = shared.numpy()
            metrics = evaluate(student, val_data, val_cache, names, loss_fn, student_device)
            state["seconds"] = prior_seconds + time.perf_counter() - start
            entry = _entry(epoch + 1, metrics, state["samples_seen"], state["seconds"], tally, loss_fn)
            entry["complete"] = finished_epoch
            state["history"].append(entry)
            if settings.keep == "last" or score(metrics) > tuple(state["best"]["score"]):
                state["best"] = _candidate(epoch + 1, metrics, entry, student)
            if finished_epoch:
                state["epoch"], state["step"] = epoch + 1, 0
            epochs_this_run += 1
            if world.writes_files and checkpoint_dir is not None:
                _save(checkpoint_dir, student, optimizer, state, run_print)
                last_save = time.perf_counter()
            if on_epoch_end is not None:
                on_epoch_end(entry)
            if stopped_by == "time":
                break
            if finished_epoch and _out_of_patience(settings.patience, state["history"], world):
                stopped_by = "patience"
                break
    finally:
        bar.close()
        if matcher is not None:
            matcher.close()
        if undo_sharing is not None:
            undo_sharing()

    student.load_state_dict(state["best"]["weights"])
    student.eval()
    outcome = TrainOutcome(
        history=state["history"],
        best_epoch=state["best"]["epoch"],
        epochs_done=state["epoch"],
        epochs_this_run=epochs_this_run,
        resumed_at=resumed_at,
        samples_seen=state["samples_seen"],
        seconds=round(state["seconds"], 3),
        stopped_by=stopped_by,
        loss_kinds=loss_fn.kinds,
        best=state["best"]["entry"],
        notes=notes,
        augment=augment_mode,
        feature_layers=[layer.name for layer in matcher.layers] if matcher is not None else [],
    )
    return student, outcome


def _step(
    model: nn.Module,
    student: nn.Module,
    teacher: nn.Module,
    data: TrainData,
    global_rows: np.ndarray,
    where: tuple[str, bool, int, int],
    matcher: FeatureMatch | None,
    names: list[str],
    loss_fn: DistillationLoss,
    optimizer: torch.optim.Optimizer,
    settings: TrainSettings,
    world: World,
    student_device: torch.device,
    teacher_device: torch.device,
) -> np.ndarray:
    """One optimisation step on this process's chunk of `global_rows` (augmented as `where` = (mode, flip,
    epoch, step) says); returns its sums (loss, agreeing samples, samples)."""
    mode, flip, epoch, step = where
    global_count = len(global_rows)
    mixed = None
    if mode == "none":
        rows = shard(global_rows, world.rank, world.size)
        inputs, labels = data.batch(rows)
    else:
        all_inputs, all_labels = data.batch(global_rows)
        batch = augment(all_inputs, mode, flip, settings.seed, epoch, step)
        positions = chunk_positions(global_count, world.rank, world.size)
        rows = positions
        inputs = {name: array[positions] for name, array in batch.inputs.items()}
        labels = None if all_labels is None else all_labels[positions]
        mixed = (batch, all_labels, positions) if batch.mixed and all_labels is not None else None
    if matcher is not None:
        matcher.set_active(True)
    try:
        with torch.no_grad():
            teacher_out = [t.to(student_device).float() for t in forward(teacher, inputs, names, teacher_device)]
        student_out = forward(model, inputs, names, student_device)
    finally:
        if matcher is not None:
            matcher.set_active(False)
    label_tensor = None
    if labels is not None and loss_fn.uses_labels:
        if mixed is not None:
            targets = mixed[0].label_targets(mixed[1], mixed[2], teacher_out[0].shape[1])
            label_tensor = torch.from_numpy(targets).to(student_device)
        else:
            label_tensor = torch.from_numpy(labels).to(student_device)
    per_sample = loss_fn(student_out, teacher_out, label_tensor)
    if matcher is not None and settings.feature_weight > 0:
        feature_loss = matcher.loss(student_device)
        if feature_loss is not None:
            per_sample = per_sample + settings.feature_weight * feature_loss
    # Sum over the local chunk / global step size, times the process count: DDP's gradient mean
    # then equals the gradient of the mean loss over the whole global step.
    loss = per_sample.sum() * (world.size / global_count)
    if settings.l1_penalty > 0:
        loss = loss + settings.l1_penalty * l1_scale_penalty(student, settings.l1_normalized)
    if not torch.isfinite(loss):
        raise CompressionError(
            f"the training loss became {float(loss)}: lower the learning rate (now {settings.lr}) or the temperature"
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    agreeing = 0.0
    if loss_fn.kinds[0] == "kl":
        agreeing = float((student_out[0].argmax(1) == teacher_out[0].argmax(1)).sum())
    return np.array([float(per_sample.detach().sum()), agreeing, len(rows)])


def _feature_match(
    student: nn.Module,
    teacher: nn.Module,
    layers: Sequence[FeatureLayer],
    val_data: TrainData,
    names: list[str],
    settings: TrainSettings,
    notes: list[str],
) -> FeatureMatch | None:
    """Hooks for feature matching, with shapes checked and scales set on a held-out probe batch (None when off)."""
    if not layers or settings.feature_weight <= 0:
        return None
    student_device = resolve_device(settings.student_device, "student_device")
    teacher_device = resolve_device(settings.teacher_device, "teacher_device")
    matcher = FeatureMatch.attach(student, teacher, layers)
    probe, _ = val_data.batch(list(range(min(len(val_data), settings.batch_size))))
    was_training = student.training
    student.eval()

    def run_both() -> None:
        forward(teacher, probe, names, teacher_device)
        forward(student, probe, names, student_device)

    try:
        notes.extend(matcher.calibrate(run_both))
    finally:
        student.train(was_training)
    if not matcher.layers:
        matcher.close()
        return None
    notes.append(f"matched the features of {', '.join(layer.name for layer in matcher.layers)} to the teacher's")
    return matcher


def _out_of_patience(patience: int | None, history: list[dict[str, Any]], world: World) -> bool:
    """True when neither the held-out agreement nor the held-out loss reached a new best in the last `patience`
    epochs (decided by rank 0 for every process). The loss counts too: on a few dozen held-out samples the
    agreement moves in coarse steps while the student is still getting closer to the teacher."""
    if patience is None:
        return False
    last = 0
    for metric, sign in (("agreement", 1.0), ("loss", -1.0)):
        values = [(sign * h[metric], -h["epoch"]) for h in history if h.get(metric) is not None]
        if values:
            last = max(last, -max(values)[1])
    stop = history[-1]["epoch"] - last >= patience
    if world.size > 1:
        flag = torch.tensor([1 if stop else 0])
        dist.broadcast(flag, 0)
        stop = bool(flag.item())
    return stop


def teacher_on_device(teacher: nn.Module, device: torch.device) -> nn.Module:
    """The teacher in eval mode on `device`: the caller's own module when it is already so, else a copy."""
    current = next((p.device for p in teacher.parameters()), None) if hasattr(teacher, "parameters") else None
    if getattr(teacher, "training", False) or (current is not None and current != device):
        teacher = copy.deepcopy(teacher).to(device).eval()
    return teacher


def _wrap(student: nn.Module, world: World, settings: TrainSettings) -> nn.Module:
    """The module the steps call: the student itself, or the student inside DistributedDataParallel."""
    if world.size == 1:
        return student
    from torch.nn.parallel import DistributedDataParallel

    device = resolve_device(settings.student_device, "student_device")
    device_ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(student, device_ids=device_ids)


class _SilentBar:
    """The progress bar of processes other than the first."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _set_train_mode(student: nn.Module, batchnorm: str) -> None:
    student.train()
    if batchnorm == "frozen":
        for module in student.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def _fresh_state() -> dict[str, Any]:
    return {"epoch": 0, "step": 0, "history": [], "best": None, "samples_seen": 0, "seconds": 0.0}


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _agreement_text(tally: np.ndarray, loss_fn: DistillationLoss) -> str:
    return f"{tally[1] / tally[2]:.3f}" if loss_fn.kinds[0] == "kl" and tally[2] else "-"


def _entry(
    epoch: int,
    metrics: dict[str, Any],
    samples_seen: int,
    seconds: float,
    tally: np.ndarray | None = None,
    loss_fn: DistillationLoss | None = None,
) -> dict[str, Any]:
    """One history row: held-out figures, then the epoch's training loss and agreement (all processes)."""
    entry = {"epoch": epoch, **{k: _round(v) for k, v in metrics.items()}}
    trained = tally is not None and tally[2] > 0
    entry["train_loss"] = _round(float(tally[0] / tally[2])) if trained else None
    classifier = trained and loss_fn is not None and loss_fn.kinds[0] == "kl"
    entry["train_agreement"] = _round(float(tally[1] / tally[2])) if classifier else None
    entry["samples_seen"] = samples_seen
    entry["seconds"] = round(seconds, 3)
    return entry


def _round(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value


def _candidate(epoch: int, metrics: dict[str, Any], entry: dict[str, Any], student: nn.Module) -> dict[str, Any]:
    """The kept-student record: its epoch, score, history row and a CPU copy of its weights."""
    return {"epoch": epoch, "score": score(metrics), "entry": entry, "weights": _cpu_state(student)}


def _save(
    folder: Path, student: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], run_print: dict[str, Any]
) -> None:
    ckpt.save_checkpoint(
        folder,
        {
            **state,
            "student": _cpu_state(student),
            "optimizer": optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "fingerprint": run_print,
        },
    )
