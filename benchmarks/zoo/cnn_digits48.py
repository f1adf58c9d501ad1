"""A small VGG-style CNN for 1x48x48 inputs, trained here on scikit-learn's digits upscaled to 48x48.

Four conv stages (16-32-64-128 channels, 3x3, BN, ReLU, 2x2 max-pool), global average pool,
Linear to 10 classes. Calibration / validation: 250 / 200 held-out scans with real labels.
"""

from __future__ import annotations

from torch import nn

from .common import ZooModel
from .training import digits, trained_classifier

EPOCHS = 10


class Cnn48(nn.Module):
    """conv stages 16-32-64-128 (each conv3x3+BN+ReLU, then 2x2 max-pool), average pool, Linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        inp = 1
        for out in (16, 32, 64, 128):
            layers += [nn.Conv2d(inp, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(), nn.MaxPool2d(2)]
            inp = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(128, num_classes)

    def forward(self, x):
        """(N, 1, 48, 48) in [0, 1] -> (N, num_classes) logits."""
        return self.head(self.features(x).mean((2, 3)))


def build() -> ZooModel:
    """Train Cnn48 on 48x48 digits and package it with labelled held-out scans."""
    import torch

    torch.manual_seed(0)
    split = digits(48)
    model = Cnn48()
    return trained_classifier(
        "cnn_digits48", model, split, epochs=EPOCHS, lr=3e-3, shift_augment=True, trained_on="1,347 sklearn digits",
        what="small CNN (4 conv stages 16-128 ch, max-pools, avg pool, Linear; 98 k params), 1x48x48 digits",
        output_kind="logits (10 digits)",
        model_class="benchmarks.zoo.cnn_digits48:Cnn48",
        notes="real labels; pixels in [0, 1]",
    )
