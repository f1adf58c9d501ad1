"""Bad input: one line naming the problem and the fix, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from exporter.cli import main

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "digits"
PT2 = str(SAMPLE / "digits_cnn.pt2")
CALIB = str(SAMPLE / "calib.npz")


def _corrupt_model(d: Path) -> list[str]:
    (d / "corrupt.pt").write_bytes((SAMPLE / "digits_cnn.torchscript.pt").read_bytes()[:5000])
    return [str(d / "corrupt.pt"), "--calib", CALIB]


def _wrong_format(d: Path) -> list[str]:
    (d / "notes.txt").write_text("hello")
    return [str(d / "notes.txt"), "--calib", CALIB]


def _shape_mismatch(d: Path) -> list[str]:
    np.save(d / "small.npy", np.load(CALIB)["input"][:, :, :8, :8])
    return [PT2, "--calib", str(d / "small.npy")]


def _wrong_keys(d: Path) -> list[str]:
    x = np.load(CALIB)["input"]
    np.savez(d / "keys.npz", a=x, b=x)
    return [PT2, "--calib", str(d / "keys.npz")]


def _fixed_batch_program(d: Path) -> list[str]:
    import torch

    from samples.architectures import DigitsCNN

    torch.export.save(torch.export.export(DigitsCNN().eval(), (torch.rand(1, 1, 16, 16),)), str(d / "fixed.pt2"))
    return [str(d / "fixed.pt2"), "--calib", CALIB]


def _nan(d: Path) -> list[str]:
    x = np.load(CALIB)["input"].copy()
    x[0, 0, 3, 3] = np.nan
    np.savez(d / "nan.npz", input=x)
    return [PT2, "--calib", str(d / "nan.npz"), "--val-samples", "10", "--seed", "1"]


def _empty_folder(d: Path) -> list[str]:
    (d / "empty").mkdir()
    return [PT2, "--calib", str(d / "empty")]


def _unreadable_image(d: Path) -> list[str]:
    (d / "imgs" / "0").mkdir(parents=True)
    (d / "imgs" / "0" / "bad.png").write_bytes(b"not a png")
    return [PT2, "--calib", str(d / "imgs"), "--image-preset", "gray-unit"]


def _output_exists(d: Path) -> list[str]:
    (d / "out").mkdir()
    (d / "out" / "model.onnx").write_text("keep me")
    return [PT2, "--calib", CALIB]


CASES = [
    # (id, make args, exact message after "error: " with {d} = the case folder)
    ("corrupt model", _corrupt_model,
     "model file {d}/corrupt.pt is truncated or corrupt (incomplete zip archive): re-save or re-download it"),
    ("wrong format", _wrong_format,
     "{d}/notes.txt is not a PyTorch model file (expected a TorchScript archive, a torch.export .pt2, or a torch.save file)"),
    ("pickle without trust", lambda d: [str(SAMPLE / "digits_cnn.pickle.pt"), "--calib", CALIB],
     f"{SAMPLE}/digits_cnn.pickle.pt is a pickled Python object (a whole nn.Module): unpickling runs arbitrary code "
     "from the file: pass --trust-pickle only if you trust its source, or save a state dict and use --model-class"),
    ("missing class", lambda d: [str(SAMPLE / "digits_cnn.state_dict.pt"), "--calib", CALIB],
     f"{SAMPLE}/digits_cnn.state_dict.pt is a state dict (weights only): pass --model-class package.module:ClassName "
     "(and --model-kwargs JSON if its constructor needs arguments)"),
    ("class not importable", lambda d: [str(SAMPLE / "digits_cnn.state_dict.pt"), "--model-class", "samples.nope:Net", "--calib", CALIB],
     "cannot import --model-class module 'samples.nope': ModuleNotFoundError: No module named 'samples.nope'"),
    ("calibration shape mismatch", _shape_mismatch,
     "the model rejects input 'input' of shape (1, 1, 8, 8): Guard failed: x.size()[2] == 16 "
     "(check --input-shape and the calibration data)"),
    ("input-shape vs data", lambda d: [PT2, "--calib", CALIB, "--input-shape", "1,1,8,8"],
     "calibration sample 0 (calib.npz[1]): input 'input' has shape (1, 16, 16), expected (1, 8, 8) "
     "(--input-shape or the model's first layer decides)"),
    ("wrong key", _wrong_keys,
     "calibration data npz file {d}/keys.npz (300 samples, keys 'a', 'b') has keys ['a', 'b'] but the model has one "
     "input ['input']: give one array per sample, or name it 'input' and drop the others"),
    ("NaN", _nan, "calibration sample 0 (nan.npz[0]): input 'input' contains NaN or Inf values; clean or drop that sample"),
    ("empty folder", _empty_folder,
     "calibration folder {d}/empty is empty: found no .npy files, and no images (jpg, jpeg, png, bmp, webp) in it or "
     "its sub-folders; add samples or point at another folder"),
    ("unreadable image", _unreadable_image,
     "cannot read image {d}/imgs/0/bad.png: cannot identify image file '{d}/imgs/0/bad.png'; remove or replace the file"),
    ("output exists", _output_exists,
     "output folder {d}/out already has files (model.onnx): pass --force to overwrite or choose another --out"),
    ("unknown target", lambda d: [PT2, "--calib", CALIB, "--target", "cpu-int9"],
     "unknown target 'cpu-int9': did you mean 'cpu-int8'"),
    ("bad input shape", lambda d: [PT2, "--calib", CALIB, "--input-shape", "1,x,16"],
     "bad --input-shape '1,x,16': expected comma-separated positive integers with the batch first, e.g. --input-shape 1,3,32,32"),
    ("static target without data", lambda d: [PT2],
     "target cpu-int8 quantizes statically and needs calibration data: pass --calib PATH"),
    ("missing model file", lambda d: [str(d / "nope.pt"), "--calib", CALIB], "model file not found: {d}/nope.pt"),
    ("bad model kwargs", lambda d: [str(SAMPLE / "digits_cnn.state_dict.pt"), "--model-class", "samples.architectures:DigitsCNN",
                                    "--model-kwargs", "{num_classes: 3}", "--calib", CALIB],
     "--model-kwargs is not valid JSON (Expecting property name enclosed in double quotes): expected e.g. '{{\"num_classes\": 10}}'"),
    ("program with a fixed batch", _fixed_batch_program,
     "{d}/fixed.pt2 was exported for a fixed batch of 1 (input 'x'): export it with a dynamic batch, "
     "torch.export.export(model, args, dynamic_shapes=({{0: torch.export.Dim('batch')}},)) with one entry per input"),
    ("pass on a TorchScript file", lambda d: [str(SAMPLE / "digits_cnn.torchscript.pt"), "--calib", CALIB, "--prune", "0.5"],
     f"{SAMPLE}/digits_cnn.torchscript.pt is a TorchScript file, whose layers compression passes cannot rebuild: save a "
     "torch.export program instead, torch.export.save(torch.export.export(model.eval(), example_args), 'model.pt2'), "
     "and pass that (or a state dict with --model-class)"),
    ("prune ratio out of range", lambda d: [str(SAMPLE / "digits_cnn.state_dict.pt"), "--model-class",
                                            "samples.architectures:DigitsCNN", "--calib", CALIB, "--prune", "1.5"],
     "bad prune ratio 1.5: expected a fraction in [0, 1), e.g. 0.5"),
    ("state dict does not fit", lambda d: [str(SAMPLE / "digits_cnn.state_dict.pt"), "--model-class", "samples.architectures:DigitsCNN",
                                           "--model-kwargs", '{"num_classes": 3}', "--calib", CALIB],
     f"state dict {SAMPLE}/digits_cnn.state_dict.pt does not fit samples.architectures:DigitsCNN: DigitsCNN: size mismatch"),
]


@pytest.mark.parametrize("name, make_args, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_exit_2_and_no_output(name, make_args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    args = make_args(tmp_path)
    out = tmp_path / "out"
    before = set(os.listdir(tmp_path))
    code = main(["export", *args, "--out", str(out), "--latency-repeats", "2"])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: " + message.format(d=tmp_path)), lines[0]
    assert "Traceback" not in err
    # Nothing written: no new files or staging folders beside the output, the existing output untouched.
    assert set(os.listdir(tmp_path)) == before
    if name == "output exists":
        assert (out / "model.onnx").read_text() == "keep me"
    else:
        assert not out.exists()


def test_force_overwrites_existing_output(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.onnx").write_text("old")
    code = main(["export", PT2, "--calib", CALIB, "--out", str(out), "--force", "--latency-repeats", "2"])
    assert code == 0, capsys.readouterr().err
    assert (out / "model.onnx").stat().st_size > 50_000
