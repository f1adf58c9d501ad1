"""Benchmark of `exporter export --target cpu-int8`: latency, sizes, agreement and the exporter's own stage times.

For the bundled digits sample and for ResNet-18 and MobileNetV2 at 224x224 (random weights: the
figures are about speed, not accuracy), the script runs the exporter through its public API, then
times PyTorch eager, ORT fp32 (`model.float.onnx`) and ORT int8 (`model.onnx`) side by side at
batch 1 and 32 with 1 and 2 intra-op threads, and prints markdown tables. Latencies are medians of
interleaved runs (see `benchmarks/_common.py`), with the best run beside them: on a busy machine
the best run is the closer estimate of an idle one. The int8 speed-up at batch 1, one thread is
checked against a hand-written onnxruntime recipe measured on the reference machine (ResNet-18
3.1x, MobileNetV2 1.9x over ORT fp32).

Run from the repository root:

    python benchmarks/bench_export.py            # all three models, a few minutes
    python benchmarks/bench_export.py --quick    # sample + ResNet-18, fewer runs, under a minute
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    add_repo_root_to_path,
    fmt_mb,
    fmt_ms,
    interleaved_timings,
    load_average,
    machine_summary,
    markdown_table,
)

REPO_ROOT = add_repo_root_to_path()

import numpy as np  # noqa: E402
import torch  # noqa: E402

SAMPLE_DIR = REPO_ROOT / "samples" / "digits"
# int8 speed-up over ORT fp32 at 224x224, batch 1, one thread, reached by a hand-written onnxruntime
# recipe (QDQ, per-channel, MinMax) on the reference machine: the exporter must match it untuned.
REFERENCE_SPEEDUP = {"resnet18": 3.1, "mobilenet_v2": 1.9}
BATCHES = (1, 32)
THREADS = (1, 2)
CALIB_SAMPLES = 32
VAL_SAMPLES = 16
STAGES = ("load", "data", "compress", "export", "quantize", "accuracy", "package", "measure")
ENGINES = ("PyTorch eager", "ORT fp32", "ORT int8")


@dataclass(frozen=True)
class Effort:
    """How long to time: rounds and budget per (batch, threads) cell, and the exporter's own latency repeats."""

    rounds_b1: int
    rounds_b32: int
    budget_b1_s: float
    budget_b32_s: float
    latency_repeats: int


FULL = Effort(rounds_b1=15, rounds_b32=5, budget_b1_s=10.0, budget_b32_s=15.0, latency_repeats=20)
QUICK = Effort(rounds_b1=5, rounds_b32=1, budget_b1_s=3.0, budget_b32_s=4.0, latency_repeats=5)


@dataclass
class Case:
    """One model to benchmark: what to hand the exporter, the eager module, and inputs for timing."""

    key: str
    title: str
    model_path: Path
    settings: dict[str, Any]
    eager: torch.nn.Module
    inputs: np.ndarray  # at least max(BATCHES) samples
    source_note: str
    report: dict[str, Any] = field(default_factory=dict)
    out_dir: Path | None = None
    export_wall_s: float = 0.0
    timings: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)


def sample_case() -> Case:
    """The bundled digits sample: its shipped `.pt2` with `calib.npz`/`val.npz`; eager = the same weights as a state dict."""
    from samples.architectures import DigitsCNN

    eager = DigitsCNN()
    eager.load_state_dict(torch.load(SAMPLE_DIR / "digits_cnn.state_dict.pt", weights_only=True))
    inputs = np.load(SAMPLE_DIR / "val.npz")["input"][: max(BATCHES)]
    return Case(
        key="digits",
        title="DigitsCNN sample (1x16x16)",
        model_path=SAMPLE_DIR / "digits_cnn.pt2",
        settings={"calib": str(SAMPLE_DIR / "calib.npz"), "val": str(SAMPLE_DIR / "val.npz")},
        eager=eager.eval(),
        inputs=np.ascontiguousarray(inputs),
        source_note="digits_cnn.pt2 (torch.export), calib.npz / val.npz (300 + 300 real samples)",
    )


def conv_case(key: str, title: str, work: Path, calib: Path, val: Path) -> Case:
    """ResNet-18 or MobileNetV2 at 224x224 with seeded random weights, saved as a state dict for `--model-class`."""
    import samples.architectures as architectures

    kwargs = {"num_classes": 1000}
    torch.manual_seed(0)
    model = getattr(architectures, key)(**kwargs).eval()
    path = work / f"{key}.state_dict.pt"
    torch.save(model.state_dict(), path)
    inputs = np.random.default_rng(1).standard_normal((max(BATCHES), 3, 224, 224), dtype=np.float32)
    return Case(
        key=key,
        title=f"{title} (3x224x224)",
        model_path=path,
        settings={
            "calib": str(calib),
            "val": str(val),
            "input_shape": ["1,3,224,224"],
            "model_class": f"samples.architectures:{key}",
            "model_kwargs": kwargs,
        },
        eager=model,
        inputs=inputs,
        source_note=f"random weights (seed 0), state dict + --model-class; {CALIB_SAMPLES} + {VAL_SAMPLES} random N(0,1) inputs",
    )


