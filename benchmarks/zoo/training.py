"""Training nets for the zoo on real bundled data, reproducibly, on a CPU.

Two real data sets with real labels, both bundled with installed packages:
- photo patches: random-resized crops of the 18 bundled photos (`photos.py`), labelled by the
  photo they were cut from (18 classes: astronaut, coffee, moon, brick texture, ...);
- scikit-learn's handwritten digits (1,797 8x8 scans, 10 classes), upscaled bilinearly.
`train_classifier` runs AdamW with a cosine schedule and label smoothing for a fixed number of
epochs, so the weights and activation statistics are those of a trained net, not of an init.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .photos import load_photos, random_resized_crops, to_nchw

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Split:
    """Train / calibration / validation arrays (NCHW float32) and their integer labels."""

    train_x: np.ndarray
    train_y: np.ndarray
    calib_x: np.ndarray
    calib_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray


def _labelled_crops(photos: list[np.ndarray], count: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(len(photos), size=count)
    crops = np.empty((count, size, size, 3), np.uint8)
    for cls in range(len(photos)):
        idx = np.flatnonzero(labels == cls)
        if len(idx):
            crops[idx] = random_resized_crops([photos[cls]], len(idx), size, seed=seed * 1000 + cls, scale=(0.02, 0.5))
    return to_nchw(crops, IMAGENET_MEAN, IMAGENET_STD), labels.astype(np.int64)


def photo_patches(size: int, train: int = 4000, calib: int = 300, val: int = 200) -> Split:
    """Crops of the bundled photos labelled by source photo; train, calib and val use different seeds."""
    photos = load_photos()
    tx, ty = _labelled_crops(photos, train, size, seed=11)
    cx, cy = _labelled_crops(photos, calib, size, seed=12)
    vx, vy = _labelled_crops(photos, val, size, seed=13)
    return Split(tx, ty, cx, cy, vx, vy)


def digits(size: int, channels: int = 1, calib: int = 250, val: int = 200, seed: int = 0) -> Split:
    """scikit-learn's digits upscaled to size x size in [0, 1]; disjoint train / calib / val scans."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.from_numpy(data.images.astype(np.float32) / 16.0)[:, None]
    images = nn.functional.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).numpy()
    images = np.repeat(images, channels, axis=1)
    order = np.random.default_rng(seed).permutation(len(images))
    x, y = images[order], data.target[order].astype(np.int64)
    c, v = slice(0, calib), slice(calib, calib + val)
    rest = slice(calib + val, None)
    return Split(x[rest], y[rest], x[c], y[c], x[v], y[v])


def _augment_digits(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 1/8 of the side (digits only), by rolling a zero-padded copy."""
    pad = max(1, x.shape[-1] // 8)
    padded = nn.functional.pad(x, (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
    return padded[..., dy : dy + x.shape[-2], dx : dx + x.shape[-1]]


def train_classifier(
    model: nn.Module, split: Split, epochs: int, lr: float = 2e-3, batch: int = 64, shift_augment: bool = False,
    seed: int = 0,
) -> float:
    """Train `model` on split.train_*, return its accuracy on split.val_*; prints one line per epoch."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x_all, y_all = torch.from_numpy(split.train_x), torch.from_numpy(split.train_y)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.02)
    steps = epochs * ((len(x_all) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    # channels-last makes PyTorch's CPU depthwise-conv backward ~1.5x faster (oneDNN path).
    layout = torch.channels_last if x_all.dim() == 4 else torch.contiguous_format
    model.to(memory_format=layout)
    for epoch in range(epochs):
        model.train()
        start, total = time.time(), 0.0
        perm = torch.randperm(len(x_all), generator=gen)
        for i in range(0, len(perm), batch):
            idx = perm[i : i + batch]
            xb = x_all[idx]
            if shift_augment:
                xb = _augment_digits(xb, gen)
            loss = loss_fn(model(xb.contiguous(memory_format=layout)), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        acc = evaluate(model, split.val_x, split.val_y)
        print(f"  epoch {epoch + 1}/{epochs} loss {total / len(perm):.3f} val acc {acc:.3f} ({time.time() - start:.0f} s)",
              flush=True)
    model.to(memory_format=torch.contiguous_format)
    model.eval()
    return evaluate(model, split.val_x, split.val_y)


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of `model` (put in eval mode) on x, y."""
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(torch.from_numpy(x[i : i + 128])).argmax(-1) for i in range(0, len(x), 128)])
    return float((pred.numpy() == y).mean())


def trained_classifier(name: str, model: nn.Module, split: Split, *, epochs: int, lr: float, trained_on: str,
                       shift_augment: bool = False, **description):
    """Train `model` on `split` and package it as a zoo entry with labelled calibration and validation inputs.

    `trained_on` names the data in the index's weights column; `description` holds the remaining
    `ZooModel` fields (what, output_kind, model_class, model_kwargs, notes).
    """
    from .common import ZooModel

    accuracy = train_classifier(model, split, epochs=epochs, lr=lr, shift_augment=shift_augment)
    return ZooModel(
        name=name, module=model, input_names=("x",),
        calib={"x": split.calib_x}, val={"x": split.val_x}, calib_labels=split.calib_y, val_labels=split.val_y,
        weights=f"trained in `benchmarks/zoo/{name}.py` ({epochs} epochs on {trained_on}); val accuracy {accuracy:.3f}",
        **description,
    )
