"""Hostile checkpoints: `--resume` never unpickles the checkpoint folder beside --out."""

from __future__ import annotations

import hashlib

import pytest

from exporter.errors import CompressionError
from exporter.training import checkpoint as ckpt
from tests.hostile.planted import hostile_checkpoint
from tests.hostile.support import CALIB, STATE_DICT, assert_one_line_error


def test_checkpoint_without_its_digest_is_refused_unread(tmp_path):
    marker = tmp_path / "marker"
    hostile_checkpoint(tmp_path / "ckpt" / ckpt.CHECKPOINT_NAME, marker)
    with pytest.raises(CompressionError, match="does not match the digest checkpoint.sha256"):
        ckpt.load_checkpoint(tmp_path / "ckpt")
    assert not marker.exists()


def test_checkpoint_with_a_forged_digest_is_still_not_unpickled(tmp_path):
    marker = tmp_path / "marker"
    path = hostile_checkpoint(tmp_path / "ckpt" / ckpt.CHECKPOINT_NAME, marker)
    (tmp_path / "ckpt" / ckpt.DIGEST_NAME).write_text(hashlib.sha256(path.read_bytes()).hexdigest())
    with pytest.raises(CompressionError, match="without unpickling it"):
        ckpt.load_checkpoint(tmp_path / "ckpt")
    assert not marker.exists()


def test_checkpoint_round_trip_and_tamper_detection(tmp_path):
    import numpy as np
    import torch

    state = {"student": torch.nn.Linear(3, 2).state_dict(), "history": [{"epoch": 0, "loss": np.float64(0.25)}],
             "rng": torch.get_rng_state(), "shape": (1, 2)}
    ckpt.save_checkpoint(tmp_path, state)
    loaded = ckpt.load_checkpoint(tmp_path)
    torch.testing.assert_close(loaded["student"]["weight"], state["student"]["weight"])
    assert loaded["history"] == [{"epoch": 0, "loss": 0.25}] and type(loaded["history"][0]["loss"]) is float
    assert loaded["shape"] == (1, 2)
    data = bytearray((tmp_path / ckpt.CHECKPOINT_NAME).read_bytes())
    data[-30] ^= 0xFF
    (tmp_path / ckpt.CHECKPOINT_NAME).write_bytes(bytes(data))
    with pytest.raises(CompressionError, match="does not match the digest"):
        ckpt.load_checkpoint(tmp_path)


def test_resume_with_a_planted_checkpoint_exits_2_and_runs_nothing(tmp_path, cli):
    marker, out = tmp_path / "marker", tmp_path / "out"
    planted = hostile_checkpoint(tmp_path / ".out.checkpoints" / "distill" / ckpt.CHECKPOINT_NAME, marker)
    (planted.parent / ckpt.DIGEST_NAME).write_text(hashlib.sha256(planted.read_bytes()).hexdigest())
    run = cli("export", STATE_DICT, "--model-class", "samples.architectures:DigitsCNN", "--calib", CALIB,
              "--calib-samples", "64", "--prune", "0.25", "--distill", "--distill-epochs", "1", "--resume",
              "--out", out, "--latency-repeats", "2")
    assert_one_line_error(run, 2, "without unpickling it", "drop --resume")
    assert not marker.exists()
    assert not out.exists()
