"""One torchrun process of a distributed training run: `python -m exporter.training.worker <job folder>`.

Reads the job folder `ddp.launch` wrote, joins the process group (nccl when the student is on
CUDA, gloo otherwise), trains with `loop.train`, and on the first process of each machine writes
`result.pt`. Any failure is written to `error-<rank>.json` before the process exits with code 1,
so the parent can report the worker's own message.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import traceback
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from exporter.errors import ExporterError
from exporter.progress import set_progress
from exporter.training.data import ArrayData
from exporter.training.ddp import RESULT_NAME, load_module
from exporter.training.features import FeatureLayer
from exporter.training.loop import World, train
from exporter.training.settings import TrainSettings


def main(argv: list[str] | None = None) -> int:
    """Run this process's share of the job in `argv[0]`; return the exit code."""
    job = Path((argv if argv is not None else sys.argv[1:])[0])
    world = World(
        rank=int(os.environ["RANK"]),
        size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ["LOCAL_RANK"]),
    )
    try:
        spec = json.loads((job / "job.json").read_text())
        settings = _per_process_devices(TrainSettings.from_dict(spec["settings"]), world.local_rank)
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        backend = "nccl" if settings.student_device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(torch.device(settings.student_device))
        dist.init_process_group(backend, timeout=timedelta(minutes=30))
        set_progress(bool(spec["progress"]))
        student = load_module(job / "student.pt", spec["student_format"])
        teacher = load_module(job / "teacher.pt", spec["teacher_format"]).eval()
        checkpoint_dir = Path(spec["checkpoint_dir"]) if spec["checkpoint_dir"] else None
        student, outcome = train(
            student,
            teacher,
            ArrayData.load(job / "train"),
            ArrayData.load(job / "val"),
            spec["input_names"],
            settings,
            world=world,
            checkpoint_dir=checkpoint_dir,
            checkpoint_flag=spec["checkpoint_flag"],
            resume=bool(spec["resume"]),
            desc=spec["desc"],
            feature_layers=[FeatureLayer.from_dict(layer) for layer in spec.get("feature_layers", [])],
        )
        if world.writes_files:
            temporary = job / (RESULT_NAME + ".tmp")
            torch.save({"student": student.state_dict(), "outcome": outcome.to_dict()}, temporary)
            os.replace(temporary, job / RESULT_NAME)
        return 0
    except BaseException as exc:
        message = str(exc) if isinstance(exc, ExporterError) else f"{type(exc).__name__}: {exc}"
        (job / f"error-{world.rank}.json").write_text(
            json.dumps({"rank": world.rank, "message": message, "traceback": traceback.format_exc()})
        )
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _per_process_devices(settings: TrainSettings, local_rank: int) -> TrainSettings:
    """A bare `cuda` means this process's own GPU, `cuda:<local rank>`; explicit indices stay."""
    changes = {
        name: f"cuda:{local_rank}"
        for name in ("student_device", "teacher_device")
        if getattr(settings, name) == "cuda"
    }
    return dataclasses.replace(settings, **changes)


if __name__ == "__main__":
    sys.exit(main())