def random_image_data(work: Path) -> tuple[Path, Path]:
    """Calibration and validation `.npy` files of standard-normal 3x224x224 inputs (timing only)."""
    rng = np.random.default_rng(0)
    calib, val = work / "calib224.npy", work / "val224.npy"
    np.save(calib, rng.standard_normal((CALIB_SAMPLES, 3, 224, 224), dtype=np.float32))
    np.save(val, rng.standard_normal((VAL_SAMPLES, 3, 224, 224), dtype=np.float32))
    return calib, val


def run_exporter(case: Case, target: str, work: Path, effort: Effort) -> None:
    """Export through the public API; a failed validation gate still yields outputs and a report."""
    from exporter.api import export
    from exporter.errors import ValidationFailed

    start = time.perf_counter()
    try:
        result = export(
            str(case.model_path), target=target, out=str(work / f"out-{case.key}"), force=True,
            latency_repeats=effort.latency_repeats, **case.settings,
        )
    except ValidationFailed as failed:
        result = failed.result
    case.export_wall_s = time.perf_counter() - start
    case.report, case.out_dir = result.report, Path(result.out_dir)


def time_case(case: Case, effort: Effort) -> None:
    """Median/best latency of the three engines for every (batch, threads) cell, interleaved."""
    from exporter.runtime import session_for

    previous = torch.get_num_threads()
    try:
        for threads in THREADS:
            torch.set_num_threads(threads)
            fp32 = session_for(case.out_dir / "model.float.onnx", threads=threads)
            int8 = session_for(case.out_dir / "model.onnx", threads=threads)
            name = fp32.get_inputs()[0].name
            for batch in BATCHES:
                array = np.ascontiguousarray(case.inputs[:batch])
                feed, tensor = {name: array}, torch.from_numpy(array)

                def eager(tensor=tensor):
                    with torch.inference_mode():
                        return case.eager(tensor)

                calls = {
                    "PyTorch eager": eager,
                    "ORT fp32": lambda feed=feed: fp32.run(None, feed),
                    "ORT int8": lambda feed=feed: int8.run(None, feed),
                }
                if batch == 1:
                    timings = interleaved_timings(calls, max_rounds=effort.rounds_b1, per_round=3, budget_s=effort.budget_b1_s)
                else:
                    timings = interleaved_timings(
                        calls, max_rounds=effort.rounds_b32, min_rounds=min(2, effort.rounds_b32), settle=0, warmup=1,
                        budget_s=effort.budget_b32_s,
                    )
                case.timings[(batch, threads)] = timings
                print(f"  timed {case.key} batch {batch}, {threads} thread(s): "
                      + ", ".join(f"{k} {fmt_ms(v.median)} ms" for k, v in timings.items()), file=sys.stderr)
    finally:
        torch.set_num_threads(previous)


def speedup(timings: dict[str, Any]) -> tuple[float, float]:
    """int8 speed-up over ORT fp32: (from medians, from best runs)."""
    fp32, int8 = timings["ORT fp32"], timings["ORT int8"]
    return fp32.median / int8.median, fp32.best / int8.best


def latency_table(cases: list[Case]) -> str:
    rows = []
    for case in cases:
        for threads in THREADS:
            for batch in BATCHES:
                t = case.timings[(batch, threads)]
                med, best = speedup(t)
                rows.append(
                    [case.title, batch, threads]
                    + [f"{fmt_ms(t[e].median)} ({fmt_ms(t[e].best)})" for e in ENGINES]
                    + [f"{med:.2f}x ({best:.2f}x)", f"{t['PyTorch eager'].median / t['ORT fp32'].median:.2f}x"]
                )
    headers = ["model", "batch", "threads"] + [f"{e} ms" for e in ENGINES] + ["int8 speed-up over ORT fp32", "ORT fp32 speed-up over eager"]
    return markdown_table(headers, rows, right_from=1)


def reference_table(cases: list[Case]) -> str:
    rows = []
    for case in cases:
        if case.key not in REFERENCE_SPEEDUP:
            continue
        need = REFERENCE_SPEEDUP[case.key]
        med, best = speedup(case.timings[(1, 1)])
        reported = case.report["measurements"]["speedup_vs_float"]
        verdict = "met" if min(med, best) >= need else "met on best runs only (busy machine?)" if best >= need else "NOT met"
        rows.append([case.title, f">= {need:.1f}x", f"{med:.2f}x", f"{best:.2f}x", f"{reported:.2f}x", verdict])
    headers = ["model", "reference recipe", "exporter (median)", "exporter (best)", "exporter's own report", "target"]
    return markdown_table(headers, rows)


def size_table(cases: list[Case]) -> str:
    rows = []
    for case in cases:
        m = case.report["measurements"]
        rows.append([
            case.title, f"{m['params_original']:,}" if m.get("params_original") else "?",
            fmt_mb(case.model_path.stat().st_size), fmt_mb(m["size_float_bytes"]), fmt_mb(m["size_final_bytes"]),
            f"{m['size_ratio']:.2f}x",
        ])
    return markdown_table(["model", "parameters", "PyTorch file", "ORT fp32", "ORT int8", "fp32 / int8"], rows)


