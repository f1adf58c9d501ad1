"""The digits sample's CNN (`samples.architectures.DigitsCNN`, 1x16x16) trained here on
scikit-learn's handwritten digits upscaled to 16x16, with shift augmentation.

Calibration and validation are 250 and 200 held-out scans with their real labels.
"""

from __future__ import annotations

from .common import ZooModel
from .training import digits, train_classifier

EPOCHS = 15


def build() -> ZooModel:
    """Train DigitsCNN on 16x16 digits and package it with labelled held-out scans."""
    import torch

    from samples.architectures import DigitsCNN

    torch.manual_seed(0)
    split = digits(16)
    model = DigitsCNN(num_classes=10)
    accuracy = train_classifier(model, split, epochs=EPOCHS, lr=3e-3, shift_augment=True)
    return ZooModel(
        name="cnn_digits16",
        module=model,
        input_names=("x",),
        calib={"x": split.calib_x},
        val={"x": split.val_x},
        calib_labels=split.calib_y,
        val_labels=split.val_y,
        what="small CNN (3 conv+BN+ReLU, 2 max-pools, 2 Linear; 90 k params), 1x16x16 digits",
        weights=f"trained in `benchmarks/zoo/cnn_digits16.py` ({EPOCHS} epochs on 1,347 sklearn digits); "
        f"val accuracy {accuracy:.3f}",
        output_kind="logits (10 digits)",
        model_class="samples.architectures:DigitsCNN",
        notes="real labels; pixels in [0, 1]",
    )
