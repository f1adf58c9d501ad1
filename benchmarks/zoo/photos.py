"""Real photographs bundled with scikit-learn and scikit-image, cut into random-resized crops.

No photo is downloaded: `sklearn.datasets.load_sample_images` ships two JPEGs and
`skimage.data` ships a few dozen test images (photos, microscopy, textures). Random-resized
crops (area 3%..100%, aspect 3/4..4/3, random flips) of these give ImageNet-sized inputs
where many crops show only part of an object, so a classifier is often unsure: the hard,
low-confidence case that exposes quantization error in the arg-max.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# skimage.data names of colour or greyscale photographs and textures (not synthetic drawings).
SKIMAGE_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "motorcycle_right",
    "hubble_deep_field", "retina", "immunohistochemistry", "camera", "moon", "coins",
    "brick", "grass", "gravel", "page", "text", "colorwheel",
)


def load_photos() -> list[np.ndarray]:
    """Every bundled photo as an (H, W, 3) uint8 RGB array, in a fixed order."""
    import skimage.data as data
    from sklearn.datasets import load_sample_images

    photos = [np.asarray(img) for img in load_sample_images().images]
    for name in SKIMAGE_PHOTOS:
        loader = getattr(data, name, None)
        if loader is None:
            continue
        img = np.asarray(loader())
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        img = img[..., :3]
        if img.dtype != np.uint8:
            img = (255 * (img.astype(np.float64) / max(float(img.max()), 1.0))).astype(np.uint8)
        photos.append(img)
    return photos


def random_resized_crops(
    photos: list[np.ndarray], count: int, size: int, seed: int, scale: tuple[float, float] = (0.03, 1.0)
) -> np.ndarray:
    """`count` random-resized crops of `photos` as (count, size, size, 3) uint8, reproducible by `seed`."""
    rng = np.random.default_rng(seed)
    crops = np.empty((count, size, size, 3), np.uint8)
    for i in range(count):
        img = photos[rng.integers(len(photos))]
        h, w = img.shape[:2]
        area = h * w * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        ch = int(min(h, max(8, round(np.sqrt(area / aspect)))))
        cw = int(min(w, max(8, round(np.sqrt(area * aspect)))))
        top = rng.integers(0, h - ch + 1)
        left = rng.integers(0, w - cw + 1)
        crop = Image.fromarray(img[top : top + ch, left : left + cw]).resize((size, size), Image.BILINEAR)
        arr = np.asarray(crop)
        if rng.random() < 0.5:
            arr = arr[:, ::-1]
        crops[i] = arr
    return crops


def to_nchw(crops: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """uint8 NHWC crops in 0..255 -> float32 NCHW normalised as (x/255 - mean) / std."""
    x = crops.astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
