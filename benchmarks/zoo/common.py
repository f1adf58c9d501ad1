"""What one zoo model is, and how it is written to disk.

A `ZooModel` carries the eval-mode PyTorch module, an example input per forward argument,
the calibration and validation inputs (real data, keyed by input name) and the facts the
index line states. `write_model` saves it as a `torch.export` program with a dynamic batch
axis (`model.pt2`), a state dict, `calib.npz`, `val.npz` and `info.json`, and checks that
the saved program reproduces the module on the validation inputs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

MAX_EXPORT_BATCH = 1024
DEFAULT_ZOO = Path("/work/zoo")


@dataclass
class ZooModel:
    """One model of the zoo with its real inputs and a description for the index."""

    name: str
    module: torch.nn.Module
    input_names: tuple[str, ...]
    calib: dict[str, np.ndarray]
    val: dict[str, np.ndarray]
    what: str
    weights: str
    output_kind: str  # logits | embedding | probabilities | regression
    val_labels: np.ndarray | None = None
    calib_labels: np.ndarray | None = None
    model_class: str | None = None  # "package.module:Class" that loads the state dict
    model_kwargs: dict = field(default_factory=dict)
    notes: str = ""
    torchscript: bool = False


@dataclass(frozen=True)
class ZooInfo:
    """The facts about a written model, saved as `info.json` and turned into an INDEX.md line."""

    name: str
    what: str
    weights: str
    inputs: dict[str, list]  # name -> [shape without batch, dtype]
    outputs: list[list]  # [shape without batch] per output
    output_kind: str
    calib_samples: int
    val_samples: int
    has_labels: bool
    float_agreement_with_labels: float | None
    files: list[str]
    export_command: str
    notes: str


def _sample_batch(arrays: dict[str, np.ndarray], n: int) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(a[:n])) for a in arrays.values())


def run_module(module: torch.nn.Module, arrays: dict[str, np.ndarray], batch: int = 32) -> list[np.ndarray]:
    """Run `module` over all samples of `arrays` (keyed by input name) and stack each output."""
    count = len(next(iter(arrays.values())))
    chunks: list[list[np.ndarray]] = []
    with torch.no_grad():
        for start in range(0, count, batch):
            args = tuple(torch.from_numpy(np.ascontiguousarray(a[start : start + batch])) for a in arrays.values())
            out = module(*args)
            outs = out if isinstance(out, (tuple, list)) else (out,)
            chunks.append([o.detach().numpy() for o in outs])
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def write_model(model: ZooModel, zoo: Path = DEFAULT_ZOO) -> ZooInfo:
    """Write `model` to `zoo/<name>/` and return its `ZooInfo` (also saved as info.json)."""
    folder = zoo / model.name
    folder.mkdir(parents=True, exist_ok=True)
    module = model.module.eval()
    example = _sample_batch(model.calib, 2)
    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    dynamic = {name: {0: batch} for name in model.input_names}
    program = torch.export.export(module, example, dynamic_shapes=dynamic)
    torch.export.save(program, str(folder / "model.pt2"))
    files = ["model.pt2"]
    if model.model_class:
        torch.save(module.state_dict(), folder / "state_dict.pt")
        files.append("state_dict.pt")
    if model.torchscript:
        torch.jit.trace(module, example).save(str(folder / "model.torchscript.pt"))
        files.append("model.torchscript.pt")

    calib = dict(model.calib)
    if model.calib_labels is not None:
        calib["labels"] = model.calib_labels
    val = dict(model.val)
    if model.val_labels is not None:
        val["labels"] = model.val_labels
    np.savez(folder / "calib.npz", **calib)
    np.savez(folder / "val.npz", **val)
    files += ["calib.npz", "val.npz"]

    reference = run_module(module, model.val)
    reloaded = run_module(torch.export.load(str(folder / "model.pt2")).module(), model.val)
    for ref, got in zip(reference, reloaded):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    accuracy = None
    if model.val_labels is not None:
        accuracy = float((reference[0].argmax(-1) == model.val_labels).mean())

    info = ZooInfo(
        name=model.name,
        what=model.what,
        weights=model.weights,
        inputs={k: [list(v.shape[1:]), str(v.dtype)] for k, v in model.val.items()},
        outputs=[list(r.shape[1:]) for r in reference],
        output_kind=model.output_kind,
        calib_samples=len(next(iter(model.calib.values()))),
        val_samples=len(next(iter(model.val.values()))),
        has_labels=model.val_labels is not None,
        float_agreement_with_labels=accuracy,
        files=files,
        export_command=(
            f"exporter export {folder}/model.pt2 --target cpu-int8 --calib {folder}/calib.npz "
            f"--val {folder}/val.npz --out /tmp/{model.name}-int8 --force"
        ),
        notes=model.notes,
    )
    (folder / "info.json").write_text(json.dumps(asdict(info), indent=2) + "\n")
    return info


def index_line(info: ZooInfo) -> str:
    """One markdown table row of /work/zoo/INDEX.md for `info`."""
    inputs = ", ".join(f"`{k}` {v[1]} (N,{','.join(map(str, v[0]))})" for k, v in info.inputs.items())
    outputs = ", ".join(f"(N,{','.join(map(str, o))})" for o in info.outputs)
    acc = f"; float accuracy on val labels {info.float_agreement_with_labels:.3f}" if info.has_labels else ""
    return (
        f"| `{info.name}` | {info.what} | {info.weights} | {inputs} | {outputs} {info.output_kind}{acc} | "
        f"{info.calib_samples} / {info.val_samples}{' + labels' if info.has_labels else ''} | "
        f"`{info.export_command}` | {info.notes} |"
    )
