"""A MobileNetV2 (torchvision's exact layer shapes, ReLU6, depthwise 3x3, width 1.0) trained here
to tell which of the 18 bundled photos a 96x96 crop comes from.

The architecture is `samples.architectures.mobilenet_v2` (2.25 M parameters for 18 classes).
Trained for EPOCHS epochs on 2,400 labelled crops; inputs use ImageNet normalisation.
"""

from __future__ import annotations

from .common import ZooModel
from .training import photo_patches, trained_classifier

EPOCHS = 5
SIZE = 96


def build() -> ZooModel:
    """Train MobileNetV2 on photo patches and package it with 300 calib / 200 val labelled crops."""
    import torch

    from samples.architectures import mobilenet_v2

    torch.manual_seed(0)
    split = photo_patches(SIZE, train=2400)
    model = mobilenet_v2(num_classes=18)
    return trained_classifier(
        "mobilenet_v2_photos", model, split, epochs=EPOCHS, lr=3e-3, trained_on="2,400 labelled photo crops",
        what="MobileNetV2 (torchvision shapes, ReLU6, depthwise, 2.25 M params), 3x96x96, 18 classes",
        output_kind="logits (18 classes: which bundled photo the crop is from)",
        model_class="samples.architectures:MobileNetV2",
        model_kwargs={"num_classes": 18},
        notes="real labels; ImageNet normalisation",
    )
