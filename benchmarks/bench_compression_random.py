"""Benchmark: what compression passes buy on onnxruntime's CPU provider at batch 1 (random weights).

For a ResNet-18-shaped and a MobileNetV2-shaped network at 224x224 (random weights: latency does
not depend on the values), each variant is built with the exporter's own passes, exported with
torch.onnx (dynamo, opset 18), optionally quantized to int8 with onnxruntime (QDQ, per-channel
QInt8 weights, QUInt8 activations, MinMax on a few random samples), and timed: the median of
repeated batch-1 runs with 1 and with 2 intra-op threads. Prints a markdown table and writes it,
with the command that made it, to `benchmarks/results_compression_random.md` (or `--out`). The real-model benchmark is `bench_compression.py`.

    python benchmarks/bench_compression_random.py [--models resnet18,mobilenet_v2] [--repeats 30]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exporter.inputs import InputSpec  # noqa: E402
from exporter.modelstats import count_macs, count_params  # noqa: E402
from exporter.passes import PASSES, PassContext  # noqa: E402
from samples.architectures import mobilenet_v2, resnet18  # noqa: E402

SHAPE = (1, 3, 224, 224)
MODELS = {"resnet18": lambda: resnet18(num_classes=1000), "mobilenet_v2": lambda: mobilenet_v2(num_classes=1000)}


@dataclass(frozen=True)
class Variant:
    """One row of the table: the passes applied (name, settings) and whether the ONNX file is int8."""

    label: str
    passes: tuple[tuple[str, dict[str, Any]], ...]
    int8: bool


VARIANTS = (
    Variant("fp32", (), False),
    Variant("int8", (), True),
    Variant("pruned 30% + int8", (("prune", {"ratio": 0.3, "round_to": 8}),), True),
    Variant("pruned 50% (fp32)", (("prune", {"ratio": 0.5, "round_to": 8}),), False),
    Variant("pruned 50% + int8", (("prune", {"ratio": 0.5, "round_to": 8}),), True),
    Variant("low-rank (ratio 0.5) + int8", (("lowrank", {"ratio": 0.5}),), True),
)


def compress(model: nn.Module, passes: tuple[tuple[str, dict[str, Any]], ...], example: torch.Tensor) -> nn.Module:
    """Run fold_bn then the given passes through their public contract."""
    spec = [InputSpec("input", tuple(example.shape))]
    for name, settings in (("fold_bn", {}), *passes):
        cls = PASSES.get(name)
        ctx = PassContext(example_inputs=(example,), input_specs=spec, teacher=model)
        model, _ = cls(cls.Config.from_dict(settings, name)).run(model, ctx)
    return model


def export(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Export with the dynamo exporter to a single self-contained file."""
    torch.onnx.export(
        model, (example,), str(path), dynamo=True, external_data=False,
        input_names=["input"], output_names=["output"], opset_version=18, verbose=False,
    )  # fmt: skip


def quantize_int8(float_path: Path, int8_path: Path, samples: int = 8) -> None:
    """Static QDQ int8: per-channel QInt8 weights, QUInt8 activations, MinMax on random samples."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class RandomReader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.batches = iter([{"input": rng.standard_normal(SHAPE).astype(np.float32)} for _ in range(samples)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    pre = int8_path.with_suffix(".pre.onnx")
    quant_pre_process(str(float_path), str(pre), skip_symbolic_shape=True)
    quantize_static(
        str(pre), str(int8_path), RandomReader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )  # fmt: skip


def sessions(paths: list[Path], threads: int) -> list[Any]:
    """One onnxruntime CPU session per file, with `threads` intra-op threads and full graph optimization."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for p in paths]


def latencies_ms(paths: list[Path], threads: int, repeats: int) -> list[float]:
    """Median batch-1 latency of each file in ms; runs are interleaved so background load hits all alike."""
    runs = sessions(paths, threads)
    feed = {"input": np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)}
    for session in runs:
        for _ in range(5):
            session.run(None, feed)
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for session, bucket in zip(runs, times):
            start = time.perf_counter()
            session.run(None, feed)
            bucket.append((time.perf_counter() - start) * 1000)
    return [statistics.median(bucket) for bucket in times]


def run(models: list[str], repeats: int, work: Path) -> list[dict[str, Any]]:
    """Build, export, quantize and time every variant of every model; one dict per table row."""
    rows = []
    example = torch.randn(SHAPE)
    for model_name in models:
        torch.manual_seed(0)
        original = MODELS[model_name]().eval()
        model_rows, paths = [], []
        for number, variant in enumerate(VARIANTS):
            model = compress(original, variant.passes, example)
            float_path = work / f"{model_name}-{number}.onnx"
            export(model, example, float_path)
            path = float_path
            if variant.int8:
                path = work / f"{model_name}-{number}-int8.onnx"
                quantize_int8(float_path, path)
            paths.append(path)
            model_rows.append(
                {
                    "model": model_name,
                    "variant": variant.label,
                    "params": count_params(model),
                    "macs": count_macs(model, (example,)),
                    "size_mb": path.stat().st_size / 1e6,
                }
            )
            print(f"built {model_name} / {variant.label}", flush=True)
        for threads in (1, 2):
            for row, ms in zip(model_rows, latencies_ms(paths, threads, repeats)):
                row[f"ms_{threads}t"] = ms
            for row in model_rows:
                row[f"speedup_{threads}t"] = model_rows[0][f"ms_{threads}t"] / row[f"ms_{threads}t"]
        rows += model_rows
        print(table(model_rows), flush=True)
    return rows


def _line(row: dict[str, Any]) -> str:
    return (
        f"| {row['model']} | {row['variant']} | {row['params'] / 1e6:.2f} M | {row['macs'] / 1e9:.3f} G "
        f"| {row['size_mb']:.1f} MB | {row['ms_1t']:.1f} | {row['speedup_1t']:.2f}x "
        f"| {row['ms_2t']:.1f} | {row['speedup_2t']:.2f}x |"
    )


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of all rows."""
    head = (
        "| model | variant | params | MACs | file | 1 thread ms | vs fp32 | 2 threads ms | vs fp32 |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    return "\n".join([head, *(_line(r) for r in rows)])


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run the benchmark, print the table and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,mobilenet_v2", help="comma-separated: resnet18, mobilenet_v2")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per variant and thread count")
    parser.add_argument("--out", default=str(Path(__file__).with_name("results_compression_random.md")))
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model {unknown[0]!r}: choose from {', '.join(MODELS)}")
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    warnings.filterwarnings("ignore")
    logging.getLogger("torch").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as work:
        rows = run(models, args.repeats, Path(work))
    import onnxruntime

    command = "python benchmarks/bench_compression_random.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = (
        "## Compression passes (batch 1, 224x224, onnxruntime CPU)\n\n"
        f"Command: `{command.strip()}`\n\n"
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}. Latency is the median of "
        f"{args.repeats} runs after 5 warm-ups, the variants' runs interleaved so background load affects all "
        "alike; \"vs fp32\" is the speed-up over the fp32 file of the same model "
        "with the same thread count. Every variant had BatchNorm folded first; pruning uses round_to=8 (channel "
        "counts that are not multiples of 8 make onnxruntime's int8 convs much slower); "
        "int8 is static QDQ, per-channel "
        "QInt8 weights, QUInt8 activations, MinMax on 8 random samples. Random weights (latency does not "
        "depend on them).\n\n" + table(rows) + "\n"
    )
    Path(args.out).write_text(text)
    print("\n" + table(rows))


if __name__ == "__main__":
    main()
