"""Running the training loop in several processes with torchrun and DistributedDataParallel.

The parent writes a job folder: the student and the teacher (`torch.save` of the whole module, or
`torch.jit.save` for TorchScript; our own temporary files, read back only by our worker), the
training and held-out data as `.npy` files (copied one batch at a time, then memory-mapped by every
worker), and `job.json` (settings, input names, checkpoint folder). It then runs

    python -m torch.distributed.run <rendezvous flags> -m exporter.training.worker <job folder>

with `PYTHONPATH` set to the parent's import path (so the workers can import the model's classes)
and `OMP_NUM_THREADS` = cores / processes unless already set. The first process of the machine
writes `result.pt` (the best student's weights and the outcome), which the parent loads into its
own student. A worker that fails writes `error-<rank>.json`; its message comes back as a
`CompressionError`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from exporter.errors import CompressionError
from exporter.progress import progress_enabled
from exporter.training.data import TrainData, write_arrays
from exporter.training.features import FeatureLayer
from exporter.training.loop import TrainOutcome
from exporter.training.settings import Rendezvous, TrainSettings

RESULT_NAME = "result.pt"


def save_module(module: nn.Module, path: Path, what: str) -> str:
    """Write `module` for a worker; return its format (`torchscript` or `pickle`)."""
    try:
        if isinstance(module, torch.jit.ScriptModule):
            torch.jit.save(module, str(path))
            return "torchscript"
        torch.save(module, path)
        return "pickle"
    except Exception as exc:  # pickling fails with many types (PicklingError, AttributeError, TypeError)
        raise CompressionError(
            f"nproc > 1 needs the {what} saved for the worker processes, but torch.save failed ({exc}); its class "
            "must be defined at the top level of an importable module, or use nproc 1"
        ) from None


def load_module(path: Path, kind: str) -> nn.Module:
    """Read back what `save_module` wrote (trusted: our own file)."""
    if kind == "torchscript":
        return torch.jit.load(str(path), map_location="cpu")
    return torch.load(path, map_location="cpu", weights_only=False)


def worker_command(job: Path, rendezvous: Rendezvous, module: str = "exporter.training.worker") -> list[str]:
    """The torchrun command line that runs the worker `module` (training by default) on `job`."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *rendezvous.torchrun_flags(),
        "-m",
        module,
        str(job),
    ]


def worker_environment(nproc: int) -> dict[str, str]:
    """The parent's environment plus its import path, and one share of the cores per process."""
    env = dict(os.environ)
    paths = [os.path.abspath(p or os.curdir) for p in sys.path if os.path.isdir(p or os.curdir)]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return env


def launch(
    student: nn.Module,
    teacher: nn.Module,
    train_data: TrainData,
    val_data: TrainData,
    input_names: Sequence[str],
    settings: TrainSettings,
    rendezvous: Rendezvous,
    *,
    checkpoint_dir: Path | None,
    checkpoint_flag: str,
    resume: bool,
    desc: str,
    scratch: Path | None = None,
    feature_layers: Sequence[FeatureLayer] = (),
) -> tuple[nn.Module, TrainOutcome]:
    """Train `student` with `rendezvous.world_size` processes; load the result into `student` and return it."""
    if scratch is not None:
        Path(scratch).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ddp-job-", dir=scratch) as folder:
        job = Path(folder)
        write_arrays(train_data, job / "train", desc="writing distillation data")
        write_arrays(val_data, job / "val", desc="writing held-out data")
        spec = {
            "settings": settings.to_dict(),
            "input_names": list(input_names),
            "student_format": save_module(student, job / "student.pt", "student"),
            "teacher_format": save_module(teacher, job / "teacher.pt", "teacher"),
            "checkpoint_dir": str(checkpoint_dir) if checkpoint_dir else None,
            "checkpoint_flag": checkpoint_flag,
            "resume": resume,
            "desc": desc,
            "feature_layers": [layer.to_dict() for layer in feature_layers],
            "progress": progress_enabled(),
        }
        (job / "job.json").write_text(json.dumps(spec, indent=2))
        log_path = job / "torchrun.log"
        with open(log_path, "w") as log:
            completed = subprocess.run(
                worker_command(job, rendezvous),
                env=worker_environment(rendezvous.nproc),
                stdout=log,
                stderr=None if spec["progress"] else log,
                check=False,
            )
        result_path = job / RESULT_NAME
        if completed.returncode != 0 or not result_path.is_file():
            raise CompressionError(_failure_message(job, completed.returncode, log_path))
        result = torch.load(result_path, map_location="cpu", weights_only=False)
    student.load_state_dict(result["student"])
    return student.eval(), TrainOutcome.from_dict(result["outcome"])


def _failure_message(job: Path, returncode: int, log_path: Path) -> str:
    """The first worker's own error when it wrote one, else the end of torchrun's log."""
    errors = sorted(job.glob("error-*.json"))
    if errors:
        error = json.loads(errors[0].read_text())
        return f"distributed training failed on rank {error['rank']}: {error['message']}"
    tail = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()][-3:]
    detail = " | ".join(tail) if tail else "no output"
    return f"torchrun exited with code {returncode} before training finished: {detail}"
