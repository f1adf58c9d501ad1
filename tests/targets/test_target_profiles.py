"""Target profiles: every built-in loads, a user's file round-trips, and bad files fail with one clear line."""

from __future__ import annotations

import dataclasses
import json

import pytest

from exporter.errors import PlanError
from targets import builtin_targets, get_target, load_target_file
from targets.profile import Target

NEW_TARGETS = ("cpu-fp16", "cpu-int8-dynamic", "arm64-int8", "mobile-int8", "cpu-int4-weights")


def to_toml(data: dict) -> str:
    """A minimal TOML writer for a target's plain data (top-level scalars, then the two tables)."""

    def value(v):
        return json.dumps(v)  # strings, numbers, booleans and lists of strings are the same in TOML

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict) and v is not None]
    for table in ("quantization", "tolerances"):
        lines.append(f"[{table}]")
        lines += [f"{k} = {value(v)}" for k, v in data[table].items() if v is not None]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("name", NEW_TARGETS)
def test_new_builtin_targets_load(name):
    target = get_target(name)
    assert target.name == name and target.description and target.produces
    assert name in builtin_targets()


def test_what_each_target_needs():
    assert get_target("cpu-fp16").quantization.mode == "fp16" and not get_target("cpu-fp16").needs_calibration
    assert get_target("cpu-int8-dynamic").quantization.mode == "dynamic"
    assert not get_target("cpu-int8-dynamic").needs_calibration
    arm = get_target("arm64-int8")
    assert arm.needs_calibration and arm.arch == "arm64"
    assert (arm.quantization.activation_type, arm.quantization.weight_type) == ("int8", "int8")
    assert arm.quantization.per_channel and arm.quantization.weight_symmetric and not arm.quantization.reduce_range
    mobile = get_target("mobile-int8")
    assert mobile.quantization == arm.quantization
    assert mobile.needs_fixed_shapes and not mobile.dynamic_batch
    assert mobile.package_steps == ("ort_format", "mobile_check")
    int4 = get_target("cpu-int4-weights").quantization
    assert (int4.mode, int4.weight_type, int4.block_size, int4.format) == ("weight_only", "int4", 32, "qoperator")


def test_user_target_file_round_trips(tmp_path):
    path = tmp_path / "my-board.toml"
    path.write_text(
        'name = "my-board"\n'
        'description = "my ARM board: arm64-int8 with entropy calibration"\n'
        'arch = "arm64"\n'
        "needs_calibration = true\n"
        'package_steps = ["ort_format"]\n'
        "[quantization]\n"
        'mode = "static"\n'
        'activation_type = "int8"\n'
        'calibration_method = "entropy"\n'
        "[tolerances]\n"
        "min_cosine = 0.97\n"
    )
    target = get_target(str(path))
    assert target.name == "my-board" and target.source == str(path)
    assert target.quantization.calibration_method == "entropy" and target.quantization.activation_type == "int8"
    assert target.tolerances.min_cosine == 0.97 and target.package_steps == ("ort_format",)
    again = tmp_path / "again.toml"
    again.write_text(to_toml({k: v for k, v in target.to_dict().items() if k != "source"}))
    assert dataclasses.replace(load_target_file(again), source=target.source) == target
    assert Target.from_dict(target.to_dict(), where="plan") == target


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            'colour = "red"\n',
            "{path}: unknown field 'colour'; valid fields are arch, description, dynamic_batch, name, "
            "needs_calibration, needs_fixed_shapes, opset, package_steps, produces, runtime, source",
        ),
        (
            'arch = "mips"\n',
            "{path}: field 'arch' must be one of 'any', 'x86_64', 'arm64', got 'mips'",
        ),
        (
            'package_steps = ["ort_fromat"]\n',
            "{path}: package_steps: unknown package step 'ort_fromat': did you mean 'ort_format'? "
            "valid: mobile_check, ort_format",
        ),
        (
            '[quantization]\nmode = "dynamic"\nactivation_type = "int8"\n',
            "{path}: dynamic quantization needs activation_type 'uint8' and weight_type 'int8' or 'uint8', "
            "got 'int8' and 'int8'",
        ),
        (
            '[quantization]\nmode = "weight_only"\nweight_type = "int16"\n',
            "{path}: weight_only quantization needs weight_type 'int4' or 'int8', got 'int16'",
        ),
        (
            '[quantization]\nmode = "weight_only"\naccuracy_level = "int3"\n',
            "{path}: [quantization]: field 'accuracy_level' must be one of 'fp32', 'fp16', 'bf16', 'int8', got 'int3'",
        ),
        (
            '[quantization]\nmode = "weight_only"\nblock_size = 24\n',
            "{path}: quantization.block_size must be a power of two >= 16, got 24",
        ),
    ],
)
def test_bad_target_file_fails_with_its_message(tmp_path, body, message):
    path = tmp_path / "bad.toml"
    path.write_text('name = "bad"\ndescription = "a bad target"\n' + body)
    with pytest.raises(PlanError) as info:
        get_target(str(path))
    assert str(info.value) == message.format(path=path)
