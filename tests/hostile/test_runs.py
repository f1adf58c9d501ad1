"""Whole runs: SIGTERM mid-run leaves nothing; two runs on the same inputs write byte-identical ONNX files;
--force replaces the exporter's files (no stale model.ort) and keeps the user's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from exporter.outputs import MANIFEST
from tests.hostile.support import CALIB, PT2, REPO

FAST = ("--latency-repeats", "2", "--no-search")


def test_sigterm_mid_run_exits_143_and_leaves_nothing(tmp_path):
    work_tmp = tmp_path / "tmp"
    work_tmp.mkdir()
    out = tmp_path / "out"
    env = {**os.environ, "TMPDIR": str(work_tmp)}
    run = subprocess.Popen([sys.executable, "-m", "exporter", "export", PT2, "--calib", CALIB, "--out", str(out), *FAST],
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    staged = []
    while time.monotonic() < deadline and run.poll() is None:
        staged = [n for n in os.listdir(tmp_path) if ".staging-" in n]
        if staged and any(os.listdir(tmp_path / staged[0])):  # mid-run: the float ONNX is being written
            break
        time.sleep(0.02)
    assert staged and run.poll() is None, "the run ended before it could be interrupted"
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.strip().splitlines() == ["error: terminated (SIGTERM); no output was written"]
    assert sorted(os.listdir(tmp_path)) == ["tmp"]  # no output, staging folder or lock
    assert not [n for n in os.listdir(work_tmp) if n.startswith("exporter-work-")]


def test_two_runs_write_identical_onnx_files_and_force_keeps_only_user_files(tmp_path, cli):
    first, second = tmp_path / "first", tmp_path / "second"
    (second / "assets").mkdir(parents=True)
    (second / "assets" / "labels.txt").write_text("0\n1\n")
    (second / "notes.md").write_text("my notes")
    (second / "model.ort").write_text("stale mobile file from an earlier run")
    (second / "golden.json").write_text("{}")
    (second / MANIFEST).write_text(json.dumps({"files": ["model.ort", "model.required_operators.config"]}))

    one = cli("export", PT2, "--calib", CALIB, "--out", first, *FAST)
    two = cli("export", PT2, "--calib", CALIB, "--out", second, "--force", *FAST)
    assert one.code == 0 and two.code == 0, one.err + two.err
    for name in ("model.onnx", "model.float.onnx"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert not (second / "model.ort").exists()
    assert (second / "notes.md").read_text() == "my notes" and (second / "assets" / "labels.txt").read_text() == "0\n1\n"
    assert sorted(set(os.listdir(second)) - {"assets", "notes.md"}) == sorted(os.listdir(first))
    assert sorted(os.listdir(tmp_path)) == ["first", "second"]


def test_sigkilled_runs_leftovers_are_swept_by_the_next_run(tmp_path, monkeypatch):
    import tempfile

    import exporter.run_lock as run_lock
    from exporter.outputs import StagedOutputs

    work_tmp = tmp_path / "tmp"
    work_tmp.mkdir()
    out = tmp_path / "out"
    env = {**os.environ, "TMPDIR": str(work_tmp)}
    run = subprocess.Popen([sys.executable, "-m", "exporter", "export", PT2, "--calib", CALIB, "--out", str(out), *FAST],
                           cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None:
        staged = [n for n in os.listdir(tmp_path) if ".staging-" in n]
        if staged and any(os.listdir(tmp_path / staged[0])):
            break
        time.sleep(0.02)
    run.kill()
    run.wait(timeout=60)
    assert [n for n in os.listdir(tmp_path) if ".staging-" in n], "nothing to sweep: the run was not mid-way"
    assert [n for n in os.listdir(work_tmp) if n.startswith("exporter-work-")]

    monkeypatch.setattr(run_lock, "STALE_SECONDS", 0.0)  # the dead run's folders are seconds old here
    monkeypatch.setattr(tempfile, "tempdir", str(work_tmp))
    time.sleep(0.05)
    run_lock.sweep_work_folders()
    staged = StagedOutputs(out, force=False)
    staged.check_writable()  # the kernel dropped the dead run's lock: this run takes it and sweeps
    staged.discard()
    assert sorted(os.listdir(tmp_path)) == ["tmp"]
    assert not [n for n in os.listdir(work_tmp) if n.startswith("exporter-work-")]
