"""The competing int8 tools, each run on one zoo model: how it is invoked and how long it took.

Every tool starts from the same float ONNX file, the one `exporter export --target cpu-fp32`
writes, and the same calib.npz, except "ours", which is this project's whole default command
from the `.pt2` file. Quark and NNCF run in their own venvs (Quark 0.13 pins onnx <= 1.22 and
onnxruntime <= 1.28) and write a file that is then timed and validated in this environment.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUARK_PYTHON = Path("/work/venvs/quark/bin/python")
NNCF_PYTHON = Path("/work/venvs/nncf/bin/python")


@dataclass
class Candidate:
    """One tool's output for one model: the file (None if the tool failed), its wall time, what happened."""

    column: str
    path: str | None
    wall_s: float
    status: str  # ok | failed | timeout | gate-fail (ours, exit 1: file written)
    note: str = ""

    def save(self, folder: Path) -> None:
        """Cache this result as folder/<column>.json."""
        (folder / f"{self.column}.json").write_text(json.dumps(asdict(self), indent=1))

    @staticmethod
    def load(folder: Path, column: str) -> "Candidate | None":
        """The cached result of `column`, if any."""
        path = folder / f"{column}.json"
        return Candidate(**json.loads(path.read_text())) if path.exists() else None


def _run(command: list[str], timeout_s: float, log: Path) -> tuple[int | None, float, str]:
    start = time.time()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        log.write_text(f"$ {' '.join(command)}\nTIMEOUT after {timeout_s} s\n{exc.stdout or ''}\n{exc.stderr or ''}")
        return None, time.time() - start, f"timeout after {timeout_s:.0f} s"
    wall = time.time() - start
    log.write_text(f"$ {' '.join(command)}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}")
    lines = [l for l in (done.stdout + "\n" + done.stderr).splitlines() if l.strip()]
    return done.returncode, wall, (lines[-1] if done.returncode not in (0,) and lines else (done.stdout.splitlines() or [""])[0])


def exporter_command(zoo_model: Path, target: str, out: Path) -> list[str]:
    """`exporter export <model.pt2> --target T --calib calib.npz --val val.npz --out OUT --force`."""
    return [
        sys.executable, "-m", "exporter", "export", str(zoo_model / "model.pt2"), "--target", target,
        "--calib", str(zoo_model / "calib.npz"), "--val", str(zoo_model / "val.npz"), "--out", str(out), "--force",
        "--no-progress",
    ]


def float_onnx(zoo_model: Path, work: Path, timeout_s: float) -> Candidate:
    """The float ONNX from `exporter export --target cpu-fp32` (also the check that the model exports)."""
    out = work / "fp32"
    rc, wall, note = _run(exporter_command(zoo_model, "cpu-fp32", out), timeout_s, work / "fp32.log")
    path = out / "model.onnx"
    status = "ok" if rc == 0 and path.exists() else ("timeout" if rc is None else "failed")
    return Candidate("float", str(path) if status == "ok" else None, wall, status, note)


def ort_recipe(float_path: str, calib: Path, work: Path) -> Candidate:
    """onnxruntime's hand recipe: quant_pre_process, then quantize_static QDQ, per-channel, U8S8, MinMax."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    sys.path.insert(0, str(HERE))
    from npz_reader import NpzReader, load_inputs

    import onnx

    start = time.time()
    pre = work / "ort.pre.onnx"
    out = work / "ort.onnx"
    note = ""
    try:
        try:
            quant_pre_process(float_path, str(pre))
        except Exception as exc:  # what a user does next: skip the symbolic shape inference that failed
            quant_pre_process(float_path, str(pre), skip_symbolic_shape=True)
            note = f"quant_pre_process needed skip_symbolic_shape ({type(exc).__name__} in symbolic shape inference)"
        names = [i.name for i in onnx.load(str(pre), load_external_data=False).graph.input]
        reader = NpzReader(load_inputs(str(calib), names), batch=8)
        quantize_static(
            str(pre), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
        )
    except Exception as exc:  # a tool failure is a table entry, not a crash of the benchmark
        return Candidate("ort", None, time.time() - start, "failed", f"{type(exc).__name__}: {str(exc)[:200]}")
    return Candidate("ort", str(out), time.time() - start, "ok", note)


def quark(float_path: str, calib: Path, work: Path, iterations: int, timeout_s: float) -> Candidate:
    """AMD Quark CLE + AdaRound (U8S8, per-channel weights), in /work/venvs/quark."""
    out = work / "quark.onnx"
    command = [str(QUARK_PYTHON), str(HERE / "quark_quantize.py"), float_path, str(calib), str(out),
               "--iterations", str(iterations)]
    rc, wall, note = _run(command, timeout_s, work / "quark.log")
    status = "ok" if rc == 0 and out.exists() else ("timeout" if rc is None else "failed")
    return Candidate("quark", str(out) if status == "ok" else None, wall, status, "" if status == "ok" else note)


def nncf(float_path: str, calib: Path, work: Path, transformer: bool, timeout_s: float) -> Candidate:
    """NNCF's ONNX PTQ (transformer mode for transformers), in /work/venvs/nncf."""
    out = work / "nncf.onnx"
    command = [str(NNCF_PYTHON), str(HERE / "nncf_quantize.py"), float_path, str(calib), str(out)]
    if transformer:
        command.append("--transformer")
    rc, wall, note = _run(command, timeout_s, work / "nncf.log")
    status = "ok" if rc == 0 and out.exists() else ("timeout" if rc is None else "failed")
    return Candidate("nncf", str(out) if status == "ok" else None, wall, status, "" if status == "ok" else note)


def ours(zoo_model: Path, work: Path, timeout_s: float) -> Candidate:
    """This project's default: `exporter export model.pt2 --target cpu-int8 --calib ... --val ...`."""
    out = work / "ours"
    rc, wall, note = _run(exporter_command(zoo_model, "cpu-int8", out), timeout_s, work / "ours.log")
    path = out / "model.onnx"
    if rc is None:
        return Candidate("ours", None, wall, "timeout", note)
    if not path.exists():
        return Candidate("ours", None, wall, "failed", note)
    return Candidate("ours", str(path), wall, "ok" if rc == 0 else f"exit {rc}", note)
