"""Benchmark: one row per deployment target, on the digits sample and on a 224x224 conv net.

For each model the float ONNX is exported once with the exporter's own `export_onnx` (dynamo,
opset 18; fixed batch-1 shapes for `mobile-int8`), then each target's quantizer runs through the
exporter's `quantize_model` (static targets calibrate on `calib.npz` for the sample and on random
inputs for the conv net) and its package steps run where the target has them. Each row reports:

- size: bytes of the deployable file (`mobile-int8`: the `.ort` file is listed too);
- latency ratio: median batch-1 latency on onnxruntime's CPU provider with one intra-op thread
  (files timed in interleaved rounds, best round kept), divided by the same for the `cpu-fp32`
  file (below 1 = faster);
- agreement with the original PyTorch model: top-1 agreement and mean cosine of the outputs
  (on `val.npz` for the sample, with its accuracy; on random inputs for the conv net, whose
  weights are random, so top-1 there is a noisy figure and cosine is the one to read).

Low-bit pass rows (binarize, stochastic rounding) are added for the sample to show their accuracy cost.

    python benchmarks/bench_targets.py [--models digits,mobilenet_v2] [--repeats 30] [--out PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from exporter.inputs import InputSpec  # noqa: E402
from exporter.metrics import OutputComparison  # noqa: E402
from exporter.onnx_export import export_onnx  # noqa: E402
from exporter.passes import PASSES, PassContext  # noqa: E402
from exporter.quantizers import QuantizeRequest, quantize_model  # noqa: E402
from exporter.runtime import median_latency_ms, session_for  # noqa: E402
from samples.architectures import DigitsCNN, mobilenet_v2, resnet18  # noqa: E402
from targets import get_target  # noqa: E402
from targets.auto import explain_auto_choice  # noqa: E402
from targets.hardware import read_cpu_features  # noqa: E402
from targets.packaging import run_package_steps  # noqa: E402

TARGETS = ("cpu-fp32", "cpu-int8", "auto", "cpu-fp16", "cpu-int8-dynamic", "arm64-int8", "mobile-int8", "cpu-int4-weights")
SAMPLE = ROOT / "samples" / "digits"


@dataclass
class Bench:
    """One model: the PyTorch original, its input spec, calibration and evaluation inputs (labels if known)."""

    name: str
    model: torch.nn.Module
    spec: InputSpec
    calib: np.ndarray
    evaluate: np.ndarray
    labels: np.ndarray | None
    note: str


def digits() -> Bench:
    model = DigitsCNN()
    model.load_state_dict(torch.load(SAMPLE / "digits_cnn.state_dict.pt", weights_only=True))
    with np.load(SAMPLE / "calib.npz") as calib, np.load(SAMPLE / "val.npz") as val:
        return Bench(
            "digits (DigitsCNN, 1x16x16, trained sample)",
            model.eval(),
            InputSpec("input", (1, 1, 16, 16)),
            calib["input"][:100],
            val["input"],
            val["labels"],
            "agreement on the 300 held-out `val.npz` images; accuracy of the original: see the fp32 row",
        )


def conv_net(name: str, factory: Callable[[], torch.nn.Module]) -> Callable[[], Bench]:
    def build() -> Bench:
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        return Bench(
            f"{name} (3x224x224, random weights)",
            factory().eval(),
            InputSpec("input", (1, 3, 224, 224)),
            rng.standard_normal((16, 3, 224, 224)).astype(np.float32),
            rng.standard_normal((32, 3, 224, 224)).astype(np.float32),
            None,
            "agreement on 32 random inputs; random weights make top-1 noisy, read the cosine",
        )

    return build


MODELS = {
    "digits": digits,
    "mobilenet_v2": conv_net("mobilenet_v2", lambda: mobilenet_v2(num_classes=1000)),
    "resnet18": conv_net("resnet18", lambda: resnet18(num_classes=1000)),
}


class Reader:
    """onnxruntime calibration reader over an array, one sample per batch."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.position = array, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.array):
            return None
        self.position += 1
        return {"input": self.array[self.position - 1 : self.position]}

    def rewind(self) -> None:
        self.position = 0


