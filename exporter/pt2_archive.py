"""Inspect a `torch.export` `.pt2` archive before torch loads it, so loading one runs no code from the file.

`torch.export.load` is not safe on an untrusted file. Reading torch 2.13's loader
(`torch/export/pt2_archive/_package.py`, `torch/_export/serde/serialize.py`) shows these ways a `.pt2`
runs code:
- pickled members: weights and constants flagged `use_pickle` (`torch.load(weights_only=False)`),
  custom and opaque objects (`pickle.loads`), legacy `weights/<model>.pt` files, and the sample inputs,
  which are tried with `weights_only=True` and then *retried with full unpickling* when that fails;
- a legacy-format fallback (a top-level `version` member) that unpickles everything;
- compiled AOTInductor / ExecuTorch payloads (native libraries);
- the program JSON itself: `guards_code` strings are `exec`'d by `ExportedProgram.module()`, symbolic
  expressions go through `sympy.sympify` (which `eval`s), and node targets are resolved by attribute
  lookup from `torch`, `operator` and `math` (so `torch.ops.load_library` or `operator.methodcaller` would
  be called when the graph runs).

`check_archive` refuses all of these unless the user trusts the file: only plain tensor payloads,
sample inputs that load with `weights_only=True`, guards and expressions made of arithmetic on shapes, and
node targets that are registered operators.
"""

from __future__ import annotations

import ast
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any, Iterator

from exporter.errors import LoadError

_TRUST_HINT = "pass --trust-pickle only if you trust its source, or re-save the program with torch.export.save from a model you trust"

# Archive members (below the archive's root folder) that torch loads without running code.
_SAFE_MEMBERS = [
    re.compile(p)
    for p in (
        r"archive_format",
        r"archive_version",
        r"byteorder",
        r"\.data/[A-Za-z0-9_.]+",
        r"models/[A-Za-z0-9_.-]+\.json",
        r"data/weights/[A-Za-z0-9_.-]+_weights_config\.json",
        r"data/weights/weight_[0-9]+",
        r"data/constants/[A-Za-z0-9_.-]+_constants_config\.json",
        r"data/constants/tensor_[0-9]+",
        r"data/sample_inputs/[A-Za-z0-9_.-]+\.pt",
        r"extra/[^\x00]+",
    )
]
_IDENTIFIER_TEXT = re.compile(r"[A-Za-z0-9_]*")
# Attribute names a shape guard may use (`L['x'].size()[2] == 16`, `math.isnan(...)`).
_GUARD_ATTRIBUTES = {"size", "stride", "storage_offset", "dim", "numel", "isnan", "isinf", "floor", "ceil", "trunc",
                     "sqrt", "inf", "nan", "pi", "e"}
_ARITHMETIC_NODES = (ast.Expression, ast.Compare, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.IfExp, ast.Load,
                     ast.operator, ast.cmpop, ast.boolop, ast.unaryop)


def check_archive(data: bytes, path: Path) -> None:
    """Raise `LoadError` unless the `.pt2` archive in `data` loads with `torch.export.load` without running code."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise LoadError(f"model file {path} is truncated or corrupt ({exc}): re-save or re-download it") from None
    with archive:
        members = _members_below_root(archive, path)
        for tail in members:
            if not any(p.fullmatch(tail) for p in _SAFE_MEMBERS):
                raise LoadError(f"{path} holds {tail!r}, which torch.export.load would unpickle or run as code: {_TRUST_HINT}")
        for tail, name in members.items():
            if tail.endswith(("_weights_config.json", "_constants_config.json")):
                _check_payload_config(_read_json(archive, name, path), tail, path)
            elif tail.startswith("data/sample_inputs/"):
                _check_sample_inputs(archive.read(name), tail, path)
            elif tail.startswith("models/"):
                _check_program(_read_json(archive, name, path), tail, path)


def _members_below_root(archive: zipfile.ZipFile, path: Path) -> dict[str, str]:
    """`{path below the root folder: member name}`; every member must sit in the one root folder."""
    names = [n for n in archive.namelist() if not n.endswith("/")]
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1 or any("/" not in n for n in names):
        raise LoadError(f"{path} is not a torch.export archive (members outside one root folder): {_TRUST_HINT}")
    return {n.split("/", 1)[1]: n for n in names}


def _read_json(archive: zipfile.ZipFile, name: str, path: Path) -> Any:
    try:
        return json.loads(archive.read(name).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LoadError(f"{path}: member {name} is not valid JSON ({exc}): re-save the program") from None


def _check_payload_config(config: Any, tail: str, path: Path) -> None:
    entries = config.get("config", {}) if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise LoadError(f"{path}: {tail} is not a torch.export payload config: re-save the program")
    prefix = "weight_" if "weights" in tail else "tensor_"
    for fqn, meta in entries.items():
        pickled = not isinstance(meta, dict) or meta.get("use_pickle") is not False
        if pickled or not str(meta.get("path_name", "")).startswith(prefix):
            raise LoadError(f"{path} stores {fqn!r} as a pickled Python object, which loading would unpickle: {_TRUST_HINT}")


def _check_sample_inputs(payload: bytes, tail: str, path: Path) -> None:
    """Sample inputs must load with `weights_only=True`, or torch retries them with full unpickling."""
    if not payload:
        return
    import torch

    try:
        torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception:
        raise LoadError(
            f"{path} holds pickled sample inputs ({tail}) that only load by unpickling, which runs code from the file: "
            f"{_TRUST_HINT}"
        ) from None


def _check_program(program: Any, tail: str, path: Path) -> None:
    if not isinstance(program, dict):
        raise LoadError(f"{path}: {tail} is not a torch.export program: re-save the program")
    for guard in program.get("guards_code") or []:
        if not isinstance(guard, str) or not _is_safe_expression(guard, _guard_name_ok, _guard_call_ok):
            raise LoadError(f"{path} holds a shape guard that is not plain arithmetic ({str(guard)[:80]!r}), "
                            f"which loading would run as code: {_TRUST_HINT}")
    for text in _values_under(program, "expr_str"):
        if not isinstance(text, str) or not _is_safe_expression(text, _sympy_name_ok, _sympy_call_ok):
            raise LoadError(f"{path} holds a symbolic shape that is not plain arithmetic ({str(text)[:80]!r}), "
                            f"which loading would evaluate as code: {_TRUST_HINT}")
    for target in _node_targets(program):
        if not _is_operator(target):
            raise LoadError(f"{path} calls {str(target)[:80]!r}, which is not a registered PyTorch operator: {_TRUST_HINT}")


def _values_under(tree: Any, key: str) -> Iterator[Any]:
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k == key:
                yield v
            else:
                yield from _values_under(v, key)
    elif isinstance(tree, list):
        for item in tree:
            yield from _values_under(item, key)


def _node_targets(tree: Any) -> Iterator[Any]:
    """Every graph node's `target` (nodes of nested subgraphs too)."""
    if isinstance(tree, dict):
        if "target" in tree and "inputs" in tree and "outputs" in tree:
            yield tree["target"]
        for value in tree.values():
            yield from _node_targets(value)
    elif isinstance(tree, list):
        for item in tree:
            yield from _node_targets(item)


