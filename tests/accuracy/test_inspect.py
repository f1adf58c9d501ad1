"""`exporter inspect OUT_DIR` on a finished run: worst layers as text, layers.svg and layers.md written."""

import json
import shutil
import xml.etree.ElementTree as ET

import pytest

from exporter.accuracy.inspect import inspect_run
from exporter.errors import PlanError
from tests.accuracy.hostile import SAMPLE


def test_inspect_lists_the_hostile_layer_first(weight_hostile, tmp_path) -> None:
    shutil.copy(weight_hostile.float_path, tmp_path / "model.float.onnx")
    shutil.copy(weight_hostile.quant_path, tmp_path / "model.onnx")
    settings = {"calib": str(SAMPLE / "calib.npz"), "val": str(SAMPLE / "val.npz"), "batch_size": 32}
    (tmp_path / "plan.json").write_text(json.dumps({"settings": settings}))
    text = inspect_run(tmp_path, top=3)
    lines = text.splitlines()
    assert lines[2].split()[:3] == ["1", "features.3", "Conv"]
    assert "2 more layer(s) in layers.md" in text
    ET.fromstring((tmp_path / "layers.svg").read_text())
    table = (tmp_path / "layers.md").read_text()
    assert "![error per layer](layers.svg)" in table and "| 1 | `features.3` |" in table
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_inspect_needs_a_finished_run(tmp_path) -> None:
    with pytest.raises(PlanError) as info:
        inspect_run(tmp_path)
    assert str(info.value) == (
        f"{tmp_path} is not the output folder of a finished export: model.float.onnx, model.onnx, plan.json missing"
    )
