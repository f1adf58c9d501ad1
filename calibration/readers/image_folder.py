"""Reader for a folder of images, flat or with one sub-folder per class (like torchvision's ImageFolder)."""

from __future__ import annotations

import os
from pathlib import Path

from calibration.preprocess import DataOptions, ImagePreprocess
from calibration.readers.base import SampleReader, register_reader
from calibration.readers.npy_folder import npy_files
from calibration.samples import Sample, SampleSet
from exporter.errors import CalibrationError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def is_image(path: Path) -> bool:
    """True for a file whose extension (any case) is a supported image format."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def _images_below(folder: Path) -> list[Path]:
    """Every image in `folder` and its sub-folders, sorted by path relative to `folder`."""
    found = [Path(root) / name for root, _, names in os.walk(folder) for name in names]
    return sorted((p for p in found if is_image(p)), key=lambda p: p.relative_to(folder).as_posix())


def _class_folders(folder: Path) -> list[Path]:
    """Sub-folders that name classes: every non-hidden sub-folder, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


@register_reader
class ImageFolderReader(SampleReader):
    """Images (jpg, jpeg, png, bmp, webp) in a folder without .npy files. With class sub-folders,
    a sample's label is its sub-folder's index in the sorted list of sub-folders; images directly
    in a flat folder have no label. Each image is decoded with Pillow when asked for and
    preprocessed with `options.image`."""

    name = "image_folder"
    description = "a folder of images, flat or with one sub-folder per class"

    @classmethod
    def accepts(cls, source: str) -> bool:
        path = Path(source)
        if not path.is_dir() or npy_files(path):
            return False
        return any(is_image(Path(root) / name) for root, _, names in os.walk(path) for name in names)

    @classmethod
    def open(cls, source: str, options: DataOptions) -> SampleSet:
        folder = Path(source)
        flat = sorted(p for p in folder.iterdir() if is_image(p))
        classes = _class_folders(folder)
        labelled = [(index, path) for index, sub in enumerate(classes) for path in _images_below(sub)]
        if labelled and flat:
            raise CalibrationError(
                f"image folder {source} has both images at its top level (e.g. {flat[0].name}) and class "
                "sub-folders: move every image into a class sub-folder, or remove the sub-folders"
            )
        if not labelled:
            return ImageFolderSampleSet(folder, flat, None, [], options.image)
        files = [path for _, path in labelled]
        labels = [index for index, _ in labelled]
        return ImageFolderSampleSet(folder, files, labels, [c.name for c in classes], options.image)


class ImageFolderSampleSet(SampleSet):
    """One sample per image file, decoded and preprocessed when asked for; key `image`."""

    def __init__(
        self,
        folder: Path,
        files: list[Path],
        labels: list[int] | None,
        classes: list[str],
        preprocess: ImagePreprocess,
    ) -> None:
        self.files = files
        self.labels = labels
        self.classes = classes
        self.preprocess = preprocess
        self.keys = ("image",)
        self.has_labels = labels is not None and bool(files)
        layout = f"{len(classes)} class folders" if labels is not None else "no labels"
        self.description = f"image folder {folder} ({len(files)} images, {layout})"

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Sample:
        position = self._check_index(index)
        path = self.files[position]
        array = self.preprocess.apply(decode_image(path), origin=str(path))
        label = None if self.labels is None else self.labels[position]
        return Sample(inputs={"image": array}, label=label, origin=str(path))


def decode_image(path: Path):
    """Open and fully decode one image with Pillow; a corrupt or unsupported file raises `CalibrationError`."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise CalibrationError(f"cannot read image {path}: {error}; remove or replace the file") from error