def outputs(path: Path, inputs: np.ndarray, batch_one: bool) -> np.ndarray:
    session = session_for(path, threads=2)
    if not batch_one:
        return session.run(None, {"input": inputs})[0]
    return np.concatenate([session.run(None, {"input": inputs[i : i + 1]})[0] for i in range(len(inputs))])


def agreement(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    comparison = OutputComparison()
    comparison.add(reference, candidate, labels)
    return comparison.summary()


def apply_pass(bench: Bench, name: str, settings: dict[str, Any]) -> torch.nn.Module:
    cls = PASSES.get(name)
    example = torch.from_numpy(bench.spec.example(batch=2))
    ctx = PassContext(example_inputs=(example,), input_specs=[bench.spec], teacher=bench.model)
    model, _ = cls(cls.Config.from_dict(settings, name)).run(bench.model, ctx)
    return model


def bench_model(bench: Bench, repeats: int, rounds: int, work: Path) -> list[dict[str, Any]]:
    with torch.no_grad():
        reference = bench.model(torch.from_numpy(bench.evaluate)).numpy()
    dynamic_float = work / "float.onnx"
    export_onnx(bench.model, [bench.spec], dynamic_float, opset=18, dynamic_batch=True)
    fixed_float = work / "float_fixed.onnx"
    export_onnx(bench.model, [bench.spec], fixed_float, opset=18, dynamic_batch=False)
    feed = {"input": bench.spec.example(batch=1)}
    rows = []
    variants: list[tuple[str, Any, Path]] = [(name, get_target(name), None) for name in TARGETS]
    if bench.labels is not None:
        for label, pass_name, settings in (
            ("cpu-fp32 + binarize", "binarize", {}),
            ("cpu-fp32 + stochastic_round 4-bit", "stochastic_round", {"bits": 4}),
            ("cpu-int8 + stochastic_round 4-bit", "stochastic_round", {"bits": 4}),
        ):
            path = work / f"{pass_name}_{label.split()[0]}.onnx"
            export_onnx(apply_pass(bench, pass_name, settings), [bench.spec], path, opset=18, dynamic_batch=True)
            variants.append((label, get_target(label.split()[0]), path))
    for label, target, float_override in variants:
        folder = work / label.replace(" ", "_")
        folder.mkdir()
        float_path = float_override or (fixed_float if target.needs_fixed_shapes else dynamic_float)
        out = folder / "model.onnx"
        start = time.perf_counter()
        info = quantize_model(
            QuantizeRequest(
                float_path=float_path,
                out_path=out,
                scheme=target.quantization,
                input_specs=[bench.spec],
                work_dir=folder,
                make_reader=(lambda: Reader(bench.calib)) if target.needs_calibration else None,
            )
        )
        extra = ""
        if target.package_steps:
            stage = folder / "stage"
            stage.mkdir()
            shutil.copyfile(out, stage / "model.onnx")
            records = {r.name: r for r in run_package_steps(target, stage / "model.onnx", stage, [bench.spec])}
            if "ort_format" in records:
                extra = f"; .ort {records['ort_format'].summary['ort_bytes'] / 1e6:.3f} MB"
            if "mobile_check" in records:
                nnapi = records["mobile_check"].summary["providers"]["nnapi"]
                extra += f"; NNAPI {nnapi['nodes_supported']}/{nnapi['nodes_total']} nodes, {nnapi['partitions']} partition(s)"
        seconds = time.perf_counter() - start
        figures = agreement(reference, outputs(out, bench.evaluate, target.needs_fixed_shapes), bench.labels)
        rows.append(
            {
                "target": label,
                "path": out,
                "size_mb": out.stat().st_size / 1e6,
                "top1": figures["top1_agreement"],
                "cosine": figures["cosine"],
                "accuracy": figures["candidate_accuracy"],
                "seconds": seconds,
                "extra": extra + describe(target.quantization.mode, info),
            }
        )
        print(f"  {label}: built in {seconds:.1f} s, cosine {figures['cosine']:.5f}", file=sys.stderr)
    # Timing, interleaved: every file is timed once per round and the best round's median is kept,
    # so a burst of load from other processes slows one round, not one target.
    sessions = [session_for(row["path"], threads=1) for row in rows]
    best = [float("inf")] * len(rows)
    for _ in range(rounds):
        for i, session in enumerate(sessions):
            best[i] = min(best[i], median_latency_ms(lambda s=session: s.run(None, feed), repeats=repeats))
    for row, latency in zip(rows, best):
        row["latency_ms"] = latency
        row["ratio"] = latency / best[0]
    return rows


def describe(mode: str, info: Any) -> str:
    """A short note on what the quantizer covered, from its own record."""
    ops = info.op_counts
    if mode == "fp16":
        cpu = info.settings.get("cpu_execution", {})
        total = cpu.get("nodes_in_float16", 0) + cpu.get("nodes_in_float32", 0)
        return f"; CPU provider runs {cpu.get('nodes_in_float32', '?')}/{total} compute nodes in float32 (no fp16 kernels here)"
    if mode == "dynamic":
        return f"; {ops.get('MatMulInteger', 0)} MatMulInteger, {ops.get('Conv', 0)} Conv left float"
    if mode == "weight_only":
        coverage = info.settings.get("coverage", {})
        return f"; {ops.get('MatMulNBits', 0)} MatMulNBits, {coverage.get('conv_weights_left_float', 0):,} Conv weights left float"
    return ""


def table(bench: Bench, rows: list[dict[str, Any]]) -> str:
    with_accuracy = bench.labels is not None
    head = "| target | size (MB) | batch-1 latency (ms) | latency ratio to ORT fp32 (lower is faster) | top-1 agreement | cosine |"
    rule = "|---|---:|---:|---:|---:|---:|"
    if with_accuracy:
        head += " accuracy |"
        rule += "---:|"
    head += " notes |"
    rule += "---|"
    lines = [f"### {bench.name}", "", bench.note + ".", "", head, rule]
    for row in rows:
        cells = [
            row["target"],
            f"{row['size_mb']:.3f}",
            f"{row['latency_ms']:.3f}",
            f"{row['ratio']:.2f}",
            f"{row['top1']:.3f}",
            f"{row['cosine']:.5f}",
        ]
        if with_accuracy:
            cells.append(f"{row['accuracy']:.3f}")
        cells.append(row["extra"].lstrip("; "))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,mobilenet_v2", help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--repeats", type=int, default=30, help="timed batch-1 runs per file and round (median)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (the best round is kept)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results_targets.md")
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    features = read_cpu_features()
    load = os.getloadavg()[0]
    sections = []
    for name in args.models.split(","):
        bench = MODELS[name.strip()]()
        print(f"benchmarking {bench.name}", file=sys.stderr)
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            rows = bench_model(bench, args.repeats, args.rounds, Path(tmp))
        sections.append(table(bench, rows))
    header = [
        "## Targets: size, batch-1 speed and agreement",
        "",
        f"Command: `python benchmarks/bench_targets.py --models {args.models} --repeats {args.repeats} --rounds {args.rounds}`",
        "",
        f"Machine: {platform.machine()}, {cpu_model()}; onnxruntime "
        f"{__import__('onnxruntime').__version__}, torch {torch.__version__}; one intra-op thread for latency.",
        f"`auto` picked here: {explain_auto_choice(features)}.",
        "",
        "Latency: median of batch-1 runs on onnxruntime's CPU provider, best of the interleaved rounds",
        f"(load average when the run started: {load:.1f} on {os.cpu_count()} cores); the ratio divides by the",
        "`cpu-fp32` row. `arm64-int8` and `mobile-int8` are made for ARM CPUs: their x86 latency is shown",
        "for completeness, not as the speed on a phone.",
        "",
    ]
    text = "\n".join(header) + "\n" + "\n\n".join(sections) + "\n"
    print(text)
    args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
