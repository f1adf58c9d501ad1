"""The committed digits sample in `samples/digits/`: every model format loads and agrees, data is sound."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from samples.architectures import DigitsCNN
from samples.make_sample import load_digits_16x16, split_digits

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "digits"


def load_split(name: str) -> tuple[np.ndarray, np.ndarray]:
    """`input` and `labels` arrays of calib.npz or val.npz."""
    with np.load(SAMPLE / f"{name}.npz") as data:
        assert sorted(data.files) == ["input", "labels"]
        return data["input"], data["labels"]


def load_all_formats() -> dict[str, torch.nn.Module]:
    """The shipped model, loaded once from each of its four files."""
    from_state_dict = DigitsCNN(num_classes=10)
    from_state_dict.load_state_dict(torch.load(SAMPLE / "digits_cnn.state_dict.pt", weights_only=True))
    return {
        "torchscript": torch.jit.load(SAMPLE / "digits_cnn.torchscript.pt"),
        "export": torch.export.load(SAMPLE / "digits_cnn.pt2").module(),
        "state_dict": from_state_dict.eval(),
        "pickle": torch.load(SAMPLE / "digits_cnn.pickle.pt", weights_only=False).eval(),
    }


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    return load_all_formats()


def test_sample_folder_is_complete_and_small() -> None:
    expected = {
        "README.md", "calib.npz", "val.npz", "images",
        "digits_cnn.torchscript.pt", "digits_cnn.pt2", "digits_cnn.state_dict.pt", "digits_cnn.pickle.pt",
    }
    assert {p.name for p in SAMPLE.iterdir()} == expected
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert total < 2_000_000


def test_pickle_is_a_digits_cnn(models: dict[str, torch.nn.Module]) -> None:
    assert type(models["pickle"]) is DigitsCNN


def test_all_formats_give_the_same_logits(models: dict[str, torch.nn.Module]) -> None:
    inputs, _ = load_split("val")
    batch = torch.from_numpy(inputs[:8])
    with torch.no_grad():
        logits = {name: model(batch) for name, model in models.items()}
    reference = logits["state_dict"]
    assert reference.shape == (8, 10)
    for name, value in logits.items():
        torch.testing.assert_close(value, reference, rtol=0, atol=1e-5, msg=f"{name} differs from state_dict")


def test_exported_program_has_a_dynamic_batch(models: dict[str, torch.nn.Module]) -> None:
    inputs, _ = load_split("val")
    with torch.no_grad():
        assert models["export"](torch.from_numpy(inputs[:1])).shape == (1, 10)
        assert models["export"](torch.from_numpy(inputs[:37])).shape == (37, 10)


def test_shipped_model_accuracy_on_validation(models: dict[str, torch.nn.Module]) -> None:
    inputs, labels = load_split("val")
    with torch.no_grad():
        predicted = models["state_dict"](torch.from_numpy(inputs)).argmax(dim=1).numpy()
    accuracy = float((predicted == labels).mean())
    assert accuracy >= 0.95, accuracy


@pytest.mark.parametrize("name", ["calib", "val"])
def test_split_shapes_dtypes_and_ranges(name: str) -> None:
    inputs, labels = load_split(name)
    assert inputs.shape == (300, 1, 16, 16) and inputs.dtype == np.float32
    assert labels.shape == (300,) and labels.dtype == np.int64
    assert inputs.min() >= 0.0 and inputs.max() <= 1.0
    assert set(labels.tolist()) == set(range(10))


def test_calibration_and_validation_are_disjoint() -> None:
    calib, _ = load_split("calib")
    val, _ = load_split("val")
    calib_rows = {row.tobytes() for row in calib.reshape(len(calib), -1)}
    val_rows = {row.tobytes() for row in val.reshape(len(val), -1)}
    assert len(calib_rows) == 300 and len(val_rows) == 300
    assert not calib_rows & val_rows


def test_shipped_splits_match_the_generator() -> None:
    splits = split_digits(*load_digits_16x16())
    assert len(splits["train"].labels) == 1797 - 600
    for name in ("calib", "val"):
        inputs, labels = load_split(name)
        np.testing.assert_array_equal(inputs, splits[name].inputs)
        np.testing.assert_array_equal(labels, splits[name].labels)


def test_image_folder_has_ten_classes_of_ten_pngs() -> None:
    classes = sorted(p.name for p in (SAMPLE / "images").iterdir())
    assert classes == [str(d) for d in range(10)]
    for digit in classes:
        files = sorted((SAMPLE / "images" / digit).iterdir())
        assert len(files) == 10 and all(f.suffix == ".png" for f in files)


def test_pngs_decode_to_the_calibration_arrays() -> None:
    inputs, labels = load_split("calib")
    checked = 0
    for png in sorted((SAMPLE / "images").glob("*/*.png")):
        row = int(png.stem)
        assert labels[row] == int(png.parent.name)
        with Image.open(png) as image:
            assert image.mode == "L" and image.size == (16, 16)
            pixels = np.asarray(image, dtype=np.float32) / 255.0
        np.testing.assert_allclose(pixels, inputs[row, 0], rtol=0, atol=1 / 255)
        checked += 1
    assert checked == 100


def test_pngs_are_the_first_ten_calibration_samples_of_each_class() -> None:
    _, labels = load_split("calib")
    for digit in range(10):
        rows = sorted(int(p.stem) for p in (SAMPLE / "images" / str(digit)).glob("*.png"))
        assert rows == np.flatnonzero(labels == digit)[:10].tolist()
