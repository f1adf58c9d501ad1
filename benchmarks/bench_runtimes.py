"""Benchmark: the same exported files on four runtimes, with each runtime's golden-vector verdict.

For each model, `exporter export --target x86-openvino-int8 --no-search` makes the float and the int8
QDQ files and their golden vectors (8 real validation samples with the PyTorch outputs and the gate's
tolerance). Then, for the float file and the int8 file, every runtime runs the golden vectors
through `exporter verify` (the Node runtimes through the app samples with `node`) and times batch-1
inference inside that runtime, one thread, median of `--repeats` runs after warm-up:

- onnxruntime CPU (Python), OpenVINO CPU (precision hint f32, the validated setting; and the
  plugin's default, bf16 on this AMX CPU, for the int8 file), onnxruntime-node (native CPU kernels),
  onnxruntime-web's WASM backend run in Node (the kernels the browser page uses; SIMD, one thread).

Each runtime is timed in its own loop, one after the other (the Node ones in a child process), so
the figures are comparable in size, not to the last percent. Models: the digits sample (real weights,
real data), ResNet-18 and MobileNetV2 shapes (random weights, random calibration/validation inputs:
their golden vectors test runtime consistency, their gate figures mean little), and, when the zoo is
present, EfficientNet-Lite0 with real ImageNet weights and real photo crops (/work/zoo).

    flock /tmp/heavy.lock python benchmarks/bench_runtimes.py [--models digits,resnet18] [--repeats 20]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_repo_root_to_path, fmt_ms, machine_summary, markdown_table  # noqa: E402

ROOT = add_repo_root_to_path()
RESULTS = ROOT / "benchmarks" / "results_runtimes.md"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
ZOO = Path("/work/zoo")
RUNTIMES = ("python", "openvino", "openvino-default", "node", "web", "browser")
RUNTIME_NAMES = {"python": "onnxruntime CPU", "openvino": "OpenVINO f32", "openvino-default": "OpenVINO default",
                 "node": "onnxruntime-node", "web": "onnxruntime-web (WASM, Node)", "browser": "onnxruntime-web (WASM, Chromium)"}


def _conv_net_source(name: str, build, work: Path) -> dict:
    """A random-weight conv net saved as a torch.export program, with random calibration/validation inputs."""
    import torch

    torch.manual_seed(0)
    model = build().eval()
    path = work / f"{name}.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(2, 3, 224, 224),),
                                          dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},)), str(path))
    rng = np.random.default_rng(0)
    np.savez(work / f"{name}_calib.npz", input=rng.standard_normal((32, 3, 224, 224)).astype(np.float32))
    np.savez(work / f"{name}_val.npz", input=rng.standard_normal((32, 3, 224, 224)).astype(np.float32))
    return {"model": str(path), "calib": str(work / f"{name}_calib.npz"), "val": str(work / f"{name}_val.npz"),
            "weights": "random", "batch_size": 8}


def model_sources(names: list[str], work: Path) -> dict[str, dict]:
    """name -> export arguments for every model asked for."""
    from samples.architectures import mobilenet_v2, resnet18

    digits = ROOT / "samples" / "digits"
    sources = {}
    for name in names:
        if name == "digits":
            sources[name] = {"model": str(digits / "digits_cnn.pt2"), "calib": str(digits / "calib.npz"),
                             "val": str(digits / "val.npz"), "weights": "real (trained on sklearn digits)"}
        elif name == "resnet18":
            sources[name] = _conv_net_source(name, lambda: resnet18(num_classes=1000), work)
        elif name == "mobilenet_v2":
            sources[name] = _conv_net_source(name, lambda: mobilenet_v2(num_classes=1000), work)
        elif name == "efficientnet_lite0":
            if not (ZOO / name / "model.pt2").is_file():
                print(f"skipping {name}: {ZOO / name} not found", file=sys.stderr)
                continue
            sources[name] = {"model": str(ZOO / name / "model.pt2"), "calib": str(ZOO / name / "calib.npz"),
                             "val": str(ZOO / name / "val.npz"), "weights": "real (ImageNet)", "batch_size": 8,
                             "calib_samples": 128, "val_samples": 64}
        else:
            raise SystemExit(f"unknown model {name!r}: choose from digits, resnet18, mobilenet_v2, efficientnet_lite0")
    return sources


def export_model(name: str, source: dict, work: Path, repeats: int) -> tuple[Path, dict]:
    """Export one model to the x86-openvino-int8 target (a missed gate still writes the folder)."""
    from exporter.api import export
    from exporter.errors import ValidationFailed

    out = work / f"{name}-out"
    settings = {k: v for k, v in source.items() if k in ("batch_size", "calib_samples", "val_samples")}
    try:
        result = export(source["model"], target="x86-openvino-int8", calib=source["calib"], val=source["val"], out=str(out),
                        force=True, search=False, latency_repeats=repeats, **settings)
    except ValidationFailed as exc:
        result = exc.result
    return out, result.report


def float_variant(out: Path, work: Path) -> Path:
    """A folder whose golden.json points at model.float.onnx (same inputs, reference and tolerance)."""
    folder = work / (out.name + "-float")
    folder.mkdir(exist_ok=True)
    for item in out.iterdir():
        if item.name.startswith("golden.") or item.name == "model.float.onnx":
            shutil.copy(item, folder / item.name)
    data = json.loads((folder / "golden.json").read_text())
    data["model"] = "model.float.onnx"
    (folder / "golden.json").write_text(json.dumps(data))
    from exporter.golden import GoldenSet
    from exporter.runners import run_python

    golden = GoldenSet.read(folder)  # expected outputs: the float file's own, on onnxruntime CPU
    run_python(folder, golden).outputs.astype("<f4").tofile(folder / golden.expected.file)
    return folder


def measure(folder: Path, runtime: str, repeats: int) -> dict:
    """Verdict, figures and batch-1 latency of one file on one runtime ('error' when it cannot run)."""
    from exporter.golden import GoldenSet, figures
    from exporter.runners import run_openvino_precision
    from exporter.verify import verify

    try:
        if runtime == "openvino-default":
            golden = GoldenSet.read(folder)
            run = run_openvino_precision(folder, golden, repeats, "default")
            measured = figures(golden.reference.load(folder), run.outputs)
            passed = all(r.passes(measured[r.figure]) for r in golden.tolerance if measured.get(r.figure) is not None)
            expected = figures(golden.expected.load(folder), run.outputs)
            return {"passed": passed, "figures": measured, "latency_ms": run.latency_ms, "precision": run.precision,
                    "max_abs_diff_vs_export": expected["max_abs_error"]}
        result = verify(folder, runtime, time_repeats=repeats)
        return result.to_dict()
    except Exception as exc:  # noqa: BLE001 (a runtime that cannot run a file is a result worth a row)
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write benchmarks/results_runtimes.md and the Runtimes section of BENCHMARKS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,resnet18,mobilenet_v2,efficientnet_lite0")
    parser.add_argument("--repeats", type=int, default=20, help="timed batch-1 runs per file and runtime")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-benchmarks-md", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    from exporter.progress import set_progress

    set_progress(False)
    started = time.time()
    rows, details = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-runtimes-") as tmp:
        work = Path(tmp)
        for name, source in model_sources(args.models.split(","), work).items():
            print(f"{name}: exporting", file=sys.stderr)
            with contextlib.redirect_stdout(io.StringIO()):
                out, report = export_model(name, source, work, args.repeats)
            files = {"float": float_variant(out, work), "int8": out}
            for kind, folder in files.items():
                size = (folder / ("model.float.onnx" if kind == "float" else "model.onnx")).stat().st_size
                for runtime in RUNTIMES:
                    if runtime == "openvino-default" and kind == "float":
                        continue
                    print(f"{name} {kind}: {runtime}", file=sys.stderr)
                    m = measure(folder, runtime, args.repeats)
                    details[f"{name}/{kind}/{runtime}"] = m
                    rows.append((name, source["weights"], kind, size, runtime, m, report["verdict"]))
    text = render(rows, args.repeats, time.time() - started)
    args.out.write_text(text, encoding="utf-8")
    (args.out.with_suffix(".json")).write_text(json.dumps(details, indent=1, default=str) + "\n", encoding="utf-8")
    if not args.no_benchmarks_md:
        update_benchmarks_md(text)
    print(text)
    return 0


def render(rows: list, repeats: int, seconds: float) -> str:
    """results_runtimes.md: machine header, one table row per model, file and runtime."""
    machine = machine_summary()
    try:
        import openvino

        machine["openvino"] = openvino.__version__.split("-")[0]
    except ImportError:
        machine["openvino"] = "not installed"
    for package in ("node", "web"):
        lock = ROOT / "samples" / package / "package-lock.json"
        deps = json.loads(lock.read_text())["packages"]
        machine[f"onnxruntime-{package}"] = deps.get(f"node_modules/onnxruntime-{package}", {}).get("version", "?")
    table = []
    for name, weights, kind, size, runtime, m, gate in rows:
        if "error" in m:
            table.append((name, kind, RUNTIME_NAMES[runtime], "error", "–", "–", "–", m["error"]))
            continue
        figs = m["figures"]
        table.append((
            name, kind, RUNTIME_NAMES[runtime] + (f" ({m['precision'].split('=')[-1]})" if runtime == "openvino-default" else ""),
            fmt_ms(m["latency_ms"]) if m.get("latency_ms") is not None else "–",
            f"{figs['cosine']:.6f}", "–" if figs.get("top1_agreement") is None else f"{figs['top1_agreement']:.3f}",
            f"{m['max_abs_diff_vs_export']:.2g}" if m.get("max_abs_diff_vs_export") is not None else "–",
            "pass" if m["passed"] else "FAIL",
        ))
    weights = {name: w for name, w, *_ in rows}
    head = [
        f"Batch-1 latency of the same files on each runtime, one thread, median of {repeats} runs; golden vectors: 8 real "
        "validation samples with the PyTorch outputs, judged with the export gate's tolerance (cosine, SQNR, top-1 agreement).",
        "`max diff vs ORT` is the largest absolute difference from onnxruntime-python's output on the same file "
        "(kernel differences, not quantization loss). Models: " + "; ".join(f"{n}: {w} weights" for n, w in weights.items()) + ".",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in machine.items()) + f". Run time {seconds / 60:.1f} min.",
        "",
        "",
    ]
    return "\n".join(head) + markdown_table(
        ["model", "file", "runtime", "latency ms", "cosine vs PyTorch", "top-1 agr.", "max diff vs ORT", "golden"], table,
        right_from=3) + "\n"


def update_benchmarks_md(text: str) -> None:
    """Replace (or append) the `## Runtimes` section of BENCHMARKS.md, leaving every other section alone."""
    title = "## Runtimes ([results_runtimes.md](benchmarks/results_runtimes.md))"
    current = BENCHMARKS_MD.read_text(encoding="utf-8") if BENCHMARKS_MD.is_file() else "# Benchmarks\n"
    section = f"{title}\n\n`python benchmarks/bench_runtimes.py`. {text.strip()}\n"
    start = current.find("## Runtimes")
    if start == -1:
        updated = current.rstrip("\n") + "\n\n" + section
    else:
        end = current.find("\n## ", start + 1)
        updated = current[:start] + section + ("" if end == -1 else current[end:])
    BENCHMARKS_MD.write_text(updated, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
