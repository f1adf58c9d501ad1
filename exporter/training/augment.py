"""Augmenting training batches, so that a few hundred samples give the student many different views.

The teacher labels whatever the student sees (online distillation: both run on the same augmented
batch), so no labels are needed and any view is a valid training example. Rules, per input:
- image-like (a float array of rank 4, N x C x H x W, with H and W at least `MIN_IMAGE_SIDE`): a
  random resized crop (a box of `crop_area` of the image at an aspect ratio in `aspect`, resized
  back to H x W, bilinear), a horizontal flip of half the samples (unless `flip` is off: digits,
  text), Gaussian noise of `noise` times the batch's standard deviation, and mixup: with
  probability `mixup_prob` a sample is blended with another sample of the same batch,
  `lam * x + (1 - lam) * x[partner]` with `lam ~ Beta(mixup_beta, mixup_beta)` folded to >= 0.5
  (the same partner and `lam` for every input of the sample; only when every input is image-like,
  since token ids or a side vector cannot be blended alike);
- other float inputs (sequences, audio, feature vectors): only `light`/`strong` noise (gentle, no
  crop or mixup: a blended recurrent state or token stream is not a plausible input);
- integer inputs (token ids, indices) are never changed.
`auto` is `light` when the model has an image-like input and the run is long (at least
`AUTO_MIN_EPOCHS` epochs, or a time budget), `none` otherwise: augmentation fights over-fitting
a few samples seen many times, and in a short run it only slows the student down (pruned digits
CNN, 240 samples: 0.72 vs 0.77 agreement after 12 epochs, equal after 100).

Randomness comes only from `numpy.random.default_rng([seed, epoch, step])` drawn over the whole
global batch, which every process augments before taking its own chunk: a run with N processes
sees exactly the views of a one-process run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

AUGMENT_MODES = ("auto", "none", "light", "strong")
MIN_IMAGE_SIDE = 8
"""Height and width an input needs to be cropped and flipped as an image."""

AUTO_MIN_EPOCHS = 20
"""`auto` augments runs of at least this many epochs (or limited by time only)."""


@dataclass(frozen=True)
class AugmentRecipe:
    """What one augmentation level does (see the module docstring)."""

    crop_area: tuple[float, float]
    noise: float
    mixup_prob: float
    mixup_beta: float
    other_noise: float
    aspect: tuple[float, float] = (3 / 4, 4 / 3)
    crop_prob: float = 1.0


RECIPES = {
    "light": AugmentRecipe(
        crop_area=(0.5, 1.0), noise=0.02, mixup_prob=0.5, mixup_beta=0.4, other_noise=0.01, crop_prob=0.5
    ),
    "strong": AugmentRecipe(crop_area=(0.15, 1.0), noise=0.05, mixup_prob=1.0, mixup_beta=1.0, other_noise=0.03),
}


def is_image_like(array: np.ndarray) -> bool:
    """True for a float batch of rank 4 (N, C, H, W) whose H and W are at least `MIN_IMAGE_SIDE`."""
    return (
        array.ndim == 4
        and np.issubdtype(array.dtype, np.floating)
        and min(array.shape[2:]) >= MIN_IMAGE_SIDE
    )


def resolve_mode(mode: str, sample_inputs: dict[str, np.ndarray], epochs: int | None = None) -> str:
    """`mode`, with `auto` turned into `light` (some input is image-like and `epochs`, the run's epoch
    limit, is None or at least AUTO_MIN_EPOCHS) or `none`."""
    if mode != "auto":
        return mode
    long_run = epochs is None or epochs >= AUTO_MIN_EPOCHS
    return "light" if long_run and any(is_image_like(a) for a in sample_inputs.values()) else "none"


@dataclass
class AugmentedBatch:
    """A batch after augmentation: inputs by name, and how samples were mixed (`partner`, `lam` per sample)."""

    inputs: dict[str, np.ndarray]
    partner: np.ndarray
    lam: np.ndarray

    @property
    def mixed(self) -> bool:
        """True when some sample was blended with another one."""
        return bool((self.lam < 1.0).any())

    def label_targets(self, labels: np.ndarray, positions: np.ndarray, classes: int) -> np.ndarray:
        """Label distributions of the samples at `positions`: `lam` on their own label, `1 - lam` on
        their partner's (`labels` are the whole batch's)."""
        rows = np.arange(len(positions))
        targets = np.zeros((len(positions), classes), dtype=np.float32)
        lam = self.lam[positions]
        np.add.at(targets, (rows, labels[positions]), lam)
        np.add.at(targets, (rows, labels[self.partner[positions]]), 1.0 - lam)
        return targets


def augment(
    inputs: dict[str, np.ndarray], mode: str, flip: bool, seed: int, epoch: int, step: int
) -> AugmentedBatch:
    """Augment one global batch (`mode` already resolved: none, light or strong) as the module docstring says."""
    count = len(next(iter(inputs.values())))
    partner, lam = np.arange(count), np.ones(count, dtype=np.float32)
    if mode == "none":
        return AugmentedBatch(dict(inputs), partner, lam)
    recipe = RECIPES[mode]
    rng = np.random.default_rng([seed, epoch, step])
    images = [name for name, array in inputs.items() if is_image_like(array)]
    if images and len(images) == len(inputs) and count > 1:  # a blend needs every input blended alike
        chosen = rng.random(count) < recipe.mixup_prob
        partner = np.where(chosen, rng.permutation(count), partner)
        drawn = rng.beta(recipe.mixup_beta, recipe.mixup_beta, count).astype(np.float32)
        lam = np.where(chosen & (partner != np.arange(count)), np.maximum(drawn, 1.0 - drawn), 1.0).astype(np.float32)
    out = {}
    for name, array in inputs.items():
        if name in images:
            out[name] = _augment_images(np.asarray(array), recipe, flip, rng, partner, lam)
        elif np.issubdtype(array.dtype, np.floating):
            out[name] = _add_noise(np.asarray(array), recipe.other_noise, rng)
        else:
            out[name] = array
    return AugmentedBatch(out, partner, lam)


def _augment_images(
    x: np.ndarray, recipe: AugmentRecipe, flip: bool, rng: np.random.Generator, partner: np.ndarray, lam: np.ndarray
) -> np.ndarray:
    """Crop + resize (+ flip) each image by one affine resampling, add noise, then mix."""
    n = len(x)
    low, high = recipe.crop_area
    area = rng.uniform(low, high, n)
    aspect = np.exp(rng.uniform(np.log(recipe.aspect[0]), np.log(recipe.aspect[1]), n))
    cropped = rng.random(n) < recipe.crop_prob
    width = np.where(cropped, np.minimum(np.sqrt(area * aspect), 1.0), 1.0)
    height = np.where(cropped, np.minimum(np.sqrt(area / aspect), 1.0), 1.0)
    # Box centres in normalised coordinates [-1, 1], so the box stays inside the image.
    cx = rng.uniform(-1.0, 1.0, n) * (1.0 - width)
    cy = rng.uniform(-1.0, 1.0, n) * (1.0 - height)
    mirror = np.where(rng.random(n) < 0.5, -1.0, 1.0) if flip else np.ones(n)
    theta = np.zeros((n, 2, 3), dtype=np.float32)
    theta[:, 0, 0], theta[:, 0, 2] = width * mirror, cx
    theta[:, 1, 1], theta[:, 1, 2] = height, cy
    tensor = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    grid = F.affine_grid(torch.from_numpy(theta), list(tensor.shape), align_corners=False)
    out = F.grid_sample(tensor, grid, mode="bilinear", padding_mode="reflection", align_corners=False).numpy()
    out = _add_noise(out, recipe.noise, rng)
    weight = lam.reshape(n, 1, 1, 1)
    return (weight * out + (1.0 - weight) * out[partner]).astype(x.dtype, copy=False)


def _add_noise(x: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """`x` plus Gaussian noise of `scale` times the batch's standard deviation (unchanged when `scale` is 0)."""
    if scale <= 0 or x.size == 0:
        return x
    sigma = float(np.std(x)) * scale
    return (x + rng.standard_normal(x.shape).astype(x.dtype) * sigma).astype(x.dtype, copy=False)


