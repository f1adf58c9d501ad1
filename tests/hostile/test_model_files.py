"""Hostile model files: a `.pt2` runs no code from the file unless the user passes --trust-pickle."""

from __future__ import annotations

import json

from tests.hostile.support import CALIB, PT2, SAMPLE, assert_one_line_error
from tests.hostile.planted import hostile_pt2, planted_torch_save, rewrite_zip


def test_pt2_with_pickled_sample_inputs_is_refused_and_runs_nothing(tmp_path, cli):
    marker = tmp_path / "marker"
    model = hostile_pt2(tmp_path / "hostile.pt2", marker)
    run = cli("export", model, "--calib", CALIB, "--out", tmp_path / "out")
    assert_one_line_error(run, 2, "pickled sample inputs", "--trust-pickle")
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_pt2_with_pickled_sample_inputs_loads_with_trust_pickle(tmp_path):
    from exporter.loading import ModelSource, load_model

    marker = tmp_path / "marker"
    model = hostile_pt2(tmp_path / "hostile.pt2", marker)
    loaded = load_model(ModelSource(str(model), trust_pickle=True))
    assert marker.read_text() == "ran"  # the user consented: the pickle ran
    assert loaded.format == "exported_program"
    assert tuple(loaded.program.example_inputs[0][0].shape) == (2, 1, 16, 16)


def test_safe_pt2_keeps_its_exported_program(tmp_path):
    import torch

    from exporter.loading import ModelSource, load_model

    loaded = load_model(ModelSource(PT2))
    assert isinstance(loaded.program, torch.export.ExportedProgram)
    x = torch.randn(3, 1, 16, 16)
    torch.testing.assert_close(loaded.module(x), loaded.program.module()(x))


def _edit_program(tmp_path, edit):
    import zipfile

    with zipfile.ZipFile(PT2) as archive:
        name = next(n for n in archive.namelist() if n.endswith("models/model.json"))
        program = json.loads(archive.read(name))
    edit(program)
    return rewrite_zip(SAMPLE / "digits_cnn.pt2", tmp_path / "edited.pt2", {"models/model.json": json.dumps(program).encode()})


def test_pt2_guard_code_that_is_not_arithmetic_is_refused(tmp_path, cli):
    marker = tmp_path / "marker"
    model = _edit_program(tmp_path, lambda p: p.update(guards_code=[f"__import__('pathlib').Path({str(marker)!r}).touch()"]))
    run = cli("export", model, "--calib", CALIB, "--out", tmp_path / "out")
    assert_one_line_error(run, 2, "shape guard that is not plain arithmetic")
    assert not marker.exists()


def test_pt2_node_calling_a_non_operator_is_refused(tmp_path, cli):
    def edit(program):
        program["graph_module"]["graph"]["nodes"][0]["target"] = "torch.ops.load_library"

    run = cli("export", _edit_program(tmp_path, edit), "--calib", CALIB, "--out", tmp_path / "out")
    assert_one_line_error(run, 2, "calls 'torch.ops.load_library', which is not a registered PyTorch operator")


def test_pt2_symbolic_expression_that_is_code_is_refused(tmp_path, cli):
    marker = tmp_path / "marker"

    def edit(program):
        payload = f"__import__('pathlib').Path({str(marker)!r}).touch()"
        stack = [program]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                if "expr_str" in item:
                    item["expr_str"] = payload
                    return
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)

    run = cli("export", _edit_program(tmp_path, edit), "--calib", CALIB, "--out", tmp_path / "out")
    assert_one_line_error(run, 2, "symbolic shape that is not plain arithmetic")
    assert not marker.exists()


def test_pt2_with_pickled_weight_is_refused(tmp_path, cli):
    import zipfile

    marker = tmp_path / "marker"
    with zipfile.ZipFile(PT2) as archive:
        name = next(n for n in archive.namelist() if n.endswith("model_weights_config.json"))
        config = json.loads(archive.read(name))
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    model = rewrite_zip(SAMPLE / "digits_cnn.pt2", tmp_path / "w.pt2", {
        "model_weights_config.json": json.dumps(config).encode(),
        f"weights/{first['path_name']}": planted_torch_save(marker),
    })
    run = cli("export", model, "--calib", CALIB, "--out", tmp_path / "out")
    assert_one_line_error(run, 2, "as a pickled Python object")
    assert not marker.exists()


def test_pt2_with_aotinductor_payload_is_refused(tmp_path, cli):
    model = rewrite_zip(SAMPLE / "digits_cnn.pt2", tmp_path / "aoti.pt2", add={"data/aotinductor/model/model.so": b"\x7fELF"})
    run = cli("export", model, "--calib", CALIB, "--out", tmp_path / "out")
    assert_one_line_error(run, 2, "'data/aotinductor/model/model.so'", "would unpickle or run as code")


def test_pt2_torch_cannot_read_is_one_line_without_torchs_logged_traceback(tmp_path, cli):
    # torch.export.load logs a full traceback ("Ran into the following error when deserializing") before raising.
    model = _edit_program(tmp_path, lambda p: p.update(schema_version={"major": 99, "minor": 0}))
    run = cli("export", model, "--calib", CALIB, "--out", tmp_path / "out")
    assert_one_line_error(run, 2, f"cannot load {model} as a torch.export program")
