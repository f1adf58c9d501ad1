"""Find out what kind of model file the user gave and load it as a callable PyTorch module.

Formats, decided by looking inside the file (never by its extension):
- TorchScript archive (zip with `code/` and `constants.pkl`) -> `torch.jit.load`;
- `torch.export` program (zip with `archive_format` and `models/`) -> `torch.export.load(...).module()`, after
  `exporter.pt2_archive.check_archive` made sure loading it runs no code from the file (unless `--trust-pickle`);
- a `torch.save`d state dict -> needs `--model-class pkg.module:ClassOrFactory` (and `--model-kwargs`);
- a `torch.save`d whole `nn.Module` -> unpickling runs code, so only with `--trust-pickle`.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.errors import LoadError

TORCHSCRIPT = "torchscript"
EXPORTED_PROGRAM = "exported_program"
STATE_DICT = "state_dict"
PICKLED_MODULE = "pickled_module"

_PICKLE_HINT = (
    "unpickling runs arbitrary code from the file: pass --trust-pickle only if you trust its source, "
    "or save a state dict and use --model-class"
)


@dataclass(frozen=True)
class ModelSource:
    """Where the user's model comes from: the file and, for state dicts, the class that rebuilds it."""

    path: str
    model_class: str | None = None
    model_kwargs: tuple[tuple[str, Any], ...] = ()
    trust_pickle: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for the plan."""
        return {
            "path": self.path,
            "model_class": self.model_class,
            "model_kwargs": dict(self.model_kwargs),
            "trust_pickle": self.trust_pickle,
        }


@dataclass
class LoadedModel:
    """A loaded model in eval mode, the format it came from, and its forward argument names.

    `program` is the `torch.export.ExportedProgram` when the file was a `.pt2` (None otherwise).
    """

    module: Any
    format: str
    input_names: list[str]
    program: Any = None


def parse_model_kwargs(text: str | dict | None) -> tuple[tuple[str, Any], ...]:
    """Parse `--model-kwargs` JSON (an object) into sorted (key, value) pairs."""
    if text in (None, ""):
        return ()
    if isinstance(text, dict):
        return tuple(sorted(text.items()))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LoadError(f"--model-kwargs is not valid JSON ({exc.msg}): expected e.g. '{{\"num_classes\": 10}}'") from None
    if not isinstance(data, dict):
        raise LoadError(f"--model-kwargs must be a JSON object, got {type(data).__name__}: e.g. '{{\"num_classes\": 10}}'")
    return tuple(sorted(data.items()))


def sniff_format(path: Path) -> str:
    """Return the model format stored in `path`, or raise `LoadError` saying what the file is not."""
    if not path.exists():
        raise LoadError(f"model file not found: {path}")
    if path.is_dir():
        raise LoadError(f"model path {path} is a folder: pass the model file itself (.pt, .pth, .pt2)")
    if path.stat().st_size == 0:
        raise LoadError(f"model file {path} is empty")
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not zipfile.is_zipfile(path):
        if head == b"PK\x03\x04":  # starts like a zip archive but has no central directory
            raise LoadError(f"model file {path} is truncated or corrupt (incomplete zip archive): re-save or re-download it")
        if head[:1] == b"\x80":  # protocol-2+ pickle: torch.save with the legacy format
            return "legacy_pickle"
        raise LoadError(
            f"{path} is not a PyTorch model file (expected a TorchScript archive, a torch.export .pt2, "
            "or a torch.save file)"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise LoadError(f"model file {path} is truncated or corrupt ({exc}): re-save or re-download it") from None
    if bad is not None:
        raise LoadError(f"model file {path} is truncated or corrupt (bad entry {bad}): re-save or re-download it")
    tails = {name.split("/", 1)[1] if "/" in name else name for name in names}
    if "archive_format" in tails or any(t.startswith("models/") for t in tails):
        return EXPORTED_PROGRAM
    if "constants.pkl" in tails or any(t.startswith("code/") for t in tails):
        return TORCHSCRIPT
    if "data.pkl" in tails:
        return "torch_save"
    raise LoadError(f"{path} is a zip file but not a PyTorch model (no TorchScript code, export program or data.pkl)")


def load_model(source: ModelSource) -> LoadedModel:
    """Load the model described by `source` in eval mode; every failure is a one-line `LoadError`."""
    import torch

    path = Path(source.path)
    kind = sniff_format(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == TORCHSCRIPT:
            module = _guard(lambda: torch.jit.load(str(path), map_location="cpu"), path, "TorchScript archive")
            return LoadedModel(module.eval(), TORCHSCRIPT, _torchscript_input_names(module))
        if kind == EXPORTED_PROGRAM:
            program = load_exported_program(path, source.trust_pickle)
            _check_dynamic_batch(program, path)
            module = _guard(program.module, path, "torch.export program")
            return LoadedModel(module, EXPORTED_PROGRAM, _signature_names(module.forward), program=program)
        return _load_torch_save(path, source)


def load_exported_program(path: Path, trust_pickle: bool = False):
    """`torch.export.load` of `path`; without `trust_pickle` the archive is first checked to run no code.

    The file is read once and torch loads the very bytes that were checked.
    """
    import io

    import torch

    from exporter.pt2_archive import check_archive

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LoadError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not trust_pickle:
        check_archive(data, path)
    with _quiet_torch_loading():
        return _guard(lambda: torch.export.load(io.BytesIO(data)), path, "torch.export program")


def _check_dynamic_batch(program, path: Path) -> None:
    """Refuse a program whose inputs have a fixed batch size: every stage runs batches of the user's data."""
    import torch

    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    for spec in program.graph_signature.input_specs:
        if spec.kind.name != "USER_INPUT" or getattr(spec.arg, "name", None) not in placeholders:
            continue
        value = placeholders[spec.arg.name].meta.get("val")
        if isinstance(value, torch.Tensor) and value.dim() and isinstance(value.shape[0], int):
            raise LoadError(
                f"{path} was exported for a fixed batch of {value.shape[0]} (input {spec.arg.name!r}): export it "
                "with a dynamic batch, torch.export.export(model, args, dynamic_shapes=({0: torch.export.Dim('batch')},)) "
                "with one entry per input, and save it again"
            )


