"""ONNX node -> PyTorch module path, so per-layer figures read `features.3.conv`, not `node_conv2d_3`.

Sources, in order of trust:
1. the `module` metadata entry the exporter writes on each node (`exporter.onnx_export.MODULE_KEY`),
   or the dynamo exporter's raw `pkg.torch.onnx.name_scopes` when the graph was not cleaned;
2. the node's own parameters: an input initializer named `features.3.conv.weight` -> `features.3.conv`;
3. TorchScript-style node names `/features/features.3/Conv` -> `features.3`.

The dynamo exporter's name scopes are cumulative (`['', 'body', 'body.0', 'body.0.conv', 'conv2d_1']`),
so a metadata value built by joining them reads `body.body.0.body.0.conv`; `canonical_module_path`
recovers `body.0.conv`, checking candidates against the model's parameter names when it can.
Quantization keeps node names and metadata; QuantizeLinear / DequantizeLinear nodes it inserts have
neither, and take the module of the layer whose tensor they carry.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterable

import onnx

MODULE_KEY = "module"
RAW_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_PARAM_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "in_proj_weight", "in_proj_bias")


def node_module_map(model: onnx.ModelProto | str | Path) -> dict[str, str]:
    """Map every named node to the dotted PyTorch module path that produced it ("" when unknown).

    Quantize/dequantize nodes inherit the module of the node that produces their activation, or,
    for weights, of the node that consumes them.
    """
    model = _load(model)
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    # In a quantized model a layer reads `w_DequantizeLinear_Output`; name it by the float weight `w`.
    dequantized = {
        node.output[0]: node.input[0].removesuffix("_quantized")
        for node in graph.node
        if node.op_type == "DequantizeLinear" and node.input and node.input[0] in initializers
    }
    known = _module_prefixes(initializers | set(dequantized.values()))
    result: dict[str, str] = {}
    for node in graph.node:
        result[node.name] = _own_module(node, initializers, known, dequantized)
    # Second sweep: Q/DQ nodes borrow the module of the layer they serve.
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in graph.node:
        if node.op_type not in QDQ_OPS or result.get(node.name):
            continue
        result[node.name] = _borrowed_module(node, producer, consumers, result)
    return result


def tensor_module_map(model: onnx.ModelProto | str | Path) -> dict[str, str]:
    """Map every tensor a node produces to the module of its producer (Q/DQ outputs included)."""
    model = _load(model)
    nodes = node_module_map(model)
    return {out: nodes.get(node.name, "") for node in model.graph.node for out in node.output if out}


def canonical_module_path(path: str, known: Iterable[str] = ()) -> str:
    """The module path a metadata value names, undoing joined cumulative scopes when that fits better.

    Exporters before the fix joined the dynamo exporter's cumulative scopes (`body.body.0.body.0.conv`
    for `body.0.conv`). Candidates are the value itself and the deepest scope of each reading of it
    as cumulative scopes; the one naming a module that owns parameters (`known`) wins, then one
    whose parent module does, then the value as written.
    """
    if not path:
        return ""
    known = set(known)
    candidates = [path, *(".".join(c) for c in _deepest_scopes(path.split(".")))]

    def score(candidate: str) -> int:
        if candidate in known:
            return 2
        parent = candidate.rpartition(".")[0]
        return 1 if parent and parent in known else 0

    return max(candidates, key=score)  # max keeps the first of equal scores: the value as written


def module_from_node_name(name: str) -> str:
    """TorchScript exporter names: `/features/features.3/Conv` -> `features.3`; anything else -> ""."""
    if not name.startswith("/"):
        return ""
    segments = [s for s in name.split("/")[1:-1] if s]
    return segments[-1] if segments else ""


def display_name(row: dict) -> str:
    """What a person should read for a layer row: the module path, or the ONNX node name."""
    return row.get("module") or row.get("node") or row.get("tensor", "?")


def _own_module(node: onnx.NodeProto, initializers: set[str], known: set[str], dequantized: dict[str, str]) -> str:
    props = {p.key: p.value for p in node.metadata_props}
    params = [dequantized.get(i, i) for i in node.input if i in initializers or i in dequantized]
    owner = _weight_owner(node, dequantized.get(node.input[1], node.input[1]) if len(node.input) > 1 else "", params, known)
    if props.get(MODULE_KEY):
        owned = {_strip_param(i) for i in params} & known
        path = canonical_module_path(props[MODULE_KEY], owned or known)
        # A Conv with a BatchNorm folded in by the exporter carries the BatchNorm's scope; the layer
        # a person knows is the one owning the weight.
        return owner if owner and path not in owned else path
    scopes = _raw_scopes(props.get(RAW_SCOPES_KEY), props.get("pkg.torch.onnx.class_hierarchy", ""))
    if scopes:
        return scopes[-1]
    for name in params:
        if "." in name:
            module = _strip_param(name)
            if module in known:
                return module
    return module_from_node_name(node.name)


def _weight_owner(node: onnx.NodeProto, weight: str, params: list[str], known: set[str]) -> str:
    """For Conv/Gemm/MatMul layers: the module owning the weight input (`features.0.weight` -> `features.0`)."""
    if node.op_type not in WEIGHTED_OPS or weight not in params:
        return ""
    module = _strip_param(weight)
    return module if module in known else ""


def _borrowed_module(node, producer, consumers, result) -> str:
    seen = set()
    current = node
    # Walk up through Q/DQ chains to the node that computed the activation.
    while current is not None and current.op_type in QDQ_OPS and current.name not in seen:
        seen.add(current.name)
        source = producer.get(current.input[0]) if current.input else None
        if source is None:
            break
        if source.op_type not in QDQ_OPS:
            return result.get(source.name, "")
        current = source
    # A weight's (or graph input's) Q/DQ: the consumer layer it feeds.
    frontier = [node]
    while frontier:
        item = frontier.pop()
        for out in item.output:
            for consumer in consumers.get(out, []):
                if consumer.op_type in QDQ_OPS:
                    if consumer.name not in seen:
                        seen.add(consumer.name)
                        frontier.append(consumer)
                elif result.get(consumer.name):
                    return result[consumer.name]
    return ""


def _raw_scopes(text: str | None, hierarchy: str) -> list[str]:
    """The dynamo exporter's raw scopes without the leading root and the trailing aten op."""
    if not text:
        return []
    try:
        scopes = [s for s in ast.literal_eval(text) if s]
    except (ValueError, SyntaxError):
        return []
    try:
        classes = ast.literal_eval(hierarchy) if hierarchy else []
    except (ValueError, SyntaxError):
        classes = []
    if scopes and classes and str(classes[-1]).startswith("aten."):
        scopes = scopes[:-1]
    return scopes


