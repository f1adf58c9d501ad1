"""User code that goes wrong, for the hostile suite: models, datasets and factories that raise or misbehave."""

from __future__ import annotations

import numpy as np
import torch

from samples.architectures import DigitsCNN

CALIB = "samples/digits/calib.npz"


class RaisingInit(DigitsCNN):
    """A model class whose constructor raises."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__(num_classes)
        raise ValueError("weights folder /models/digits is missing")


class DictOutput(DigitsCNN):
    """Returns `{"logits": ...}` instead of a tensor."""

    def forward(self, x):
        return {"logits": super().forward(x)}


class NaNOutput(DigitsCNN):
    """Outputs NaN for every input (as a model with a broken weight would)."""

    def forward(self, x):
        return super().forward(x) * float("nan")


class RaisesOnLargeBatch(DigitsCNN):
    """Works on one sample, raises in its own forward on bigger batches."""

    def forward(self, x):
        if x.shape[0] > 1:
            raise RuntimeError("this model only runs one image at a time")
        return super().forward(x)


def raising_factory():
    """A calibration factory that raises."""
    raise FileNotFoundError("/data/digits/train")


class _RaisingDataset(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.x = np.load(CALIB)["input"]

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int):
        if index == 5:
            raise KeyError(f"image {index} is corrupt")
        return self.x[index]


def raising_dataset():
    """A dataset whose `__getitem__` raises on item 5."""
    return _RaisingDataset()


def one_sample():
    """A calibration set of one sample."""
    return [np.load(CALIB)["input"][0]]
