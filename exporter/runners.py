"""Running an exported file's golden vectors on one runtime: onnxruntime in Python, OpenVINO, Node, the web.

`browser` runs the web sample page itself in headless Chromium; `web` runs the same WASM kernels in Node
(faster to start, no browser needed).

Each runner is a function registered in `RUNNERS` under its `--runtime` name:
`runner(folder, golden, time_repeats) -> RuntimeRun`, with the first output of every golden sample in
order, and the batch-1 latency when `time_repeats > 0`. The Node and web runners call the app samples
(`samples/node/app.mjs`, `samples/web/node-check.mjs`) with `node`, so what is verified is what an app
runs; a runtime that is not installed raises `RuntimeUnavailable` saying how to install it.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from exporter.errors import PlanError
from exporter.golden import GoldenSet
from exporter.registry import Registry

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
NODE_TIMEOUT_S = 600


class RuntimeUnavailable(PlanError):
    """The runtime asked for is not installed here (exit 2, with the install command)."""


@dataclass(frozen=True)
class RuntimeRun:
    """What one runtime computed on the golden inputs."""

    runtime: str
    version: str
    outputs: np.ndarray
    latency_ms: float | None = None
    precision: str = ""
    app_report: dict[str, Any] = field(default_factory=dict)  # the JS app's own verdict, when a JS app ran


Runner = Callable[[Path, GoldenSet, int], RuntimeRun]
RUNNERS: Registry[Runner] = Registry("runtime")


def _time(call: Callable[[], object], repeats: int) -> float:
    for _ in range(5):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def _run_chunks(golden: GoldenSet, folder: Path, call: Callable[[dict[str, np.ndarray]], np.ndarray]) -> tuple[np.ndarray, dict]:
    chunks = golden.chunks(golden.load_inputs(folder))
    return np.concatenate([np.asarray(call(feed), dtype=np.float32) for feed in chunks]), chunks[0]


@RUNNERS.register("python")
def run_python(folder: Path, golden: GoldenSet, time_repeats: int = 0) -> RuntimeRun:
    """onnxruntime's CPU provider in this Python process (one intra-op thread)."""
    import onnxruntime as ort

    from exporter.runtime import session_for

    session = session_for(folder / golden.model, threads=1)
    outputs, first = _run_chunks(golden, folder, lambda feed: session.run(None, feed)[0])
    latency = _time(lambda: session.run(None, first), time_repeats) if time_repeats else None
    return RuntimeRun("onnxruntime-cpu (python)", ort.__version__, outputs, latency)


def openvino_model(path: Path, precision: str = "f32", threads: int = 1):
    """An OpenVINO CPU compiled model of an ONNX file, with the inference precision hint set explicitly.

    OpenVINO's CPU plugin runs float parts in bf16 by default on CPUs with AMX/AVX-512 BF16; `f32`
    keeps them in float32 (what the exporter validates), `default` leaves the plugin's choice.
    Returns (compiled model, the precision the plugin reports it uses).
    """
    try:
        import openvino as ov
    except ImportError:
        raise RuntimeUnavailable('OpenVINO is not installed: pip install -e ".[openvino]"') from None
    core = ov.Core()
    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    if precision != "default":
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    used = hint.to_string() if hasattr(hint, "to_string") else str(hint)
    return compiled, used


def require_openvino() -> None:
    """Raise `RuntimeUnavailable` with the install command when OpenVINO cannot be imported."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        raise RuntimeUnavailable('OpenVINO is not installed: pip install -e ".[openvino]"') from None


def openvino_version() -> str:
    """The installed OpenVINO runtime's version (short form)."""
    import openvino as ov

    return ov.__version__.split("-")[0]