def agreement_table(cases: list[Case]) -> str:
    rows = []
    for case in cases:
        v = case.report["validation"]
        final, floats = v["final_vs_original"], v["float_onnx_vs_original"]
        accuracy = "-"
        if final.get("reference_accuracy") is not None:
            accuracy = f"{final['reference_accuracy']:.4f} -> {final['candidate_accuracy']:.4f}"
        rows.append([
            case.title, case.report["verdict"], final.get("samples", "?"),
            _pct(final.get("top1_agreement")), f"{final.get('cosine', float('nan')):.5f}",
            f"{final.get('sqnr_db', float('nan')):.1f}", f"{floats.get('cosine', float('nan')):.6f}", accuracy,
        ])
    headers = ["model", "gate", "val samples", "int8 top-1 agreement", "int8 cosine", "int8 SQNR dB",
               "fp32 ONNX cosine", "accuracy PyTorch -> int8"]
    return markdown_table(headers, rows)


def stage_table(cases: list[Case]) -> str:
    rows = []
    for case in cases:
        s = case.report["stage_seconds"]
        rows.append([case.title] + [f"{s.get(k, 0.0):.2f}" for k in STAGES] + [f"{sum(s.values()):.2f}", f"{case.export_wall_s:.2f}"])
    return markdown_table(["model"] + list(STAGES) + ["sum", "export() wall"], rows)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def scheme_line(case: Case) -> str:
    """The quantization settings the exporter actually passed to onnxruntime (from the report)."""
    q = case.report["quantization"]["settings"].get("quantize_static", {})
    keys = ("quant_format", "activation_type", "weight_type", "per_channel", "reduce_range", "calibrate_method")
    return ", ".join(f"{k}={q.get(k)}" for k in keys) + f", extra_options={q.get('extra_options')}"


def busy_note(load_before: str) -> list[str]:
    """A caution when other processes were running: on a small machine they distort the 2-thread figures most."""
    try:
        one_minute = float(load_before.split("/")[0])
    except ValueError:
        return []
    if one_minute < 0.5:
        return []
    return [
        f"Caution: other processes were running (1-minute load {one_minute:.2f} before the run). With as many "
        "threads as cores, a descheduled worker stalls every parallel section, so the 2-thread medians (PyTorch's "
        "OpenMP most of all) are inflated; the best runs are the closer estimate of an idle machine.",
        "",
    ]


def render(cases: list[Case], command: str, machine: dict[str, str], load_after: str, target: str) -> str:
    parts = [
        "# Export benchmark",
        "",
        f"Command (from the repository root): `{command}`",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in machine.items()) + f"; load average after the run {load_after}.",
        "",
        f"Target `{target}`: " + scheme_line(cases[0]) + ".",
        "",
        "Models: " + "; ".join(f"{c.title}: {c.source_note}" for c in cases) + ".",
        "",
        "## Latency",
        "",
        "Median (best) wall time in ms of one `run`, the three engines timed round-robin in one process; "
        "ORT sessions from `exporter.runtime.session_for` (all graph optimizations); "
        "PyTorch eager under `torch.inference_mode()` with `torch.set_num_threads(threads)`. "
        "Speed-ups are from medians (best runs).",
        "",
        *busy_note(machine["load average"]),
        latency_table(cases),
        "",
        "## int8 speed-up against the hand-written onnxruntime recipe (batch 1, 1 thread)",
        "",
        reference_table(cases),
        "",
        "## Sizes",
        "",
        size_table(cases),
        "",
        "## Agreement (from the exporter's report, validation split)",
        "",
        agreement_table(cases),
        "",
        "Random weights on random inputs: the 224x224 agreement figures check the pipeline, not accuracy.",
        "",
        "## Exporter wall time per stage (s, `report['stage_seconds']`)",
        "",
        stage_table(cases),
        "",
    ]
    warnings = [f"- {c.title}: {w}" for c in cases for w in c.report.get("warnings", [])]
    if warnings:
        parts += ["## Exporter warnings", ""] + warnings + [""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="sample + ResNet-18 only, fewer timed runs (under a minute)")
    parser.add_argument("--target", default="cpu-int8", help="target name or .toml file to benchmark (default cpu-int8)")
    parser.add_argument("--write", metavar="FILE", help="also write the markdown to FILE")
    args = parser.parse_args(argv)
    effort = QUICK if args.quick else FULL
    machine = machine_summary()
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        work = Path(tmp)
        calib, val = random_image_data(work)
        cases = [sample_case(), conv_case("resnet18", "ResNet-18", work, calib, val)]
        if not args.quick:
            cases.append(conv_case("mobilenet_v2", "MobileNetV2", work, calib, val))
        for case in cases:
            print(f"exporting {case.key} ...", file=sys.stderr)
            run_exporter(case, args.target, work, effort)
            time_case(case, effort)
        command = "python benchmarks/bench_export.py" + (" --quick" if args.quick else "")
        command += f" --target {args.target}" if args.target != "cpu-int8" else ""
        text = render(cases, command, machine, load_average(), args.target)
    print(text)
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
