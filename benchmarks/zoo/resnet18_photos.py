"""A ResNet-18 (torchvision's exact layout: conv7x7/2 stem, max-pool, BasicBlocks with BN and
residual additions, 1x1 projection shortcuts, average pool, fc) trained here to tell which of
the 18 bundled photos a 96x96 crop comes from.

No package on the index ships ResNet (or MobileNetV2) ImageNet weights for PyTorch inside its
wheel (the ResNet wrappers download torchvision's weights at run time), so the net is trained on
the same real labelled photo crops as `mobilenet_v2_photos`. The architecture is
`samples.architectures.resnet18` (11.2 M parameters for 18 classes); inputs use ImageNet
normalisation.
"""

from __future__ import annotations

from .common import ZooModel
from .training import photo_patches, trained_classifier

EPOCHS = 5
SIZE = 96


def build() -> ZooModel:
    """Train ResNet-18 on photo patches and package it with 300 calib / 200 val labelled crops."""
    import torch

    from samples.architectures import resnet18

    torch.manual_seed(0)
    split = photo_patches(SIZE, train=2400)
    model = resnet18(num_classes=18)
    return trained_classifier(
        "resnet18_photos", model, split, epochs=EPOCHS, lr=2e-3, trained_on="2,400 labelled photo crops",
        what="ResNet-18 (torchvision layout, BasicBlocks, BN, residual adds, 11.2 M params), 3x96x96, 18 classes",
        output_kind="logits (18 classes: which bundled photo the crop is from)",
        model_class="samples.architectures:ResNet",
        model_kwargs={"layers": [2, 2, 2, 2], "num_classes": 18},
        notes="real labels; ImageNet normalisation",
    )
