"""Calibration sharded over torchrun processes (`--calib-nproc N`), on one machine or several.

The parent splits the calibration batches into one contiguous block per process of the whole run
(`shard_bounds`), copies this machine's blocks to `.npy` files one batch at a time (distillation's
`write_arrays`, memory-mapped by the workers), and starts the workers with distillation's launcher
pieces (`Rendezvous` flags, `worker_command`, `worker_environment`):

    python -m torch.distributed.run <rendezvous flags> -m calibration.shard_worker <job folder>

Each worker runs `statistics.collect_ranges` on its block with a gloo `all_gather_object` as the
merge, so every process ends with the same ranges, which equal a one-process run's (the merges are
exact; only float rounding of the model's outputs under other thread counts can differ). The first
process of each machine writes `ranges.json` (onnxruntime's calibration-cache format) for its parent.
Across machines every machine runs the same export with the same data, its own node rank and the
address of node 0, as for distillation.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calibration.batching import batch_count
from calibration.samples import SampleSet
from calibration.statistics import CalibrationOutcome
from exporter.errors import CalibrationError
from exporter.inputs import InputSpec
from exporter.progress import progress_enabled

RANGES_NAME = "ranges.json"
RESULT_NAME = "result.json"


@dataclass(frozen=True)
class ShardedSource:
    """What a sharded run reads: the bound calibration samples, their specs, the batch size and the rendezvous."""

    samples: SampleSet
    specs: tuple[InputSpec, ...]
    batch_size: int
    rendezvous: Any  # exporter.training.settings.Rendezvous


def sharding_of(reader: Any) -> ShardedSource | None:
    """The sharded source behind `reader` (an `OrtCalibrationReader`, possibly wrapped by readers
    that keep it as `.reader`) when its rendezvous asks for more than one process, else None."""
    seen = 0
    while reader is not None and seen < 8:
        rendezvous = getattr(reader, "rendezvous", None)
        if rendezvous is not None and hasattr(reader, "samples"):
            if rendezvous.world_size <= 1:
                return None
            return ShardedSource(reader.samples, tuple(reader.specs), reader.batch_size, rendezvous)
        reader, seen = getattr(reader, "reader", None), seen + 1
    return None


def shard_bounds(batches: int, world_size: int, rank: int) -> tuple[int, int]:
    """Batches `[start, end)` of process `rank`: contiguous blocks whose sizes differ by at most one."""
    return rank * batches // world_size, (rank + 1) * batches // world_size


def calibrator_job_args(calibrator_args: dict[str, Any]) -> dict[str, Any]:
    """`create_calibrator` keyword arguments in JSON form (the method by name)."""
    return {**calibrator_args, "calibrate_method": calibrator_args["calibrate_method"].name}


def calibrator_args_from_job(job_args: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `calibrator_job_args`."""
    from onnxruntime.quantization import CalibrationMethod

    return {**job_args, "calibrate_method": CalibrationMethod[job_args["calibrate_method"]]}


def collect_ranges_sharded(
    model_path: Path, source: ShardedSource, calibrator_args: dict[str, Any], scratch: Path
) -> CalibrationOutcome:
    """Run `collect_ranges` in `source.rendezvous.world_size` processes and return the merged ranges
    and the batch count of the whole run. A worker's failure raises `CalibrationError` with its message."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    from exporter.training.data import SampleData, write_arrays
    from exporter.training.ddp import worker_command, worker_environment

    rendezvous = source.rendezvous
    count = len(source.samples)
    batches = batch_count(count, source.batch_size)
    if batches == 0:
        raise CalibrationError("calibration data produced no batches: pass --calib with at least one sample")
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="calib-job-", dir=scratch) as folder:
        job = Path(folder)
        for local_rank in range(rendezvous.nproc):
            start, end = shard_bounds(batches, rendezvous.world_size, rendezvous.node_rank * rendezvous.nproc + local_rank)
            rows = range(start * source.batch_size, min(end * source.batch_size, count))
            if len(rows):
                shard = SampleData(source.samples.subset(rows), source.specs)
                write_arrays(shard, job / f"shard-{local_rank}", desc=f"writing calibration shard {local_rank}")
        spec = {
            "model": str(Path(model_path).resolve()),
            "calibrator": calibrator_job_args(calibrator_args),
            "batch_size": source.batch_size,
            "input_names": [spec.name for spec in source.specs],
            "progress": progress_enabled(),
        }
        (job / "job.json").write_text(json.dumps(spec, indent=2))
        log_path = job / "torchrun.log"
        with open(log_path, "w") as log:
            completed = subprocess.run(
                worker_command(job, rendezvous, module="calibration.shard_worker"),
                env=worker_environment(rendezvous.nproc),
                stdout=log,
                stderr=log,
                check=False,
            )
        if completed.returncode != 0 or not (job / RANGES_NAME).is_file():
            raise CalibrationError(_failure_message(job, completed.returncode, log_path))
        ranges = load_tensors_data(job / RANGES_NAME)
        total = json.loads((job / RESULT_NAME).read_text())["batches"]
    return CalibrationOutcome(ranges=ranges, batches=int(total))


def _failure_message(job: Path, returncode: int, log_path: Path) -> str:
    """The first worker's own error when it wrote one, else the end of torchrun's log."""
    errors = [json.loads(path.read_text()) for path in sorted(job.glob("error-*.json"))]
    # A rank whose peer crashed reports the lost connection; the crashed rank's own error says why.
    errors.sort(key=lambda error: "Connection closed by peer" in error["message"])
    if errors:
        error = errors[0]
        return f"sharded calibration failed on rank {error['rank']}: {error['message']}"
    tail = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()][-3:]
    detail = " | ".join(tail) if tail else "no output"
    return f"torchrun exited with code {returncode} before calibration finished: {detail}; try --calib-nproc 1"

