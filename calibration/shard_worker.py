"""One torchrun process of a sharded calibration: `python -m calibration.shard_worker <job folder>`.

Reads the job `sharding.collect_ranges_sharded` wrote, joins the gloo process group, collects
ranges over its own block of batches with `statistics.collect_ranges` (merged with every other
process through `all_gather_object`), and on the first process of each machine writes
`ranges.json` and `result.json`. A failure is written to `error-<rank>.json` and exits 1.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from calibration.sharding import RANGES_NAME, RESULT_NAME, calibrator_args_from_job
from calibration.statistics import collect_ranges, threads_from_environment
from exporter.errors import ExporterError


class ArrayBatchReader:
    """onnxruntime's reader protocol over memory-mapped shard arrays: batches of `batch_size`, rewindable."""

    def __init__(self, data: Any, batch_size: int) -> None:
        self.data = data
        self.batch_size = batch_size
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch keyed by input name, or None at the end of the shard."""
        if self.data is None or self._next >= len(self.data):
            return None
        rows = range(self._next, min(self._next + self.batch_size, len(self.data)))
        self._next = rows.stop
        inputs, _ = self.data.batch(rows)
        return inputs

    def rewind(self) -> None:
        """Start again from the first batch."""
        self._next = 0


def main(argv: list[str] | None = None) -> int:
    """Run this process's share of the job in `argv[0]`; return the exit code."""
    import torch.distributed as dist
    from onnxruntime.quantization.calibrate import save_tensors_data

    from exporter.training.data import ArrayData

    job = Path((argv if argv is not None else sys.argv[1:])[0])
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    try:
        spec = json.loads((job / "job.json").read_text())
        dist.init_process_group("gloo", timeout=timedelta(minutes=30))

        def gather(value: Any) -> list:
            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, value)
            return gathered

        shard = job / f"shard-{local_rank}"
        data = ArrayData.load(shard) if shard.is_dir() else None
        # onnxruntime writes `<model>-inferred.onnx` beside the model and deletes it: each rank needs its own copy.
        model = job / f"work-{rank}" / "model.onnx"
        model.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(spec["model"], model)
        outcome = collect_ranges(
            model,
            ArrayBatchReader(data, int(spec["batch_size"])),
            calibrator_args_from_job(spec["calibrator"]),
            job / f"work-{rank}",
            gather=gather,
            threads=threads_from_environment(),
        )
        total = sum(gather(outcome.batches))
        if local_rank == 0:
            temporary = job / (RANGES_NAME + ".tmp")
            save_tensors_data(outcome.ranges, temporary)
            (job / RESULT_NAME).write_text(json.dumps({"batches": total}))
            os.replace(temporary, job / RANGES_NAME)
        return 0
    except BaseException as exc:
        message = str(exc) if isinstance(exc, ExporterError) else f"{type(exc).__name__}: {exc}"
        (job / f"error-{rank}.json").write_text(
            json.dumps({"rank": rank, "message": message, "traceback": traceback.format_exc()})
        )
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
