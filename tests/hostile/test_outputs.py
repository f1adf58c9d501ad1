"""Outputs are never mixed or lost: a lock per output folder, one-rename commits, --force owns only its files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from exporter.errors import OutputExistsError
from exporter.outputs import MANIFEST, StagedOutputs
from exporter.run_lock import FolderLock, STALE_SECONDS, sweep_work_folders
from tests.hostile.support import CALIB, PT2, REPO, assert_one_line_error, leftovers

FAST = ("--latency-repeats", "2", "--no-search")


def _wait_for(predicate, seconds=60.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_second_run_to_the_same_out_stops_at_once(tmp_path, cli):
    out = tmp_path / "out"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    first = subprocess.Popen([sys.executable, "-m", "exporter", "export", PT2, "--calib", CALIB, "--out", str(out), *FAST],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: (tmp_path / ".out.lock").exists()), "the first run never took its lock"
        second = cli("export", PT2, "--calib", CALIB, "--out", out, "--force", *FAST)
        assert_one_line_error(second, 2, f"--out {out} is being written by another exporter run (pid {first.pid})")
    finally:
        stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert stdout.startswith(("PASS", "WARN")), stdout
    assert (out / "model.onnx").stat().st_size > 50_000
    assert leftovers(tmp_path) == []
    assert not [n for n in os.listdir(tmp_path) if n.startswith("exporter-work-")]


def test_out_under_a_file_is_refused_before_any_work(tmp_path, cli):
    (tmp_path / "a_file").write_text("x")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a model")  # the --out check comes first, so the model is never read
    run = cli("export", broken, "--calib", CALIB, "--out", tmp_path / "a_file" / "out")
    assert_one_line_error(run, 2, f"cannot write --out {tmp_path / 'a_file' / 'out'}", "is a file, not a folder")
    assert sorted(os.listdir(tmp_path)) == ["a_file", "broken.pt"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_out_folder_is_refused_before_any_work(tmp_path, cli):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        run = cli("export", PT2, "--calib", CALIB, "--out", parent / "out")
        assert_one_line_error(run, 2, f"cannot write --out {parent / 'out'}", "permission denied")
    finally:
        parent.chmod(0o755)


def test_commit_swaps_whole_folders_and_keeps_the_old_one_on_failure(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.onnx").write_text("old model")
    (out / "notes.txt").write_text("mine")
    staged = StagedOutputs(out, force=True)
    staged.check_writable()
    staged.path("model.onnx").write_text("new model")
    real_rename = os.rename

    def failing_rename(src, dst):
        if ".staging-" in str(src):
            raise OSError(28, "No space left on device", str(dst))
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(OSError):
        staged.commit()
    monkeypatch.undo()
    assert (out / "model.onnx").read_text() == "old model" and (out / "notes.txt").read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_force_replaces_the_exporters_files_and_keeps_the_users(tmp_path):
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "data" / "x.txt").write_text("user data")
    (out / "notes.txt").write_text("user notes")
    for name in ("model.onnx", "model.ort", "model.required_operators.config", "report.md", "from_manifest.bin"):
        (out / name).write_text("stale")
    (out / MANIFEST).write_text(json.dumps({"files": ["from_manifest.bin", "model.onnx"]}))
    staged = StagedOutputs(out, force=True)
    staged.check_writable()
    staged.path("model.onnx").write_text("new")
    staged.path("report.md").write_text("new report")
    files = staged.commit()
    assert [p.name for p in files] == ["model.onnx", "report.md"]
    assert sorted(os.listdir(out)) == sorted([MANIFEST, "data", "model.onnx", "notes.txt", "report.md"])
    assert (out / "notes.txt").read_text() == "user notes" and (out / "data" / "x.txt").read_text() == "user data"
    assert json.loads((out / MANIFEST).read_text()) == {"files": ["model.onnx", "report.md"]}
    assert sorted(os.listdir(tmp_path)) == ["out"]
    with pytest.raises(OutputExistsError):
        StagedOutputs(out, force=False).check_writable()
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_dead_runs_leftovers_are_swept(tmp_path, monkeypatch):
    import tempfile

    out = tmp_path / "out"
    long_ago = time.time() - 10 * STALE_SECONDS
    dead = [tmp_path / ".out.staging-dead", tmp_path / ".other.staging-dead", tmp_path / "tmp" / "exporter-work-dead"]
    for folder in dead:
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_text("half written")
        os.utime(folder, (long_ago, long_ago))
    (tmp_path / ".out.old-dead").mkdir()  # a run killed mid-swap: the previous outputs, put back
    (tmp_path / ".out.old-dead" / "model.onnx").write_text("previous")
    young = tmp_path / ".third.staging-live"
    young.mkdir()
    alive = tmp_path / "tmp" / "exporter-work-alive"
    alive.mkdir()
    os.utime(alive, (long_ago, long_ago))
    lock = FolderLock(alive / ".lock")
    assert lock.try_acquire()
    try:
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
        assert sweep_work_folders() == [tmp_path / "tmp" / "exporter-work-dead"]
        staged = StagedOutputs(out, force=True)
        staged.check_writable()
        staged.discard()
    finally:
        lock.release()
    assert (out / "model.onnx").read_text() == "previous"
    assert sorted(os.listdir(tmp_path)) == [".third.staging-live", "out", "tmp"]
    assert os.listdir(tmp_path / "tmp") == ["exporter-work-alive"]
