"""Benchmark: peak memory (RSS) and wall time of calibration against sample count and process count.

The model is the bundled digits CNN (real trained weights, `samples/digits`), exported to ONNX and
pre-processed as the `cpu-int8` target does. The data are the 300 real calibration digits cycled
to 100, 1,000 and 10,000 samples with a little seeded noise (so no two samples are equal), saved
as a compressed `.npz` (read one row at a time). Each configuration runs in a fresh process that
reports its own peak RSS (VmHWM) and, for torchrun runs, the largest worker's (sampled every 50 ms); wall time is
the `calibrate_ranges` call alone (reading, inference, statistics, and for 2 processes the shard
copy and the torchrun start).

Rows:
- `streamed`: this exporter's `calibrate_ranges` (batch-by-batch statistics, `--calib-nproc 1|2`);
- `onnxruntime all-at-once`: what `calibrate_ranges` did before, onnxruntime's calibrator fed
  every batch in one `collect_data` call (uniform batches), for comparison.

    flock /tmp/heavy.lock python benchmarks/bench_calibration_memory.py [--out benchmarks/results_calibration_memory.md]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import machine_summary, markdown_table  # noqa: E402

DIGITS = Path(__file__).resolve().parents[1] / "samples" / "digits"
COUNTS = (100, 1000, 10000)
BATCH = 16
COMMAND = "flock /tmp/heavy.lock python benchmarks/bench_calibration_memory.py"


def prepare(folder: Path) -> Path:
    """Export the digits CNN to ONNX and pre-process it for quantization; write the sample sets."""
    import torch

    from exporter.inputs import InputSpec
    from exporter.onnx_export import export_onnx
    from exporter.quantizers.static import preprocess_for_quantization
    from samples.architectures import DigitsCNN
    from targets import get_target

    model = DigitsCNN()
    model.load_state_dict(torch.load(DIGITS / "digits_cnn.state_dict.pt", weights_only=True))
    model.eval()
    float_path = folder / "digits.float.onnx"
    export_onnx(model, [InputSpec("input", (1, 1, 16, 16))], float_path, get_target("cpu-int8").opset)
    prepared = folder / "digits.prepared.onnx"
    preprocess_for_quantization(float_path, prepared)
    with np.load(DIGITS / "calib.npz") as data:
        digits = data["input"]
    rng = np.random.default_rng(0)
    for count in COUNTS:
        rows = digits[np.arange(count) % len(digits)]
        noisy = rows + rng.normal(0, 0.05, size=rows.shape).astype(np.float32)
        np.savez_compressed(folder / f"digits-{count}.npz", input=noisy.astype(np.float32))
    return prepared


def status_kb(pid: int | str, field: str) -> int:
    """A `kB` field of /proc/<pid>/status (VmHWM: peak resident set of the process's current image), 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (torchrun and its workers)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for kid in parents.get(todo.pop(), []):
            found.append(kid)
            todo.append(kid)
    return found


class WorkerPeak:
    """Samples the peak RSS (VmHWM) of every descendant every 50 ms; `largest_mb` is the largest seen.
    (ru_maxrss cannot be used: Linux carries it over fork and exec, so every child would report the
    RSS of the process that forked it.)"""

    def __init__(self) -> None:
        import threading

        self.peaks: dict[int, int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self) -> None:
        while not self.stop.wait(0.05):
            for pid in descendants(os.getpid()):
                self.peaks[pid] = max(self.peaks.get(pid, 0), status_kb(pid, "VmHWM"))

    def largest_mb(self) -> float:
        self.stop.set()
        self.thread.join()
        return max(self.peaks.values(), default=0) / 1024


def child(spec: dict) -> dict:
    """Run one configuration in this (fresh) process and measure it."""
    import dataclasses

    from calibration import OrtCalibrationReader, open_samples
    from calibration.uniform_reader import UniformBatchReader
    from exporter.inputs import InputSpec
    from exporter.quantizers.static import calibrate_ranges, ort_static_arguments
    from exporter.training.settings import Rendezvous
    from targets import get_target

    scheme = dataclasses.replace(get_target("cpu-int8").quantization, calibration_method=spec["method"])
    args = ort_static_arguments(scheme)
    samples = open_samples(spec["data"])
    specs = [InputSpec("input", (1, 1, 16, 16))]
    work = Path(spec["work"])
    work.mkdir(parents=True, exist_ok=True)
    workers = WorkerPeak()
    start = time.perf_counter()
    if spec["path"] == "streamed":
        reader = OrtCalibrationReader(samples, specs, batch_size=BATCH, rendezvous=Rendezvous(nproc=spec["nproc"]))
        batches = calibrate_ranges(Path(spec["model"]), reader, args, work / "calibration.json")
    else:
        from onnxruntime.quantization.calibrate import create_calibrator

        def make_reader():
            return OrtCalibrationReader(samples, specs, batch_size=BATCH)

        reader = make_reader() if spec["method"] == "minmax" else UniformBatchReader(make_reader)
        calibrator = create_calibrator(
            Path(spec["model"]), augmented_model_path=str(work / "augmented.onnx"), providers=["CPUExecutionProvider"],
            **args.calibrator,
        )
        with contextlib.redirect_stdout(io.StringIO()):
            calibrator.collect_data(reader)
            calibrator.compute_data()
        batches = -(-len(samples) // BATCH)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "batches": batches,
        "rss_self_mb": status_kb("self", "VmHWM") / 1024,
        "rss_workers_mb": workers.largest_mb(),
    }


def run_child(spec: dict) -> dict:
    completed = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"configuration {spec} failed: {completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).with_name("results_calibration_memory.md")))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        print(json.dumps(child(json.loads(options.child))))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-calibration-") as folder:
        folder = Path(folder)
        model = prepare(folder)
        configs = []
        for method in ("minmax", "entropy"):
            for count in COUNTS:
                for path, nproc in (("streamed", 1), ("streamed", 2), ("onnxruntime all-at-once", 1)):
                    configs.append({"method": method, "count": count, "path": path, "nproc": nproc})
        for config in configs:
            spec = {
                **config,
                "model": str(model),
                "data": str(folder / f"digits-{config['count']}.npz"),
                "work": str(folder / f"work-{len(rows)}"),
            }
            measured = run_child(spec)
            print(config, {k: round(v, 1) for k, v in measured.items()}, flush=True)
            workers = f"{measured['rss_workers_mb']:.0f}" if config["nproc"] > 1 else "-"
            rows.append([
                config["method"], f"{config['count']:,}", config["path"], config["nproc"],
                f"{measured['seconds']:.1f}", f"{measured['rss_self_mb']:.0f}", workers,
            ])
    machine = machine_summary()
    table = markdown_table(
        ["method", "samples", "calibration", "processes", "wall s", "peak RSS MB (calibrating process)", "peak RSS MB (largest worker)"],
        rows,
        right_from=3,
    )
    text = "\n".join([
        "# Calibration memory and time",
        "",
        f"`{COMMAND}`",
        "",
        f"Machine: {machine['cpu']}; load average {machine['load average']}; onnxruntime {machine.get('onnxruntime', '?')}, "
        f"numpy {machine.get('numpy', '?')}, torch {machine.get('torch', '?')}.",
        "",
        "Digits CNN (samples/digits, real weights), batch 16, compressed .npz of 100 / 1,000 / 10,000 real digits "
        "(cycled, seeded noise). Each row is a fresh process; RSS includes the Python, numpy and onnxruntime "
        "baseline (about 100 MB here), and torch for torchrun workers. Wall times were taken on a shared, busy "
        "machine (load average above): compare rows of one run only.",
        "",
        table,
        "",
    ])
    Path(options.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
