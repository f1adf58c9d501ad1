"""Hostile calibration data through `exporter export`: exit 2 and one line, nothing written; and
`--calib-nproc 2` end to end on the digits sample."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest

from exporter.cli import main
from exporter.errors import PlanError
from exporter.plan import build_plan
from tests.calibration.test_calibration_bombs import npy_header, write_member

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "samples" / "digits"
MODEL = DIGITS / "digits_cnn.pt2"


def export(capsys, *flags: str) -> tuple[int, list[str]]:
    code = main(["export", str(MODEL), "--target", "cpu-int8", "--no-progress", *flags])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_header_bomb_npz_is_exit_2_and_one_line(tmp_path, capsys):
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        write_member(archive, "input.npy", npy_header((10**10, 1, 16, 16)), 2048)
    code, lines = export(capsys, "--calib", str(bomb), "--out", str(tmp_path / "out"))
    assert code == 2
    assert len(lines) == 1
    assert re.fullmatch(
        rf"error: array 'input' of npz file {re.escape(str(bomb))} declares 10000000000 samples \(10000000000x1x16x16 "
        r"float32, 9\.3 TiB\) but holds 2\.0 KiB of data: the file is truncated or crafted; save it again with "
        r"np\.save/np\.savez",
        lines[0],
    )
    assert not (tmp_path / "out").exists()


def test_raising_dataset_is_exit_2_naming_the_item(tmp_path, capsys, factory_module):
    factory_module(
        "broken_digits",
        "import numpy as np\n\n"
        "class Broken:\n"
        "    def __len__(self):\n        return 40\n"
        "    def __getitem__(self, i):\n"
        "        if i == 13:\n            raise KeyError('missing file 13.png')\n"
        "        return np.zeros((1, 16, 16), np.float32)\n\n"
        "def make():\n    return Broken()\n",
    )
    code, lines = export(capsys, "--calib", "broken_digits:make", "--out", str(tmp_path / "out"))
    assert code == 2
    assert lines == [
        "error: calibration factory 'broken_digits:make': reading item 13 raised KeyError: 'missing file 13.png'; "
        "fix the dataset"
    ]
    assert not (tmp_path / "out").exists()


def test_calib_nproc_is_a_positive_integer():
    plan = build_plan({"model": str(MODEL), "calib": str(DIGITS / "calib.npz"), "calib_nproc": 2})
    assert plan.data.calib_nproc == 2
    assert build_plan({"model": str(MODEL), "calib": str(DIGITS / "calib.npz")}).data.calib_nproc == 1
    with pytest.raises(PlanError, match=re.escape("bad --calib-nproc 0: expected a positive integer")):
        build_plan({"model": str(MODEL), "calib": str(DIGITS / "calib.npz"), "calib_nproc": 0})


def test_endless_factory_and_two_calibration_processes_end_to_end(tmp_path, capsys, factory_module):
    """An endless factory of real digits with --calib-samples 64: it is read for 80 items (64 + the
    validation share), calibrated over two torchrun processes, and the int8 model agrees with PyTorch."""
    factory_module(
        "endless_digits",
        "import itertools\nimport numpy as np\n\n"
        f"DATA = np.load({str(DIGITS / 'calib.npz')!r})\n"
        "READ = []\n\n"
        "def make():\n"
        "    def items():\n"
        "        for i in itertools.count():\n"
        "            READ.append(i)\n"
        "            yield DATA['input'][i % 300], int(DATA['labels'][i % 300])\n"
        "    return items()\n",
    )
    out = tmp_path / "out"
    code, lines = export(capsys, "--calib", "endless_digits:make", "--calib-samples", "64", "--calib-nproc", "2", "--out", str(out))
    assert code == 0, lines
    report = json.loads((out / "report.json").read_text())
    assert '"calib_nproc": 2' in (out / "plan.json").read_text()
    import endless_digits

    assert len(endless_digits.READ) == 81  # 64 + 16 held out, plus one item to see there were more
    assert report["quantization"]["calibration_batches"] == 4  # 64 samples in batches of 16, over both processes
    assert report["data"]["notes"] == []  # the user's own limit stopped the factory: no cap note


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--calib-nnodes", "2"], "calibration across machines (--calib-nnodes > 1) needs --calib-rdzv-endpoint host:port of node 0"),
        (["--calib-nnodes", "2", "--calib-node-rank", "2", "--calib-rdzv-endpoint", "h:1"],
         "bad calib_node_rank 2: expected 0 .. 1 for 2 machine(s)"),
        (["--calib-nnodes", "2", "--calib-rdzv-endpoint", "host0"], "bad calib_rdzv_endpoint 'host0': expected host:port, e.g. host0:29500"),
    ],
)
def test_bad_multi_machine_calibration_flags_are_one_line(tmp_path, capsys, flags, message):
    code, lines = export(capsys, "--calib", str(DIGITS / "calib.npz"), "--out", str(tmp_path / "out"), *flags)
    assert (code, lines) == (2, [f"error: {message}"])
    assert not (tmp_path / "out").exists()


def test_two_machines_from_the_command_line_write_the_two_process_file(tmp_path):
    """Two exporter processes as node ranks 0 and 1 meet at a loopback endpoint: each writes the same int8 file
    as one machine running `--calib-nproc 2` (the same global world of two shards)."""
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    common = [sys.executable, "-m", "exporter", "export", str(MODEL), "--target", "cpu-int8", "--calib",
              str(DIGITS / "calib.npz"), "--no-search", "--no-progress"]
    machines = [
        subprocess.Popen([*common, "--calib-nnodes", "2", "--calib-node-rank", str(rank), "--calib-rdzv-endpoint",
                          f"127.0.0.1:{port}", "--out", str(tmp_path / f"node{rank}")],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for rank in (0, 1)
    ]
    single = subprocess.run([*common, "--calib-nproc", "2", "--out", str(tmp_path / "single")], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    results = [m.communicate(timeout=600) for m in machines]
    assert single.returncode == 0, single.stderr
    assert [m.returncode for m in machines] == [0, 0], [err for _, err in results]
    expected = (tmp_path / "single" / "model.onnx").read_bytes()
    assert (tmp_path / "node0" / "model.onnx").read_bytes() == expected
    assert (tmp_path / "node1" / "model.onnx").read_bytes() == expected
