"""Shared, process-wide cached models for the quantizer and target tests.

Exporting to ONNX takes seconds, so each float ONNX file is made once per test session (cached
here, not in a conftest, because both `tests/quantizers` and `tests/targets` use them) in a
temporary folder removed at exit. Also: the digits sample's data, a PyTorch reference on it, a tiny
transformer encoder, a rewindable calibration reader, and the agreement figures a target gates on.
"""

from __future__ import annotations

import atexit
import functools
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from exporter.inputs import InputSpec
from exporter.metrics import OutputComparison
from exporter.runtime import session_for

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "digits"
DIGITS_SPECS = [InputSpec("input", (1, 1, 16, 16))]
ENCODER_SPECS = [InputSpec("input", (1, 8, 16))]


@functools.lru_cache(maxsize=None)
def scratch() -> Path:
    """A temporary folder for the session's shared files, removed when the process exits."""
    path = Path(tempfile.mkdtemp(prefix="exporter_target_tests_"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.lru_cache(maxsize=None)
def digits_data() -> dict[str, np.ndarray]:
    """`calib`, `val` inputs and `val_labels` of the digits sample."""
    with np.load(SAMPLE / "calib.npz") as calib, np.load(SAMPLE / "val.npz") as val:
        return {"calib": calib["input"], "val": val["input"], "val_labels": val["labels"]}


@functools.lru_cache(maxsize=None)
def digits_model() -> nn.Module:
    """The trained DigitsCNN of the sample, in eval mode."""
    from samples.architectures import DigitsCNN

    model = DigitsCNN(num_classes=10)
    model.load_state_dict(torch.load(SAMPLE / "digits_cnn.state_dict.pt", weights_only=True))
    return model.eval()


@functools.lru_cache(maxsize=None)
def digits_reference() -> np.ndarray:
    """PyTorch logits of the original DigitsCNN on the validation inputs."""
    with torch.no_grad():
        return digits_model()(torch.from_numpy(digits_data()["val"])).numpy()


def export(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """Float ONNX with a dynamic batch axis, the way the brief prescribes for these tests."""
    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=True,
        external_data=False,
        input_names=["input"],
        output_names=["output"],
        opset_version=18,
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        verbose=False,
    )
    return path


@functools.lru_cache(maxsize=None)
def digits_onnx() -> Path:
    """The DigitsCNN as a float ONNX file with a dynamic batch axis."""
    return export(digits_model(), torch.from_numpy(digits_data()["val"][:2]), scratch() / "digits.onnx")


@functools.lru_cache(maxsize=None)
def digits_fixed_onnx() -> Path:
    """The same file with the input fixed to (1, 1, 16, 16), as `--input-shape 1,1,16,16` gives (onnxruntime's tool)."""
    import onnx
    from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_input_shape_fixed

    model = onnx.load(str(digits_onnx()))
    make_input_shape_fixed(model.graph, "input", [1, 1, 16, 16])
    fix_output_shapes(model)
    path = scratch() / "digits_fixed.onnx"
    onnx.save(model, str(path))
    return path


class Attention(nn.Module):
    """Multi-head self-attention written out: one qkv Linear, scaled dot product, output Linear."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // self.heads), dim=-1)
        return self.out((weights @ v).transpose(1, 2).reshape(b, t, d))


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyEncoder(nn.Module):
    """Linear embedding of 16 features, two blocks of width 64, mean pooling, Linear head to 10 classes.

    Constant-weight matrix products: embed 1 + 4 per block (qkv, out, mlp x2) + head 1 = 10;
    activation x activation MatMuls (scores, weighted values): 2 per block = 4.
    """

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(16, 64)
        self.blocks = nn.Sequential(EncoderBlock(64, 4), EncoderBlock(64, 4))
        self.norm = nn.LayerNorm(64)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.embed(x))).mean(dim=1))


ENCODER_WEIGHT_MATMULS = 10
ENCODER_ACTIVATION_MATMULS = 4


@functools.lru_cache(maxsize=None)
def encoder_model() -> nn.Module:
    """A seeded TinyEncoder in eval mode."""
    torch.manual_seed(0)
    return TinyEncoder().eval()


@functools.lru_cache(maxsize=None)
def encoder_inputs() -> np.ndarray:
    """128 seeded token sequences of shape (8, 16)."""
    return np.random.default_rng(0).standard_normal((128, 8, 16)).astype(np.float32)


@functools.lru_cache(maxsize=None)
def encoder_onnx() -> Path:
    """The TinyEncoder as a float ONNX file with a dynamic batch axis."""
    return export(encoder_model(), torch.from_numpy(encoder_inputs()[:2]), scratch() / "encoder.onnx")


class ArrayReader:
    """onnxruntime's CalibrationDataReader protocol over one array, `batch_size` rows at a time; rewindable."""

    def __init__(self, array: np.ndarray, name: str = "input", batch_size: int = 1) -> None:
        self.array, self.name, self.batch_size, self.position = array, name, batch_size, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.array):
            return None
        batch = self.array[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return {self.name: batch}

    def rewind(self) -> None:
        self.position = 0

    def __iter__(self):
        while (batch := self.get_next()) is not None:
            yield batch


def run(path: Path, inputs: np.ndarray, batch: int | None = None) -> np.ndarray:
    """Outputs of the ONNX file at `path` on `inputs` (one call, or `batch` rows per call)."""
    session = session_for(path)
    if batch is None:
        return session.run(None, {"input": inputs})[0]
    return np.concatenate([session.run(None, {"input": inputs[i : i + batch]})[0] for i in range(0, len(inputs), batch)])


def agreement(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None) -> dict:
    """The exporter's own agreement figures (top-1, cosine, SQNR, accuracies)."""
    comparison = OutputComparison()
    comparison.add(reference, candidate, labels)
    return comparison.summary()


def assert_within(tolerances, figures: dict) -> None:
    """Assert every gated tolerance of a target holds for `figures` (as the pipeline's validation would)."""
    if tolerances.min_top1_agreement is not None:
        assert figures["top1_agreement"] >= tolerances.min_top1_agreement, figures
    if tolerances.min_cosine is not None:
        assert figures["cosine"] >= tolerances.min_cosine, figures
    if tolerances.min_sqnr_db is not None:
        assert figures["sqnr_db"] >= tolerances.min_sqnr_db, figures
    if tolerances.max_abs_error is not None:
        assert figures["max_abs_error"] <= tolerances.max_abs_error, figures
    if tolerances.max_accuracy_drop is not None:
        drop = figures["reference_accuracy"] - figures["candidate_accuracy"]
        assert drop <= tolerances.max_accuracy_drop, figures


def op_counts(path: Path) -> dict[str, int]:
    """Node count per op type."""
    from exporter.quantizers.base import count_ops

    return count_ops(path)


def quantize(scheme, float_path: Path, work: Path, specs, calib: np.ndarray | None = None, nodes_to_exclude=()):
    """Run the exporter's quantizer for `scheme` on `float_path` in `work`; returns (output path, QuantizeInfo)."""
    from exporter.quantizers import QuantizeRequest, quantize_model

    work.mkdir(parents=True, exist_ok=True)
    out = work / "model.onnx"
    request = QuantizeRequest(
        float_path=float_path,
        out_path=out,
        scheme=scheme,
        input_specs=specs,
        work_dir=work,
        make_reader=None if calib is None else (lambda: ArrayReader(calib, batch_size=1)),
        nodes_to_exclude=tuple(nodes_to_exclude),
    )
    return out, quantize_model(request)


def initializer_bytes(path: Path) -> int:
    """Bytes of all initializers (the weights), independent of graph metadata."""
    import onnx
    from onnx import numpy_helper

    return sum(numpy_helper.to_array(init).nbytes for init in onnx.load(str(path)).graph.initializer)