def _deepest_scopes(tokens: list[str]) -> list[list[str]]:
    """Deepest scope of every reading of `tokens` as two or more cumulative scopes, most scopes first.

    Each scope must extend the previous one; readings with more scopes explain the text better
    (`body.body.0.body.0.conv` is body / body.0 / body.0.conv, not body / body.0.body.0.conv).
    """
    found: list[tuple[int, list[str]]] = []

    def walk(start: int, previous: list[str], depth: int) -> None:
        if start == len(tokens):
            found.append((depth, previous))
            return
        width = len(previous)
        if tokens[start : start + width] != previous:
            return
        for end in range(start + width + 1, len(tokens) + 1):
            walk(end, tokens[start:end], depth + 1)

    for first in range(1, len(tokens)):
        walk(first, tokens[:first], 1)
    found.sort(key=lambda item: item[0], reverse=True)
    return [scope for _, scope in found]


def _strip_param(name: str) -> str:
    head, _, tail = name.rpartition(".")
    return head if head and tail in _PARAM_SUFFIXES else name.rsplit(".", 1)[0] if "." in name else ""


def _module_prefixes(initializers: Iterable[str]) -> set[str]:
    prefixes: set[str] = set()
    for name in initializers:
        parts = name.split(".")[:-1]
        for i in range(1, len(parts) + 1):
            prefixes.add(".".join(parts[:i]))
    return prefixes


def _load(model: onnx.ModelProto | str | Path) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    return onnx.load(str(model), load_external_data=False)
