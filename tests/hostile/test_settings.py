"""Every setting from every source goes through one strict conversion: booleans are real booleans."""

from __future__ import annotations

import json

import pytest

from exporter.errors import PlanError
from tests.hostile.support import CALIB, PT2, SAMPLE, assert_one_line_error

PICKLED = str(SAMPLE / "digits_cnn.pickle.pt")


def test_plan_file_string_false_for_trust_pickle_is_refused(tmp_path, cli):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"model": PICKLED, "calib": CALIB, "trust_pickle": "false", "out": str(tmp_path / "out")}))
    run = cli("export", "--plan", plan)
    assert_one_line_error(run, 2, f"bad value 'false' for trust_pickle in plan file {plan}: expected true or false",
                          "a real boolean, not a string")
    assert not (tmp_path / "out").exists()


def test_plan_file_string_no_for_force_leaves_the_users_file(tmp_path, cli):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.onnx").write_text("keep me")
    plan = tmp_path / "plan.toml"
    plan.write_text(f'model = "{PT2}"\ncalib = "{CALIB}"\nout = "{out}"\nforce = "no"\n')
    run = cli("export", "--plan", plan)
    assert_one_line_error(run, 2, f"bad value 'no' for force in plan file {plan}: expected true or false")
    assert (out / "model.onnx").read_text() == "keep me"


def test_library_settings_are_strict_too(tmp_path):
    from exporter import export

    with pytest.raises(PlanError, match="bad value 'false' for fail_if_slower: expected true or false"):
        export(PT2, calib=CALIB, out=str(tmp_path / "o"), fail_if_slower="false", dry_run=True)
    with pytest.raises(PlanError, match=r"bad value True for batch_size: expected a whole number"):
        export(PT2, calib=CALIB, out=str(tmp_path / "o"), batch_size=True, dry_run=True)
    plan = export(PT2, calib=CALIB, out=tmp_path / "o", batch_size=8, trust_pickle=False, dry_run=True)
    assert plan.data.batch_size == 8 and plan.model.trust_pickle is False and plan.out_dir == tmp_path / "o"


def test_pass_settings_booleans_from_plan_file_and_command_line(tmp_path, cli):
    from exporter.plan import build_plan

    base = {"model": PT2, "calib": CALIB}
    with pytest.raises(PlanError, match="bad value 'yes' for distill.resume: expected true or false"):
        build_plan({**base, "passes": [{"name": "distill", "resume": "yes"}]})
    assert build_plan({**base, "passes": [{"name": "distill", "resume": True}]}).passes[0].config.resume is True
    run = cli("export", PT2, "--calib", CALIB, "--distill", "--distill-resume", "yes", "--dry-run")
    assert run.code == 0, run.err
    assert json.loads(run.out)["resolved"]["passes"][0]["resume"] is True
    run = cli("export", PT2, "--calib", CALIB, "--distill", "--distill-resume", "maybe", "--dry-run")
    assert_one_line_error(run, 2, "bad value 'maybe' for distill.resume: expected true or false (also yes/no, on/off, 1/0)")


def test_target_file_booleans_and_budget_numbers_are_strict(tmp_path):
    from exporter.accuracy.budget import AccuracyBudget
    from targets import get_target

    target = tmp_path / "t.toml"
    target.write_text('name = "t"\ndescription = "d"\ndynamic_batch = "false"\n')
    with pytest.raises(PlanError, match="field 'dynamic_batch' must be true or false, got 'false'"):
        get_target(str(target))
    with pytest.raises(PlanError, match="bad value True for accuracy budget max_trials: expected a whole number"):
        AccuracyBudget.from_settings({"max_trials": True})
    assert AccuracyBudget.parse("trials=8").max_trials == 8
