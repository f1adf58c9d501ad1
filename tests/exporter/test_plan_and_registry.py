"""Plan building, target profiles, the shared registry, and staged outputs."""

from __future__ import annotations

import pytest

from exporter.errors import OutputExistsError, PlanError
from exporter.outputs import StagedOutputs
from exporter.plan import build_plan
from exporter.registry import Registry
from targets import get_target, load_target_file


def test_registry_rejects_duplicates_and_suggests_close_names():
    reg: Registry[int] = Registry("widget")
    reg.add("alpha", 1)
    reg.add("beta", 2)
    with pytest.raises(ValueError, match="widget 'alpha' is already registered"):
        reg.add("alpha", 3)
    with pytest.raises(PlanError, match=r"^unknown widget 'alpah': did you mean 'alpha'\? valid: alpha, beta$"):
        reg.get("alpah")


def test_plan_defaults_and_overrides():
    plan = build_plan({"model": "m/net.pt", "calib": "d.npz", "calib_method": "percentile", "opset": 17})
    assert plan.target.name == "cpu-int8"
    assert plan.target.quantization.calibration_method == "percentile"
    assert plan.target.opset == 17
    assert str(plan.out_dir) == "m/net-cpu-int8"
    assert plan.settings_dict()["calib_method"] == "percentile"


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"model": "m.pt", "calib": "d", "colour": 1}, "unknown setting 'colour': valid settings are"),
        ({"model": "m.pt", "calib": "d", "calib_method": "kl"}, "bad --calib-method 'kl': expected one of minmax, entropy, percentile"),
        ({"model": "m.pt", "calib": "d", "batch_size": 0}, "bad --batch-size 0: expected a positive integer"),
        ({"model": "m.pt", "calib": "d", "val_fraction": 1.5}, "bad --val-fraction 1.5: expected a number between 0 and 1"),
        ({"model": "m.pt", "calib": "d", "mean": "a,b"}, "bad --mean 'a,b': expected comma-separated numbers"),
        ({"model": "m.pt", "calib": "d", "exporter": "jit"}, "bad --exporter 'jit': expected one of auto, dynamo, torchscript"),
        ({"model": "m.pt", "calib": "d", "passes": [{"name": "prune", "ratoi": 0.5}]}, "unknown setting 'ratoi' for pass 'prune'"),
        ({"model": "m.pt", "calib": "d", "passes": [{"name": "prunr"}]}, "unknown compression pass 'prunr': did you mean 'prune'"),
        ({"calib": "d"}, "no model given"),
    ],
)
def test_plan_errors(settings, message):
    with pytest.raises(PlanError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        build_plan(settings)


def test_user_target_file_round_trips_and_bad_ones_fail(tmp_path):
    good = tmp_path / "edge.toml"
    good.write_text('name = "edge"\ndescription = "mine"\nneeds_calibration = true\n'
                    '[quantization]\nmode = "static"\nper_channel = false\n[tolerances]\nmin_cosine = 0.9\n')
    target = get_target(str(good))
    assert target.name == "edge" and target.quantization.per_channel is False and target.tolerances.min_cosine == 0.9
    assert load_target_file(good).to_dict() == target.to_dict()
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\ndescription = "x"\n[quantization]\nmode = "static"\nper_chanel = true\n')
    with pytest.raises(PlanError, match=r"bad.toml: \[quantization\]: unknown field 'per_chanel'; valid fields are"):
        get_target(str(bad))
    bad.write_text('name = "bad"\ndescription = "x"\n[quantization]\nactivation_type = "int7"\n')
    with pytest.raises(PlanError, match="field 'activation_type' must be one of 'int8', 'uint8'"):
        get_target(str(bad))


def test_staged_outputs_commit_and_discard(tmp_path):
    out = tmp_path / "out"
    staged = StagedOutputs(out, force=False)
    staged.check_writable()
    staged.path("a.txt").write_text("a")
    assert not out.exists()
    assert [p.name for p in staged.commit()] == ["a.txt"]
    assert (out / "a.txt").read_text() == "a" and [p.name for p in tmp_path.iterdir()] == ["out"]
    with pytest.raises(OutputExistsError):
        StagedOutputs(out, force=False).check_writable()
    again = StagedOutputs(out, force=True)
    again.path("b.txt").write_text("b")
    again.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and not (out / "b.txt").exists()
