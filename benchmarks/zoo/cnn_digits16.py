"""The digits sample's CNN (`samples.architectures.DigitsCNN`, 1x16x16) trained here on
scikit-learn's handwritten digits upscaled to 16x16, with shift augmentation.

Calibration and validation are 250 and 200 held-out scans with their real labels.
"""

from __future__ import annotations

from .common import ZooModel
from .training import digits, trained_classifier

EPOCHS = 15


def build() -> ZooModel:
    """Train DigitsCNN on 16x16 digits and package it with labelled held-out scans."""
    import torch

    from samples.architectures import DigitsCNN

    torch.manual_seed(0)
    split = digits(16)
    model = DigitsCNN(num_classes=10)
    return trained_classifier(
        "cnn_digits16", model, split, epochs=EPOCHS, lr=3e-3, shift_augment=True, trained_on="1,347 sklearn digits",
        what="small CNN (3 conv+BN+ReLU, 2 max-pools, 2 Linear; 90 k params), 1x16x16 digits",
        output_kind="logits (10 digits)",
        model_class="samples.architectures:DigitsCNN",
        notes="real labels; pixels in [0, 1]",
    )
