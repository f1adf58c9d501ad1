"""`--target auto`: the scheme matches the CPU flags it is given, and says why."""

from __future__ import annotations

import pytest

from targets import get_target, hardware
from targets.auto import auto_target, explain_auto_choice
from targets.hardware import CpuFeatures


@pytest.mark.parametrize(
    ("arch", "flags", "activation", "reduce_range", "description"),
    [
        (
            "x86_64",
            {"avx2", "avx512f", "avx512_vnni"},
            "uint8",
            False,
            "x86-64 with AVX512-VNNI: U8S8 per-channel, no reduce_range "
            "(VNNI accumulates u8 x s8 in int32, so full 8-bit weights cannot saturate)",
        ),
        ("x86_64", {"avx2", "avx_vnni"}, "uint8", False, "x86-64 with AVX-VNNI: U8S8 per-channel, no reduce_range"),
        ("x86_64", {"avx2"}, "uint8", True, "x86-64 with AVX2 but no VNNI: U8S8 per-channel with reduce_range"),
        ("x86_64", {"avx2", "avx512f"}, "uint8", True, "x86-64 with AVX-512 but no VNNI: U8S8 per-channel with reduce_range"),
        ("x86_64", set(), "uint8", True, "x86-64, CPU flags unreadable: U8S8 per-channel with reduce_range"),
        (
            "arm64",
            {"arm_dotprod", "arm_i8mm"},
            "int8",
            False,
            "arm64 with dot product and i8mm: S8S8 QDQ, symmetric per-channel weights, no reduce_range",
        ),
        ("arm64", set(), "int8", False, "arm64 without the dot-product extension: S8S8 QDQ"),
        ("riscv64", set(), "uint8", True, "unrecognised CPU architecture 'riscv64': U8S8 per-channel with reduce_range"),
    ],
)
def test_scheme_follows_the_flags(arch, flags, activation, reduce_range, description):
    features = CpuFeatures(arch, frozenset(flags))
    target = auto_target(features)
    scheme = target.quantization
    assert target.name == "auto"
    assert target.description.startswith(description)
    assert target.description == explain_auto_choice(features)
    assert (scheme.mode, scheme.activation_type, scheme.weight_type) == ("static", activation, "int8")
    assert scheme.reduce_range is reduce_range
    assert scheme.per_channel and scheme.weight_symmetric
    assert target.needs_calibration
    assert target.arch == (arch if arch in ("x86_64", "arm64") else "any")


def test_arm_is_the_arm64_profile_and_x86_is_cpu_int8():
    arm = auto_target(CpuFeatures("arm64", frozenset({"arm_dotprod"})))
    assert arm.quantization == get_target("arm64-int8").quantization
    assert arm.tolerances == get_target("arm64-int8").tolerances
    x86 = auto_target(CpuFeatures("x86_64", frozenset({"avx2"})))
    assert x86.quantization == get_target("cpu-int8-portable").quantization  # no VNNI: the reduce_range profile


def test_get_target_auto_reads_this_machine(monkeypatch):
    injected = CpuFeatures("x86_64", frozenset({"avx2", "avx512_vnni"}))
    monkeypatch.setattr("targets.auto.read_cpu_features", lambda: injected)
    target = get_target("auto")
    assert target.description == explain_auto_choice(injected)
    assert target.quantization.reduce_range is False
    assert "avx512_vnni" in target.source


def test_auto_from_the_real_machine():
    target = auto_target()
    assert target.description == explain_auto_choice(hardware.read_cpu_features())
