"""How raw data becomes model input: image preprocessing (`ImagePreprocess`) and reading options (`DataOptions`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.errors import CalibrationError, PlanError
from exporter.registry import Registry

if TYPE_CHECKING:
    from PIL.Image import Image

CHANNEL_COUNTS = {"rgb": 3, "bgr": 3, "gray": 1}


@dataclass(frozen=True)
class ImagePreprocess:
    """Turns one decoded image into a float32 CHW array, the way torchvision's usual transforms do.

    Order: convert to `channels`, resize the shorter side to `resize`, center-crop a `crop` square,
    multiply by `scale`, subtract `mean` and divide by `std` per channel. The default is the
    `unit` preset: RGB values in [0, 1], no resize, no crop. Bad values raise `PlanError` when built.
    """

    resize: int | None = None
    crop: int | None = None
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    scale: float = 1 / 255
    channels: str = "rgb"

    def __post_init__(self) -> None:
        # Plan files give lists; keep the frozen value hashable and comparable.
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        self.validate()

    @property
    def channel_count(self) -> int:
        """Number of channels in the output array: 3 for rgb/bgr, 1 for gray."""
        return CHANNEL_COUNTS[self.channels]

    def validate(self) -> None:
        """Raise `PlanError` for a setting that cannot work: sizes must be positive, the crop must fit
        inside the resize, `mean`/`std` need one value per channel, and `std` may not contain 0."""
        if self.channels not in CHANNEL_COUNTS:
            raise PlanError(
                f"bad image channels {self.channels!r}: expected one of {', '.join(CHANNEL_COUNTS)}"
            )
        for name in ("resize", "crop"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise PlanError(f"bad image {name} {value!r}: expected a positive number of pixels or none")
        if self.resize is not None and self.crop is not None and self.crop > self.resize:
            raise PlanError(
                f"image crop {self.crop} is larger than resize {self.resize}: the crop is cut from the resized "
                "image, so lower the crop or raise the resize"
            )
        count = CHANNEL_COUNTS[self.channels]
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != count:
                raise PlanError(
                    f"image {name} {list(values)} has {len(values)} values but channels {self.channels!r} has "
                    f"{count}: give one {name} per channel"
                )
        if any(s == 0 for s in self.std):
            raise PlanError(f"image std {list(self.std)} contains 0: every std must be non-zero (it divides)")
        if not self.scale > 0:
            raise PlanError(f"bad image scale {self.scale!r}: expected a positive factor such as 1/255")

    @classmethod
    def preset(cls, name: str) -> "ImagePreprocess":
        """The named preset (imagenet, unit, symmetric, gray-unit); an unknown name raises `PlanError`."""
        return IMAGE_PRESETS.get(name)

    def apply(self, image: "Image", origin: str = "image") -> np.ndarray:
        """Preprocess one PIL image into a (C, H, W) float32 array; `origin` names it in errors."""
        from PIL.Image import Resampling

        picture = image.convert("L" if self.channels == "gray" else "RGB")
        if self.resize is not None:
            width, height = picture.size
            if width <= height:
                size = (self.resize, max(1, int(self.resize * height / width)))
            else:
                size = (max(1, int(self.resize * width / height)), self.resize)
            picture = picture.resize(size, Resampling.BILINEAR)
        if self.crop is not None:
            picture = _center_crop(picture, self.crop, origin)
        pixels = np.asarray(picture, dtype=np.float32)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if self.channels == "bgr":
            pixels = pixels[:, :, ::-1]
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        normalized = (pixels * np.float32(self.scale) - mean) / std
        return np.ascontiguousarray(normalized.transpose(2, 0, 1), dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for the plan and the report."""
        return {
            "resize": self.resize,
            "crop": self.crop,
            "mean": list(self.mean),
            "std": list(self.std),
            "scale": self.scale,
            "channels": self.channels,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ImagePreprocess":
        """Inverse of `to_dict`; an unknown key raises `PlanError`."""
        return cls(**_known_fields(cls, data, "image preprocessing"))


def _center_crop(picture: "Image", crop: int, origin: str) -> "Image":
    """Cut the centered `crop` x `crop` square (torchvision's rounding); a too-small image is an error."""
    width, height = picture.size
    if crop > width or crop > height:
        raise CalibrationError(
            f"image {origin} is {width}x{height}, smaller than the {crop}x{crop} crop: set a resize of at "
            f"least {crop} or lower the crop"
        )
    top = int(round((height - crop) / 2.0))
    left = int(round((width - crop) / 2.0))
    return picture.crop((left, top, left + crop, top + crop))


def _known_fields(cls: type, data: dict[str, Any], what: str) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise PlanError(f"unknown {what} setting(s) {unknown}: valid: {', '.join(sorted(names))}")
    return dict(data)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

IMAGE_PRESETS: Registry[ImagePreprocess] = Registry("image preset")
IMAGE_PRESETS.add("imagenet", ImagePreprocess(resize=256, crop=224, mean=IMAGENET_MEAN, std=IMAGENET_STD))
IMAGE_PRESETS.add("unit", ImagePreprocess())
IMAGE_PRESETS.add("symmetric", ImagePreprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
IMAGE_PRESETS.add("gray-unit", ImagePreprocess(mean=(0.0,), std=(1.0,), channels="gray"))


@dataclass(frozen=True)
class DataOptions:
    """How to read calibration data: the image preprocessing; at most how many items to take from a
    calibration factory (`max_samples`; none = `limits.DEFAULT_FACTORY_SAMPLES`, with a note when
    that cap stops the factory); the seed of the draw when a factory's dataset is larger; and
    `scratch`, the folder where a one-shot iterable's samples are spooled (none = a temporary
    folder removed with the sample set)."""

    image: ImagePreprocess = field(default_factory=ImagePreprocess)
    max_samples: int | None = None
    seed: int = 0
    scratch: Path | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `PlanError` unless `max_samples` is none or a positive integer."""
        value = self.max_samples
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise PlanError(f"bad max_samples {value!r}: expected a positive number of samples or none")

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for the plan and the report (the scratch folder is not a setting)."""
        return {"image": self.image.to_dict(), "max_samples": self.max_samples, "seed": self.seed}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DataOptions":
        """Inverse of `to_dict`; `image` may also be a preset name."""
        values = _known_fields(cls, data, "calibration data")
        image = values.get("image")
        if isinstance(image, str):
            values["image"] = ImagePreprocess.preset(image)
        elif isinstance(image, dict):
            values["image"] = ImagePreprocess.from_dict(image)
        return cls(**values)
