"""The user's code going wrong is bad input in one line, and every message says what really happened."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from tests.hostile.support import CALIB, PT2, STATE_DICT, assert_one_line_error

USER = "tests.hostile.usercode"


def _model(cls: str) -> tuple[str, ...]:
    return (STATE_DICT, "--model-class", f"{USER}:{cls}")


CASES = [
    # (id, args, fragments of the one error line)
    ("model class raises in __init__", (*_model("RaisingInit"), "--calib", CALIB),
     (f"--model-class {USER}:RaisingInit raised ValueError while building the model: weights folder /models/digits is missing",)),
    ("model returns a dict", (*_model("DictOutput"), "--calib", CALIB),
     ("the model returns dict, not a tensor or a tuple of tensors",)),
    ("model outputs NaN", (*_model("NaNOutput"), "--calib", CALIB),
     ("the PyTorch model itself outputs NaN or Inf on the first sample",)),
    ("model forward raises later", (*_model("RaisesOnLargeBatch"), "--calib", CALIB),
     ("your code raised RuntimeError in forward() at", "usercode.py", "this model only runs one image at a time")),
    ("factory raises", (PT2, "--calib", f"{USER}:raising_factory"),
     (f"calibration factory '{USER}:raising_factory' raised FileNotFoundError: /data/digits/train",)),
    ("dataset __getitem__ raises", (PT2, "--calib", f"{USER}:raising_dataset"),
     ("reading item 5 raised KeyError", "fix the dataset")),
    ("one calibration sample", (PT2, "--calib", f"{USER}:one_sample"),
     (f"--calib {USER}:one_sample gives 1 sample(s), too few to hold any out for validation",)),
    ("opset 99", (PT2, "--calib", CALIB, "--opset", "99"),
     ("bad --opset 99: expected 13 to ",)),
]


@pytest.mark.parametrize("name, args, fragments", CASES, ids=[c[0] for c in CASES])
def test_user_code_and_bad_data_give_one_line_exit_2(name, args, fragments, tmp_path, cli):
    out = tmp_path / "out"
    run = cli("export", *args, "--out", out, "--latency-repeats", "2", "--no-search")
    assert_one_line_error(run, 2, *fragments)
    assert sorted(os.listdir(tmp_path)) == []


def test_integer_data_is_named_as_a_dtype_problem(tmp_path, cli):
    pixels = (np.load(CALIB)["input"] * 255).astype(np.uint8)
    np.savez(tmp_path / "pixels.npz", input=pixels)
    run = cli("export", PT2, "--calib", tmp_path / "pixels.npz", "--out", tmp_path / "out")
    assert_one_line_error(run, 2, "the model computes in floating point but the data gives integer input 'input' (uint8)",
                          "convert the data to float32")
    assert "shape" not in run.err_lines[0]


def test_full_disk_is_one_line_about_space(tmp_path, cli, monkeypatch):
    import torch

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "model.float.onnx"))

    monkeypatch.setattr(torch.onnx, "export", no_space)
    run = cli("export", PT2, "--calib", CALIB, "--out", tmp_path / "out")
    assert_one_line_error(run, 2, "no space left on the device", "free some space")
    assert sorted(os.listdir(tmp_path)) == []


def test_internal_error_is_exit_3_with_a_hint_and_traceback_only_with_v(tmp_path, cli, monkeypatch):
    import math

    import exporter.pipeline as pipeline

    # A bug inside the exporter or a library (not in the user's files): math.sqrt(run) raises TypeError.
    monkeypatch.setattr(pipeline, "export_stage", math.sqrt)
    run = cli("export", PT2, "--calib", CALIB, "--out", tmp_path / "out")
    assert_one_line_error(run, 3, "internal error: TypeError: must be real number, not ExportRun; rerun with -v for the traceback")
    verbose = cli("export", PT2, "--calib", CALIB, "--out", tmp_path / "out", "-v")
    assert verbose.code == 3 and "Traceback (most recent call last)" in verbose.err
    assert verbose.err.strip().splitlines()[-1] == "error: internal error: TypeError: must be real number, not ExportRun"
    assert sorted(os.listdir(tmp_path)) == []
