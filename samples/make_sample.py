"""Regenerate the bundled digits sample (`samples/digits/`) deterministically.

Run from the repository root: `python samples/make_sample.py [--out samples/digits]`
(or `python -m samples.make_sample`). The data is scikit-learn's bundled 8x8 digits,
scaled to [0, 1] and upsampled to 16x16; a fixed-seed permutation splits it into
calibration, validation and training sets; `DigitsCNN` is trained on the training set
with seeded, deterministic, single-threaded kernels and saved in the four model formats
the exporter loads. Every file is first written into a staging folder inside `--out`
and moved into place with `os.replace` only once all of them have been written.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

if __package__ in (None, ""):  # run as a script: make `samples` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from samples.architectures import DigitsCNN  # noqa: E402

SPLIT_SEED = 0
TRAIN_SEED = 0
CALIBRATION_SIZE = 300
VALIDATION_SIZE = 300
IMAGES_PER_CLASS = 10
IMAGE_SIZE = 16
EPOCHS = 12
BATCH_SIZE = 32
LEARNING_RATE = 2e-3
MIN_VALIDATION_ACCURACY = 0.95
MAX_EXPORT_BATCH = 1024

MODEL_FILES = (
    "digits_cnn.torchscript.pt",
    "digits_cnn.pt2",
    "digits_cnn.state_dict.pt",
    "digits_cnn.pickle.pt",
)


@dataclass(frozen=True)
class DigitsSplit:
    """Inputs (N, 1, 16, 16) float32 in [0, 1] and labels (N,) int64 for one split."""

    inputs: np.ndarray
    labels: np.ndarray


def load_digits_16x16() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 scikit-learn digits as (N, 1, 16, 16) float32 in [0, 1] and (N,) int64 labels.

    The 8x8 images (values 0..16) are divided by 16, then upsampled with bilinear
    interpolation (`align_corners=False`), which keeps every value inside [0, 1].
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    large = nn.functional.interpolate(small, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    return large.numpy().astype(np.float32), digits.target.astype(np.int64)


def split_digits(inputs: np.ndarray, labels: np.ndarray) -> dict[str, DigitsSplit]:
    """Split by a fixed-seed permutation: first 300 calibration, next 300 validation, rest training."""
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    bounds = {
        "calib": order[:CALIBRATION_SIZE],
        "val": order[CALIBRATION_SIZE : CALIBRATION_SIZE + VALIDATION_SIZE],
        "train": order[CALIBRATION_SIZE + VALIDATION_SIZE :],
    }
    return {name: DigitsSplit(np.ascontiguousarray(inputs[idx]), labels[idx]) for name, idx in bounds.items()}


@contextlib.contextmanager
def deterministic_torch(seed: int) -> Iterator[None]:
    """Seed torch, force deterministic kernels and one thread; restore both settings afterwards."""
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic)


def train_digits_cnn(train: DigitsSplit) -> DigitsCNN:
    """Train a fresh `DigitsCNN` with Adam for `EPOCHS` epochs; return it in eval mode.

    Same data, seed and torch version give the same weights: the shuffle uses a seeded
    generator, and kernels are deterministic and single-threaded.
    """
    with deterministic_torch(TRAIN_SEED):
        model = DigitsCNN(num_classes=10)
        optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS)
        inputs = torch.from_numpy(train.inputs)
        labels = torch.from_numpy(train.labels)
        shuffle = torch.Generator().manual_seed(TRAIN_SEED)
        model.train()
        for _ in range(EPOCHS):
            for batch in torch.randperm(len(labels), generator=shuffle).split(BATCH_SIZE):
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(model(inputs[batch]), labels[batch])
                loss.backward()
                optimizer.step()
            scheduler.step()
    return model.eval()


def accuracy(model: nn.Module, split: DigitsSplit) -> float:
    """Top-1 accuracy of `model` on `split`, computed in one batch without gradients."""
    with torch.no_grad():
        predicted = model(torch.from_numpy(split.inputs)).argmax(dim=1).numpy()
    return float((predicted == split.labels).mean())


def sample_image_rows(labels: np.ndarray, per_class: int = IMAGES_PER_CLASS) -> dict[int, list[int]]:
    """For each digit 0..9, the indices of its first `per_class` rows in `labels`."""
    return {digit: np.flatnonzero(labels == digit)[:per_class].tolist() for digit in range(10)}


def to_uint8_pixels(image: np.ndarray) -> np.ndarray:
    """A (16, 16) float image in [0, 1] as 8-bit grayscale pixels, `round(x * 255)`."""
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def write_model_files(model: DigitsCNN, example: torch.Tensor, folder: Path) -> None:
    """Save `model` as TorchScript, `torch.export` program (dynamic batch), state dict and pickle."""
    with torch.no_grad():
        scripted = torch.jit.trace(model, example)
    torch.jit.save(scripted, str(folder / "digits_cnn.torchscript.pt"))

    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    program = torch.export.export(model, (example,), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, str(folder / "digits_cnn.pt2"))

    torch.save(model.state_dict(), folder / "digits_cnn.state_dict.pt")
    torch.save(model, folder / "digits_cnn.pickle.pt")


def write_data_files(splits: dict[str, DigitsSplit], folder: Path) -> None:
    """Save calib.npz / val.npz (keys `input`, `labels`) and the calibration PNG folder."""
    from PIL import Image

    for name in ("calib", "val"):
        np.savez_compressed(folder / f"{name}.npz", input=splits[name].inputs, labels=splits[name].labels)
    calib = splits["calib"]
    for digit, rows in sample_image_rows(calib.labels).items():
        class_folder = folder / "images" / str(digit)
        class_folder.mkdir(parents=True, exist_ok=True)
        for row in rows:
            Image.fromarray(to_uint8_pixels(calib.inputs[row, 0]), mode="L").save(class_folder / f"{row:03d}.png")


def write_readme(folder: Path, val_accuracy: float) -> None:
    """Describe every file of the sample and how to regenerate it."""
    text = f"""# Digits sample

