"""The trained `resnet18_photos` weights inside a model-library class that torch.fx cannot trace.

The class is Hugging Face transformers' `ResNetForImageClassification` (basic blocks, depths
2-2-2-2, widths 64-512: ResNet-18), the way a user gets a ResNet from a model library. Its
forward has Python control flow on the input (`if num_channels != self.num_channels: raise`),
so `torch.fx.symbolic_trace` fails with "symbolically traced variables cannot be used as inputs
to control flow", while `torch.export` captures it. The weights are those of `resnet18_photos`
(build that first), renamed from torchvision's layout to transformers': same function, so the
accuracy on the labelled photo crops is the same.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from .common import DEFAULT_ZOO, ZooModel

SOURCE = "resnet18_photos"


class HfResNet18(nn.Module):
    """transformers' ResNet-18 for image classification, returning the logits tensor."""

    def __init__(self, num_classes: int = 18) -> None:
        super().__init__()
        from transformers import ResNetConfig, ResNetForImageClassification

        config = ResNetConfig(
            num_labels=num_classes, layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512],
            embedding_size=64, downsample_in_first_stage=False,
        )  # fmt: skip
        self.net = ResNetForImageClassification(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values=x).logits


def torchvision_to_transformers(name: str) -> str:
    """The transformers name of a torchvision ResNet parameter or buffer name."""
    rules = (
        (r"^conv1\.", "net.resnet.embedder.embedder.convolution."),
        (r"^bn1\.", "net.resnet.embedder.embedder.normalization."),
        (r"^layer(\d)\.(\d)\.conv(\d)\.", lambda m: f"net.resnet.encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.layer.{int(m[3]) - 1}.convolution."),
        (r"^layer(\d)\.(\d)\.bn(\d)\.", lambda m: f"net.resnet.encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.layer.{int(m[3]) - 1}.normalization."),
        (r"^layer(\d)\.(\d)\.downsample\.0\.", lambda m: f"net.resnet.encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.shortcut.convolution."),
        (r"^layer(\d)\.(\d)\.downsample\.1\.", lambda m: f"net.resnet.encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.shortcut.normalization."),
        (r"^fc\.", "net.classifier.1."),
    )  # fmt: skip
    for pattern, replacement in rules:
        renamed, count = re.subn(pattern, replacement, name)
        if count:
            return renamed
    raise KeyError(f"no transformers name for torchvision parameter {name!r}")


def build(zoo=DEFAULT_ZOO) -> ZooModel:
    """HfResNet18 carrying resnet18_photos' trained weights, with that entry's calib / val crops and labels."""
    import numpy as np

    folder = zoo / SOURCE
    if not (folder / "state_dict.pt").exists():
        raise FileNotFoundError(f"{folder}/state_dict.pt is missing: build {SOURCE} first")
    state = torch.load(folder / "state_dict.pt", map_location="cpu", weights_only=True)
    model = HfResNet18(num_classes=state["fc.weight"].shape[0])
    model.load_state_dict({torchvision_to_transformers(k): v for k, v in state.items()}, strict=True)
    model.eval()
    calib, val = np.load(folder / "calib.npz"), np.load(folder / "val.npz")
    return ZooModel(
        name="hf_resnet18_photos",
        module=model,
        input_names=("x",),
        calib={"x": calib["x"]},
        val={"x": val["x"]},
        calib_labels=calib["labels"],
        val_labels=val["labels"],
        what="transformers `ResNetForImageClassification` (ResNet-18, basic blocks), 3x96x96, 18 classes; "
        "torch.fx cannot trace it (control flow on the input in forward)",
        weights=f"`{SOURCE}`'s trained weights renamed to transformers' layout (same function)",
        output_kind="logits (18 classes: which bundled photo the crop is from)",
        model_class="benchmarks.zoo.hf_resnet18_photos:HfResNet18",
        model_kwargs={"num_classes": 18},
        notes=f"real labels; same calib/val as `{SOURCE}`; "
        "`torch.fx.symbolic_trace` fails: symbolically traced variables cannot be used as inputs to control flow",
    )
