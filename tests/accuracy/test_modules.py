"""ONNX node -> PyTorch module path, on a nested model, fused Conv+BN, TorchScript names and QDQ files."""

import onnx
import pytest
import torch
from torch import nn

from exporter.accuracy.modules import canonical_module_path, module_from_node_name, node_module_map, tensor_module_map


class Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Nested(nn.Module):
    """Three levels deep, a repeated child name (`body.body`), a BatchNorm the exporter folds."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.body = nn.ModuleDict({"body": nn.Sequential(Block(4), Block(4))})
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body["body"](self.stem(x)))


@pytest.fixture(scope="module")
def nested_onnx(tmp_path_factory):
    from exporter.inputs import InputSpec
    from exporter.onnx_export import export_onnx

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("nested") / "nested.onnx"
    export_onnx(Nested().eval(), [InputSpec("input", (1, 1, 8, 8))], path, opset=18)
    return onnx.load(str(path))


def test_every_layer_maps_to_its_module(nested_onnx) -> None:
    modules = node_module_map(nested_onnx)
    by_op: dict[str, list[str]] = {}
    for node in nested_onnx.graph.node:
        by_op.setdefault(node.op_type, []).append(modules[node.name])
    assert by_op["Conv"] == ["stem.0", "body.body.0.conv", "body.body.1.conv"]
    assert by_op["Gemm"] == ["head.1"]
    assert set(by_op["Relu"]) == {"stem.1", "body.body.0.act", "body.body.1.act"}
    names = {name for name, _ in Nested().named_modules()}
    assert all(value in names for value in modules.values() if value)


def test_quantize_dequantize_nodes_take_the_module_they_serve(nested_onnx, tmp_path) -> None:
    import numpy as np

    from calibration import ListSampleSet, OrtCalibrationReader, Sample
    from exporter.inputs import InputSpec
    from exporter.quantizers import QuantizeRequest, quantize_model
    from targets.profile import QuantScheme

    float_path, quant_path = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(nested_onnx, str(float_path))
    rng = np.random.default_rng(0)
    samples = ListSampleSet([Sample({"input": rng.random((1, 8, 8)).astype(np.float32)}) for _ in range(8)])
    specs = [InputSpec("input", (1, 1, 8, 8))]
    quantize_model(QuantizeRequest(float_path, quant_path, QuantScheme(mode="static"), specs, tmp_path,
                                   lambda: OrtCalibrationReader(samples, specs, 4)))
    quant = onnx.load(str(quant_path))
    modules = node_module_map(quant)
    for node in quant.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            assert modules[node.name] in ("stem.0", "body.body.0.conv", "body.body.1.conv", "head.1")
    weight_dq = [n for n in quant.graph.node if n.op_type == "DequantizeLinear" and n.input[0].startswith("head.1.weight")]
    assert modules[weight_dq[0].name] == "head.1"
    tensors = tensor_module_map(quant)
    assert tensors["output"] == "head.1"


@pytest.mark.parametrize(
    ("joined", "known", "expected"),
    [
        ("stem.stem.0", ("stem", "stem.0"), "stem.0"),
        ("body.body.0.body.0.conv", ("body", "body.0", "body.0.conv"), "body.0.conv"),
        ("body.body.0.body.0.act", ("body", "body.0", "body.0.conv"), "body.0.act"),
        ("features.features.3.features.3.conv.features.3.conv.0", ("features.3.conv.0",), "features.3.conv.0"),
        ("body.body.0.act", ("body", "body.body", "body.body.0"), "body.body.0.act"),
        ("stem.stem.0", (), "stem.stem.0"),
        ("head", (), "head"),
        ("body.0.conv", (), "body.0.conv"),
        ("", (), ""),
    ],
)
def test_joined_cumulative_scopes_are_undone(joined: str, known: tuple, expected: str) -> None:
    assert canonical_module_path(joined, known) == expected


def test_torchscript_names() -> None:
    assert module_from_node_name("/features/features.3/Conv") == "features.3"
    assert module_from_node_name("/Flatten") == ""
    assert module_from_node_name("node_conv2d") == ""
