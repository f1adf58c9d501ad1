"""Pruned models of every family export to ONNX and run on onnxruntime with the same outputs."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from exporter.passes import PASSES
from tests.passes.tiny_models import build, make_context


def test_pruned_model_exports_and_runs_on_onnxruntime(family: str, tmp_path: Path) -> None:
    model, inputs = build(family)
    for name, settings in (("fold_bn", {}), ("prune", {"ratio": 0.5})):
        cls = PASSES.get(name)
        model, _ = cls(cls.Config.from_dict(settings, name)).run(model, make_context(model, inputs))
    path = tmp_path / f"{family}.onnx"
    torch.onnx.export(
        model, inputs, str(path), dynamo=True, external_data=False,
        input_names=["input"], output_names=["output"], opset_version=18,
    )  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": inputs[0].numpy()})
    with torch.no_grad():
        expected = model(*inputs).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