FLIP_AGREEMENT = 0.9
"""`flip="auto"` mirrors images when the teacher's top-1 on mirrored held-out images agrees this often with its top-1
on the originals (photos: yes; digits and text, whose mirror images mean something else: no); for outputs other
than class logits, when the mean cosine between its outputs on mirrored and original images reaches it."""


def decide_flip(
    setting: str, run_teacher: Callable[[dict[str, np.ndarray]], torch.Tensor], probe: dict[str, np.ndarray]
) -> tuple[bool, str]:
    """Whether augmentation mirrors images (`setting` on, off, or auto: the FLIP_AGREEMENT rule on the
    `probe` batch, with `run_teacher` giving the teacher's first output), and why, for the notes."""
    if setting != "auto":
        return setting == "on", f"flip {setting}"
    mirrored = {k: np.ascontiguousarray(v[..., ::-1]) if is_image_like(v) else v for k, v in probe.items()}
    with torch.no_grad():
        plain, flipped = run_teacher(probe).float(), run_teacher(mirrored).float()
    if plain.dim() == 2 and plain.shape[1] > 1:
        agree = float((plain.argmax(1) == flipped.argmax(1)).float().mean())
        if agree >= FLIP_AGREEMENT:
            return True, f"flip on (the teacher's class stays the same on {agree:.0%} of mirrored held-out images)"
        return False, f"flip off (the teacher's class changes on {1 - agree:.0%} of mirrored held-out images)"
    # Other outputs (embeddings, maps): the teacher's outputs on mirrored images must point the same way.
    cosine = float(F.cosine_similarity(plain.flatten(1), flipped.flatten(1)).mean())
    if cosine >= FLIP_AGREEMENT:
        return True, f"flip on (the teacher's outputs on mirrored held-out images have cosine {cosine:.2f})"
    return False, f"flip off (the teacher's outputs on mirrored held-out images have cosine {cosine:.2f} only)"


def chunk_positions(count: int, rank: int, world_size: int) -> np.ndarray:
    """Positions in a global batch of `count` that process `rank` trains on (the same chunks as `data.shard`)."""
    return np.array_split(np.arange(count), world_size)[rank]