A tiny, fully reproducible model + data set for trying the exporter end to end and for tests.
Generated by `samples/make_sample.py`; regenerate from the repository root with:

    python samples/make_sample.py --out samples/digits

## Data
scikit-learn's bundled digits (`sklearn.datasets.load_digits`, 1797 8x8 images, values 0..16),
divided by 16 to [0, 1] and upsampled to 16x16 with bilinear interpolation
(`torch.nn.functional.interpolate`, `align_corners=False`). A fixed-seed permutation
(`numpy.random.default_rng({SPLIT_SEED})`) gives {CALIBRATION_SIZE} calibration, {VALIDATION_SIZE} validation and
the remaining 1197 training samples (training samples are not shipped).

| file | contents |
|---|---|
| `calib.npz` | `input` ({CALIBRATION_SIZE}, 1, 16, 16) float32 in [0, 1], `labels` ({CALIBRATION_SIZE},) int64 |
| `val.npz` | `input` ({VALIDATION_SIZE}, 1, 16, 16) float32 in [0, 1], `labels` ({VALIDATION_SIZE},) int64 |
| `images/<digit>/<row>.png` | 8-bit grayscale 16x16 PNGs of the first {IMAGES_PER_CLASS} calibration samples of each class; `<row>` is the sample's row in `calib.npz` (zero-padded), pixel = round(x * 255) |

## Model
`samples.architectures:DigitsCNN` (89,658 parameters), trained with Adam (lr {LEARNING_RATE},
cosine schedule, batch {BATCH_SIZE}, {EPOCHS} epochs) under `torch.manual_seed({TRAIN_SEED})`,
`torch.use_deterministic_algorithms(True)` and one thread. Validation accuracy: {val_accuracy:.4f}.
Input: (N, 1, 16, 16) float32 in [0, 1]; output: (N, 10) logits.

| file | format | how to load |
|---|---|---|
| `digits_cnn.torchscript.pt` | TorchScript (`torch.jit.trace`) | `torch.jit.load(path)` |
| `digits_cnn.pt2` | `torch.export` program, dynamic batch 1..{MAX_EXPORT_BATCH} | `torch.export.load(path).module()` |
| `digits_cnn.state_dict.pt` | state dict | `DigitsCNN().load_state_dict(torch.load(path))`, or `--model-class samples.architectures:DigitsCNN` |
| `digits_cnn.pickle.pt` | whole pickled `nn.Module` | `torch.load(path, weights_only=False)`; executes pickled code, so the exporter needs an explicit trust flag |

All four give the same logits. Files are only as reproducible as the torch version that made them
({torch.__version__}).
"""
    (folder / "README.md").write_text(text, encoding="utf-8")


def move_into_place(staging: Path, out: Path) -> None:
    """Move every staged file into `out` with `os.replace`; the images folder is replaced whole."""
    if (out / "images").exists():
        shutil.rmtree(out / "images")
    os.replace(staging / "images", out / "images")
    for path in sorted(staging.iterdir()):
        os.replace(path, out / path.name)


def make_sample(out: Path) -> float:
    """Build the whole digits sample into `out` and return the validation accuracy.

    Raises RuntimeError (before writing anything) if training misses the 0.95 accuracy floor.
    """
    splits = split_digits(*load_digits_16x16())
    started = time.perf_counter()
    model = train_digits_cnn(splits["train"])
    seconds = time.perf_counter() - started
    val_accuracy = accuracy(model, splits["val"])
    print(f"trained DigitsCNN in {seconds:.1f} s; validation accuracy {val_accuracy:.4f}")
    if val_accuracy < MIN_VALIDATION_ACCURACY:
        raise RuntimeError(f"validation accuracy {val_accuracy:.4f} is below the required {MIN_VALIDATION_ACCURACY}")

    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    try:
        example = torch.from_numpy(splits["calib"].inputs[:2])
        write_model_files(model, example, staging)
        write_data_files(splits, staging)
        write_readme(staging, val_accuracy)
        move_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return val_accuracy


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: `python samples/make_sample.py [--out FOLDER]`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("samples/digits"), help="output folder (default: samples/digits)")
    args = parser.parse_args(argv)
    make_sample(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