def _is_operator(target: Any) -> bool:
    """True for `torch.ops.<ns>.<op>[.<overload>]` operators and torch's symbolic-shape helpers, resolved as torch does."""
    import math
    import operator

    import torch

    if not isinstance(target, str) or any(part.startswith("__") for part in target.split(".")):
        return False
    roots = {"torch": torch, "_operator": operator, "math": math}
    head, *parts = target.split(".")
    obj = roots.get(head)
    if obj is None:
        return False
    for part in parts:
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    if isinstance(obj, (torch._ops.OpOverload, torch._ops.OpOverloadPacket, torch._ops.HigherOrderOperator)):
        return head == "torch" and parts[:1] == ["ops"]
    return obj in _symbolic_helpers() or (head == "math" and callable(obj))


def _symbolic_helpers() -> set:
    import operator

    try:
        from torch._export.serde.serialize import _SYM_OPS
    except ImportError:  # pragma: no cover - torch is pinned
        _SYM_OPS = set()
    return set(_SYM_OPS) | {operator.getitem}


def _is_safe_expression(text: str, name_ok, call_ok) -> bool:
    """True when `text` parses as one expression made only of arithmetic, comparisons and allowed names/calls."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        return False
    for node in ast.walk(tree):
        if isinstance(node, _ARITHMETIC_NODES):
            continue
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str) and not _IDENTIFIER_TEXT.fullmatch(node.value):
                return False
            if not isinstance(node.value, (str, int, float, bool, type(None))):
                return False
        elif isinstance(node, ast.Name):
            if not name_ok(node.id):
                return False
        elif isinstance(node, ast.Attribute):
            if node.attr not in _GUARD_ATTRIBUTES:
                return False
        elif isinstance(node, ast.Subscript):
            continue
        elif isinstance(node, ast.Call):
            if not call_ok(node):
                return False
        elif isinstance(node, ast.keyword):
            if node.arg is None:
                return False
        else:
            return False
    return True


def _guard_name_ok(name: str) -> bool:
    from torch.fx.experimental.symbolic_shapes import SYMPY_INTERP

    return name in ("L", "math", "inf") or name in SYMPY_INTERP


def _guard_call_ok(node: ast.Call) -> bool:
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr in _GUARD_ATTRIBUTES
    return isinstance(func, ast.Name) and _guard_name_ok(func.id)


def _sympy_name_ok(name: str) -> bool:
    return not name.startswith("_")


def _sympy_call_ok(node: ast.Call) -> bool:
    """Calls in a symbolic expression may only construct sympy objects (`Symbol('s0', integer=True)`, `Max(...)`)."""
    import sympy

    import torch.utils._sympy.functions as torch_sympy

    func = node.func
    if not isinstance(func, ast.Name) or func.id.startswith("_"):
        return False
    for module in (sympy, torch_sympy):
        obj = getattr(module, func.id, None)
        if isinstance(obj, type) and issubclass(obj, sympy.Basic):
            return True
    return False