def _quiet_torch_loading():
    """torch.export.load logs a full traceback before raising; the `LoadError` says it in one line."""
    import contextlib
    import logging

    @contextlib.contextmanager
    def quiet():
        loggers = [logging.getLogger(n) for n in ("torch.export", "torch._export")]
        levels = [lg.level for lg in loggers]
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)

    return quiet()


def _load_torch_save(path: Path, source: ModelSource) -> LoadedModel:
    import pickle

    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        obj = None  # holds pickled Python objects (a whole module, or a dict with one)
    except Exception as exc:
        raise LoadError(f"cannot read {path}: {type(exc).__name__}: {_first_line(exc)}") from None
    if obj is not None:
        state = _find_state_dict(obj)
        if state is None:
            raise LoadError(f"{path} holds a {type(obj).__name__}, not a model or a state dict of tensors")
        if not source.model_class:
            raise LoadError(
                f"{path} is a state dict (weights only): pass --model-class package.module:ClassName "
                "(and --model-kwargs JSON if its constructor needs arguments)"
            )
        module = build_model_class(source.model_class, dict(source.model_kwargs))
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise LoadError(f"state dict {path} does not fit {source.model_class}: {_state_dict_mismatch(exc)}") from None
        return LoadedModel(module.eval(), STATE_DICT, _signature_names(module.forward))
    if not source.trust_pickle:
        raise LoadError(f"{path} is a pickled Python object (a whole nn.Module): {_PICKLE_HINT}")
    _put_cwd_on_path()
    try:
        module = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise LoadError(f"cannot unpickle {path}: {type(exc).__name__}: {_first_line(exc)}") from None
    if isinstance(module, dict):
        raise LoadError(f"{path} unpickled to a dict, not an nn.Module: use --model-class for state dicts")
    if not isinstance(module, torch.nn.Module):
        raise LoadError(f"{path} unpickled to a {type(module).__name__}, not a torch.nn.Module")
    return LoadedModel(module.eval(), PICKLED_MODULE, _signature_names(module.forward))


def build_model_class(spec: str, kwargs: dict[str, Any]):
    """Import `package.module:ClassOrFactory` (current folder on sys.path) and call it with `kwargs`."""
    import torch

    if ":" not in spec:
        raise LoadError(f"--model-class {spec!r} must look like package.module:ClassName")
    module_name, _, attr = spec.partition(":")
    _put_cwd_on_path()
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise LoadError(f"cannot import --model-class module {module_name!r}: {type(exc).__name__}: {_first_line(exc)}") from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise LoadError(f"--model-class: module {module_name!r} has no attribute {attr!r}")
    try:
        model = factory(**kwargs)
    except TypeError as exc:
        raise LoadError(f"--model-class {spec} rejected --model-kwargs {kwargs}: {_first_line(exc)}") from None
    except Exception as exc:  # the user's constructor failed: bad input, named in one line
        raise LoadError(
            f"--model-class {spec} raised {type(exc).__name__} while building the model: {_first_line(exc)}; "
            "fix the class or its --model-kwargs"
        ) from None
    if not isinstance(model, torch.nn.Module):
        raise LoadError(f"--model-class {spec} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _find_state_dict(obj: Any) -> dict | None:
    import torch

    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj:
                return _find_state_dict(obj[key])
    return None


def _state_dict_mismatch(exc: RuntimeError) -> str:
    text = " ".join(str(exc).split())
    return text.split("Error(s) in loading state_dict for ", 1)[-1][:300]


def _signature_names(forward) -> list[str]:
    params = [
        p
        for p in inspect.signature(forward).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return _input_names([p.name for p in params])


def _torchscript_input_names(module) -> list[str]:
    try:
        args = [a for a in module.forward.schema.arguments if a.name != "self" and a.default_value is None]
        return _input_names([a.name for a in args])
    except Exception:
        return ["input"]


def _input_names(names: list[str]) -> list[str]:
    """One input is called `input`; several keep their forward argument names."""
    return ["input"] if len(names) <= 1 else names


def _put_cwd_on_path() -> None:
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def _guard(load, path: Path, what: str):
    try:
        return load()
    except Exception as exc:
        raise LoadError(f"cannot load {path} as a {what}: {type(exc).__name__}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else ""
