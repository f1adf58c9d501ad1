"""Helpers the passes share: tracing a model with shapes, naming layers, and pattern settings.

Passes read the structure of a model from its graph, with every node's output shape filled in by
running the example inputs through it. In the pipeline the model is the lifted `torch.export`
program (`exporter.program_graph.lift`), an `fx.GraphModule` whose graph is read as it is and may
be edited by a pass (e.g. a hard-coded reshape size after pruning). Any other `nn.Module` is traced
with `torch.fx` symbolic tracing, and that trace is only read: passes change the model's own
modules, found by their qualified names.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from exporter.errors import PlanError


class TraceFailure(Exception):
    """The model could not be traced by `torch.fx`; the message says why, in one line."""


def trace(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> fx.GraphModule:
    """The graph of `model` with each node's output shape recorded from `example_inputs`.

    An `fx.GraphModule` (the lifted program) is its own graph: the model itself is returned, so edits
    to its graph change the model (call `recompile()` after). Any other module is symbolically traced.
    Raises `TraceFailure` (one line) when the model has data-dependent control flow or any other
    construct `torch.fx` cannot follow, or when the graph fails on the example inputs.
    """
    if isinstance(model, fx.GraphModule):
        graph_module = model
    else:
        try:
            graph_module = fx.symbolic_trace(model)
        except Exception as exc:  # fx raises many types (TraceError, TypeError, NotImplementedError...)
            raise TraceFailure(f"torch.fx could not trace the model: {_first_line(exc)}") from None
    try:
        with torch.no_grad():
            ShapeProp(graph_module).propagate(*example_inputs)
    except Exception as exc:
        raise TraceFailure(f"the traced model failed on the example inputs: {_first_line(exc)}") from None
    return graph_module


def shape_of(node: fx.Node) -> tuple[int, ...] | None:
    """The output shape recorded for a tensor-valued node, or None for any other node."""
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    return tuple(shape) if shape is not None else None


def call_counts(graph: fx.Graph) -> dict[str, int]:
    """How many times each submodule (by qualified name) is called in the graph."""
    counts: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            counts[node.target] = counts.get(node.target, 0) + 1
    return counts


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule called `name` (a dotted path) by `new`."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def matching(names: Iterable[str], pattern: str) -> list[str]:
    """The names that match the fnmatch `pattern` (e.g. `classifier.*`, `layer4.*.conv2`)."""
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def check_patterns_match(names: Iterable[str], patterns: Iterable[str], setting: str) -> str | None:
    """Return an error line for the first pattern that matches no name in `names`, else None."""
    names = list(names)
    for pattern in patterns:
        if not matching(names, pattern):
            examples = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            return f"{setting} pattern {pattern!r} matches no layer of the model; layer names look like: {examples}"
    return None


def parse_assignments(items: tuple[str, ...], setting: str, low: float, high: float) -> list[tuple[str, float]]:
    """Parse `pattern=value` items with low <= value < high, or raise `PlanError` naming the bad item."""
    parsed = []
    for item in items:
        pattern, sep, text = item.partition("=")
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not sep or not pattern.strip() or not low <= value < high:
            raise PlanError(
                f"bad {setting} item {item!r}: expected PATTERN=VALUE with VALUE in [{low:g}, {high:g}), "
                f"e.g. 'layer4.*=0.7'"
            )
        parsed.append((pattern.strip(), value))
    return parsed


def first_match(name: str, assignments: list[tuple[str, float]]) -> float | None:
    """The value of the first `pattern=value` assignment whose pattern matches `name`, if any."""
    for pattern, value in assignments:
        if fnmatch.fnmatchcase(name, pattern):
            return value
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
