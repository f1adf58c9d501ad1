"""Size and cost of a PyTorch model: parameter count and multiply-accumulates (MACs).

MACs are counted for one sample (batch 1) by forward hooks on the layers that do the arithmetic
that matters on a CPU: `Conv1d`/`Conv2d`/`Conv3d` (groups-aware), their transposed forms, and
`Linear`. Everything else (activations, pooling, normalisation, additions, functional matmuls)
counts as zero: the figure is the cost of the weight layers, which is what compression changes.
Counting never modifies the model: training mode is restored and hooks are removed.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def count_params(model: nn.Module) -> int:
    """Number of scalar parameters, counting a parameter shared by several layers once."""
    return sum(p.numel() for p in model.parameters())


def layer_macs(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
    """MACs of one call of a weight layer, for the whole (batch-1) input it got; 0 for any other module."""
    if isinstance(module, _CONV) and isinstance(output, torch.Tensor):
        per_output = (module.in_channels // module.groups) * math.prod(module.kernel_size)
        return per_output * output.numel()
    if isinstance(module, _CONV_T) and inputs and isinstance(inputs[0], torch.Tensor):
        per_input = (module.out_channels // module.groups) * math.prod(module.kernel_size)
        return per_input * inputs[0].numel()
    if isinstance(module, nn.Linear) and isinstance(output, torch.Tensor):
        return module.in_features * output.numel()
    return 0


def count_macs(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> int:
    """Multiply-accumulates of one forward pass on the first sample of `example_inputs`."""
    return sum(row["macs"] for row in layer_table(model, example_inputs))


def layer_table(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> list[dict[str, Any]]:
    """One row per weight-layer call: name, type, parameters, MACs and output shape (batch 1)."""
    rows: list[dict[str, Any]] = []
    names = {module: name for name, module in model.named_modules()}

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        rows.append(
            {
                "layer": names.get(module, ""),
                "type": type(module).__name__,
                "params": sum(p.numel() for p in module.parameters(recurse=False)),
                "macs": layer_macs(module, inputs, output),
                "output_shape": list(output.shape) if isinstance(output, torch.Tensor) else None,
            }
        )

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (*_CONV, *_CONV_T, nn.Linear))]
    was_training = {m: m.training for m in model.modules()}
    try:
        set_eval(model)
        with torch.no_grad():
            model(*batch_one(example_inputs))
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in was_training.items():
            module.training = mode
    return rows


def set_eval(model: nn.Module) -> nn.Module:
    """Put `model` in eval mode; `torch.export` modules refuse `.eval()` and are already in inference form."""
    try:
        return model.eval()
    except NotImplementedError:
        return model


def batch_one(example_inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The first sample of each batched input, keeping the batch axis (tensors of rank 0 pass through)."""
    return tuple(t[:1] if isinstance(t, torch.Tensor) and t.dim() > 0 else t for t in example_inputs)