def run_openvino_precision(folder: Path, golden: GoldenSet, time_repeats: int = 0, precision: str = "f32") -> RuntimeRun:
    """OpenVINO's CPU plugin (one thread) at the given inference precision hint."""
    compiled, used = openvino_model(folder / golden.model, precision)
    request = compiled.create_infer_request()

    def call(feed: dict[str, np.ndarray]) -> np.ndarray:
        return np.array(request.infer(feed)[compiled.output(0)])

    outputs, first = _run_chunks(golden, folder, call)
    latency = _time(lambda: request.infer(first), time_repeats) if time_repeats else None
    return RuntimeRun("openvino-cpu", openvino_version(), outputs, latency, f"INFERENCE_PRECISION_HINT={used}")


@RUNNERS.register("openvino")
def run_openvino(folder: Path, golden: GoldenSet, time_repeats: int = 0) -> RuntimeRun:
    """OpenVINO's CPU plugin with float parts in float32 (the precision the exporter validates)."""
    return run_openvino_precision(folder, golden, time_repeats, "f32")


def _node_script(folder: Path, script: Path, package: str, golden: GoldenSet, time_repeats: int, runtime: str) -> RuntimeRun:
    node = shutil.which("node")
    if node is None:
        raise RuntimeUnavailable("node is not installed: install Node.js 18 or newer (apt-get install nodejs npm)")
    if not (script.parent / "node_modules" / package).is_dir():
        raise RuntimeUnavailable(f"{package} is not installed: run npm ci --prefix {script.parent}")
    with tempfile.TemporaryDirectory(prefix="exporter-verify-") as tmp:
        dump = Path(tmp) / "outputs.bin"
        command = [node, str(script), str(folder.resolve()), "--json", "--dump-outputs", str(dump)]
        if time_repeats:
            command += ["--time", str(time_repeats)]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=NODE_TIMEOUT_S, cwd=script.parent)
        if proc.returncode not in (0, 1) or not dump.is_file():
            message = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise PlanError(f"{runtime} could not run {folder / golden.model}: {message}")
        outputs = np.fromfile(dump, dtype="<f4").reshape(golden.reference.shape)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return RuntimeRun(runtime, str(report.get("version") or ""), outputs, report.get("latency_ms"), "", report)


@RUNNERS.register("node")
def run_node(folder: Path, golden: GoldenSet, time_repeats: int = 0) -> RuntimeRun:
    """onnxruntime-node through the Node sample app (samples/node/app.mjs)."""
    return _node_script(folder, SAMPLES / "node" / "app.mjs", "onnxruntime-node", golden, time_repeats, "onnxruntime-node")


@RUNNERS.register("web")
def run_web(folder: Path, golden: GoldenSet, time_repeats: int = 0) -> RuntimeRun:
    """onnxruntime-web's WASM backend (the browser page's kernels) run in Node (samples/web/node-check.mjs)."""
    return _node_script(folder, SAMPLES / "web" / "node-check.mjs", "onnxruntime-web", golden, time_repeats,
                        "onnxruntime-web (wasm)")


@RUNNERS.register("browser")
def run_browser(folder: Path, golden: GoldenSet, time_repeats: int = 0) -> RuntimeRun:
    """The browser page itself (samples/web/index.html, onnxruntime-web WASM) in headless Chromium."""
    from exporter.browser import PageServer, find_chromium, run_page

    chromium = find_chromium()
    if chromium is None:
        raise RuntimeUnavailable("chromium is not installed: apt-get install -y chromium (or set CHROMIUM=/path/to/chrome)")
    if not (SAMPLES / "web" / "node_modules" / "onnxruntime-web").is_dir():
        raise RuntimeUnavailable(f"onnxruntime-web is not installed: run npm ci --prefix {SAMPLES / 'web'}")
    with PageServer(folder.resolve()) as server:
        report = run_page(chromium, server, f"/web/index.html?out=/out/&report=/result&time={int(time_repeats)}")
    if "error" in report:
        raise PlanError(f"the browser page could not run {folder / golden.model}: {report['error']}")
    outputs = np.asarray(report.pop("outputs"), dtype=np.float32).reshape(golden.reference.shape)
    return RuntimeRun("onnxruntime-web (wasm, chromium)", str(report.get("version") or ""), outputs, report.get("latency_ms"), "", report)
