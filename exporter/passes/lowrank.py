"""Low-rank decomposition: replace a layer by a chain of smaller ones from a truncated SVD.

- Linear(in, out) -> Linear(in, r, no bias), Linear(r, out).
- Conv2d, method `svd`: kxk conv with r output channels, then a 1x1 conv (the weight reshaped to
  out x (in*k*k) and factorised).
- Conv2d, method `tucker2`: 1x1 conv in -> r_in, kxk core conv r_in -> r_out, 1x1 conv r_out -> out
  (HOSVD of the weight along its output and input channel modes).

The rank of each layer is the smallest that keeps `energy` of the squared singular values, or,
when `ratio` is set, the largest whose weights are at most `ratio` of the layer's. A layer is
replaced only if the chain has fewer parameters *and* fewer multiply-accumulates than the layer,
judged at the input sizes it sees on the example inputs. Grouped/depthwise convs are left alone.
The singular factors are split evenly (sqrt of the singular values on each side), which keeps
both halves' weights on a similar scale for int8 quantization.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from exporter.errors import CompressionError, PlanError
from exporter.modelstats import batch_one, layer_macs
from exporter.passes._graph import check_patterns_match, matching, set_submodule
from exporter.passes.base import CompressionPass, PassConfig, PassContext, PassResult, register_pass, setting


@dataclass(frozen=True)
class LowRankConfig(PassConfig):
    """Settings of `lowrank`."""

    energy: float = setting(0.9, "fraction of each layer's squared singular values to keep, in (0, 1]")
    ratio: float | None = setting(
        None, "instead of energy: the largest share of each layer's weights the decomposition may keep, in (0, 1)"
    )
    method: Literal["svd", "tucker2"] = setting(
        "svd", "conv decomposition: svd (kxk conv to rank r, then 1x1) or tucker2 (1x1, kxk core, 1x1)"
    )
    ignore: tuple[str, ...] = setting((), "fnmatch patterns of layers to leave whole, e.g. 'features.0'")

    def validate(self) -> None:
        """`energy` in (0, 1]; `ratio`, if given, in (0, 1)."""
        if not 0.0 < self.energy <= 1.0:
            raise PlanError(f"bad lowrank energy {self.energy}: expected a fraction in (0, 1], e.g. 0.9")
        if self.ratio is not None and not 0.0 < self.ratio < 1.0:
            raise PlanError(f"bad lowrank ratio {self.ratio}: expected a fraction in (0, 1), e.g. 0.5")


@register_pass
class LowRank(CompressionPass):
    """Replace Linear and Conv2d layers by low-rank chains when that lowers parameters and MACs."""

    name = "lowrank"
    Config = LowRankConfig
    order = 30
    shorthand = "energy"
    summary_line = "low-rank (truncated SVD / Tucker-2) factorisation of Linear and Conv2d layers"

    def apply(self, model: nn.Module, ctx: PassContext) -> PassResult:
        """Decompose every eligible layer whose chain is smaller and cheaper; record why others stay."""
        config: LowRankConfig = self.config
        problem = check_patterns_match([n for n, _ in model.named_modules() if n], config.ignore, "lowrank ignore")
        if problem:
            raise CompressionError(problem)
        ignored = {n for p in config.ignore for n in matching(dict(model.named_modules()), p)}
        seen = _observe(model, batch_one(ctx.example_inputs))
        changes, skipped = [], []
        names: dict[nn.Module, list[str]] = {}
        for name, module in model.named_modules(remove_duplicate=False):
            names.setdefault(module, []).append(name)
        for module, aliases in names.items():
            if not isinstance(module, (nn.Linear, nn.Conv2d)):
                continue
            name = aliases[0]
            reason = _ineligible(module, name in ignored, seen.get(module))
            if reason is None:
                built = _decompose(module, config, seen[module])
                if isinstance(built, str):
                    reason = built
                else:
                    chain, row = built
                    for alias in aliases:
                        set_submodule(model, alias, chain)
                    changes.append({"layer": name, "type": type(module).__name__, **row})
            if reason is not None:
                skipped.append({"layer": name, "reason": reason})
        notes = ["ratio is set: ranks come from it and energy is ignored"] if config.ratio is not None else []
        return PassResult(model, changes=changes, skipped=skipped, notes=notes, summary={"replaced": len(changes)})


def _observe(model: nn.Module, example: tuple[torch.Tensor, ...]) -> dict[nn.Module, list[tuple[Any, Any]]]:
    """Input and output of every call of each Linear/Conv2d on the example inputs (for MAC counts)."""
    seen: dict[nn.Module, list[tuple[Any, Any]]] = {}

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        seen.setdefault(module, []).append((inputs[0], output))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        with torch.no_grad():
            model(*example)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _ineligible(module: nn.Module, ignored: bool, calls: list[tuple[Any, Any]] | None) -> str | None:
    if ignored:
        return "matches the lowrank ignore pattern"
    if calls is None:
        return "not called on the example inputs"
    if isinstance(module, nn.Conv2d) and module.groups != 1:
        return "grouped or depthwise conv: nothing to factorise"
    if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros" and module.kernel_size != (1, 1):
        return f"padding_mode {module.padding_mode!r} is not supported"
    return None


def _decompose(
    module: nn.Module, config: LowRankConfig, calls: list[tuple[Any, Any]]
) -> tuple[nn.Sequential, dict[str, Any]] | str:
    """The replacement chain and its change row, or the reason the layer is kept."""
    if isinstance(module, nn.Conv2d) and config.method == "tucker2" and module.kernel_size != (1, 1):
        chain, rank = _tucker2(module, config)
    else:
        chain, rank = _svd(module, config)
    before_params = sum(p.numel() for p in module.parameters())
    after_params = sum(p.numel() for p in chain.parameters())
    before_macs = sum(layer_macs(module, (x,), y) for x, y in calls)
    with torch.no_grad():
        after_macs = sum(_chain_macs(chain, x) for x, _ in calls)
    if after_params >= before_params or after_macs >= before_macs:
        return (
            f"rank {rank} would not lower both parameters ({before_params} -> {after_params}) "
            f"and MACs ({before_macs} -> {after_macs})"
        )
    row = {"rank": rank, "params": [before_params, after_params], "macs": [before_macs, after_macs]}
    return chain, row


def _chain_macs(chain: nn.Sequential, x: torch.Tensor) -> int:
    total = 0
    for layer in chain:
        y = layer(x)
        total += layer_macs(layer, (x,), y)
        x = y
    return total


def choose_rank(singular: torch.Tensor, energy: float) -> int:
    """Smallest rank whose squared singular values reach `energy` of the total (float64, 1e-9 slack)."""
    squares = singular.double() ** 2
    total = float(squares.sum())
    if total == 0.0:
        return 1
    reached = torch.cumsum(squares, 0) >= energy * total * (1 - 1e-9)
    return int(reached.nonzero()[0]) + 1


@torch.no_grad()
def _svd(module: nn.Module, config: LowRankConfig) -> tuple[nn.Sequential, int]:
    """Two-layer factorisation of a Linear, or of a Conv2d as kxk-to-r then 1x1."""
    weight = module.weight.detach().double()
    out = weight.shape[0]
    matrix = weight.reshape(out, -1)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    if config.ratio is not None:
        rank = max(1, math.floor(config.ratio * matrix.numel() / sum(matrix.shape)))
    else:
        rank = choose_rank(s, config.energy)
    rank = min(rank, s.numel())
    root = s[:rank].sqrt()
    first_w = (root[:, None] * vh[:rank]).to(module.weight.dtype)
    second_w = (u[:, :rank] * root).to(module.weight.dtype)
    bias = module.bias is not None
    if isinstance(module, nn.Linear):
        first, second = nn.Linear(module.in_features, rank, bias=False), nn.Linear(rank, out, bias=bias)
        first.weight.copy_(first_w)
        second.weight.copy_(second_w)
    else:
        first = nn.Conv2d(
            module.in_channels, rank, module.kernel_size, module.stride, module.padding, module.dilation,
            bias=False, padding_mode=module.padding_mode,
        )  # fmt: skip
        second = nn.Conv2d(rank, out, 1, bias=bias)
        first.weight.copy_(first_w.reshape(rank, *weight.shape[1:]))
        second.weight.copy_(second_w.reshape(out, rank, 1, 1))
    if bias:
        second.bias.copy_(module.bias.detach())
    return nn.Sequential(first, second), rank


@torch.no_grad()
def _tucker2(conv: nn.Conv2d, config: LowRankConfig) -> tuple[nn.Sequential, list[int]]:
    """1x1 -> kxk core -> 1x1 factorisation of a Conv2d by HOSVD along its output and input modes."""
    weight = conv.weight.detach().double()
    out, inp, kh, kw = weight.shape
    u_out, s_out, _ = torch.linalg.svd(weight.reshape(out, -1), full_matrices=False)
    u_in, s_in, _ = torch.linalg.svd(weight.transpose(0, 1).reshape(inp, -1), full_matrices=False)
    if config.ratio is not None:
        # Shrink both modes by the same factor f: inp*f*inp + f^2*inp*out*k + f*out*out = ratio*inp*out*k.
        k = kh * kw
        a, b, c = inp * out * k, inp * inp + out * out, -config.ratio * inp * out * k
        f = (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)
        r_out, r_in = max(1, math.floor(f * out)), max(1, math.floor(f * inp))
    else:
        r_out, r_in = choose_rank(s_out, config.energy), choose_rank(s_in, config.energy)
    r_out, r_in = min(r_out, s_out.numel()), min(r_in, s_in.numel())
    p_out, p_in = u_out[:, :r_out], u_in[:, :r_in]
    core = torch.einsum("oikl,or,is->rskl", weight, p_out, p_in)
    first = nn.Conv2d(inp, r_in, 1, bias=False)
    middle = nn.Conv2d(r_in, r_out, conv.kernel_size, conv.stride, conv.padding, conv.dilation, bias=False)
    last = nn.Conv2d(r_out, out, 1, bias=conv.bias is not None)
    dtype = conv.weight.dtype
    first.weight.copy_(p_in.T.reshape(r_in, inp, 1, 1).to(dtype))
    middle.weight.copy_(core.to(dtype))
    last.weight.copy_(p_out.reshape(out, r_out, 1, 1).to(dtype))
    if conv.bias is not None:
        last.bias.copy_(conv.bias.detach())
    return nn.Sequential(first, middle, last), [r_in, r_out]
