"""Model loading by sniffing, and the ONNX export with its checks."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from exporter.errors import ExportError, LoadError
from exporter.inputs import InputSpec
from exporter.loading import ModelSource, load_model, sniff_format
from exporter.onnx_export import MODULE_KEY, compare_with_torch, export_onnx


class TwoInputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
        self.head = torch.nn.Linear(8, 3)

    def forward(self, image, extra):
        return self.head(self.body(image) + extra)


def test_sniffing_by_content_not_extension(sample_dir, tmp_path):
    renamed = tmp_path / "model.bin"
    renamed.write_bytes((sample_dir / "digits_cnn.pt2").read_bytes())
    assert sniff_format(renamed) == "exported_program"
    assert sniff_format(sample_dir / "digits_cnn.torchscript.pt") == "torchscript"
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(LoadError, match="is empty$"):
        sniff_format(tmp_path / "empty.pt")


def test_state_dict_inside_checkpoint_dict_and_input_names(tmp_path):
    torch.manual_seed(0)
    model = TwoInputs()
    torch.save({"epoch": 3, "state_dict": model.state_dict()}, tmp_path / "ckpt.pt")
    import sys

    sys.modules[__name__].TwoInputs = TwoInputs
    loaded = load_model(ModelSource(str(tmp_path / "ckpt.pt"), model_class=f"{__name__}:TwoInputs"))
    assert loaded.format == "state_dict" and loaded.input_names == ["image", "extra"]
    x, e = torch.randn(2, 4), torch.randn(2, 8)
    torch.testing.assert_close(loaded.module(x, e), model(x, e))


def test_export_two_inputs_names_dynamic_batch_and_module_metadata(tmp_path):
    torch.manual_seed(0)
    model = TwoInputs().eval()
    specs = [InputSpec("image", (1, 4)), InputSpec("extra", (1, 8))]
    info = export_onnx(model, specs, tmp_path / "m.onnx", opset=18)
    assert info.exporter == "dynamo" and info.fallback_reason is None
    assert info.input_names == ["image", "extra"] and info.output_names == ["output"]
    proto = onnx.load(str(tmp_path / "m.onnx"))
    modules = {p.value for n in proto.graph.node for p in n.metadata_props if p.key == MODULE_KEY}
    assert {"body.0", "head"} <= modules
    assert all(p.key == MODULE_KEY for n in proto.graph.node for p in n.metadata_props)
    feed = {"image": np.random.rand(5, 4).astype(np.float32), "extra": np.random.rand(5, 8).astype(np.float32)}
    check = compare_with_torch(model, tmp_path / "m.onnx", [feed], atol=1e-5, min_cosine=0.99999)
    assert check["max_abs_error"] < 1e-5 and check["samples"] == 5


def test_fallback_to_torchscript_exporter_is_recorded(tmp_path):
    scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 2)).eval())
    info = export_onnx(scripted, [InputSpec("input", (1, 4))], tmp_path / "s.onnx", opset=18)
    assert info.exporter == "torchscript"
    assert "cannot be traced by torch.export" in info.fallback_reason
    forced = export_onnx(TwoInputs().eval(), [InputSpec("image", (1, 4)), InputSpec("extra", (1, 8))],
                         tmp_path / "t.onnx", opset=18, exporter="torchscript")
    assert forced.exporter == "torchscript" and forced.fallback_reason is None


def test_disagreeing_onnx_is_an_export_error(tmp_path):
    model = TwoInputs().eval()
    specs = [InputSpec("image", (1, 4)), InputSpec("extra", (1, 8))]
    export_onnx(model, specs, tmp_path / "m.onnx", opset=18)
    with torch.no_grad():
        model.head.bias += 1.0  # the file no longer matches the module
    feed = {"image": np.ones((2, 4), np.float32), "extra": np.ones((2, 8), np.float32)}
    with pytest.raises(ExportError, match="the float ONNX file disagrees with PyTorch: max abs error 1"):
        compare_with_torch(model, tmp_path / "m.onnx", [feed], atol=1e-4, min_cosine=0.9999)
