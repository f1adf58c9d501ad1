"""The PTQ switches are typed scheme fields: validated, on in cpu-int8, and `auto` picks the profile by CPU."""

from __future__ import annotations

import dataclasses

import pytest

from exporter.errors import PlanError
from targets import get_target
from targets.auto import auto_target
from targets.hardware import CpuFeatures
from targets.profile import QuantScheme


def test_algorithms_need_static_mode():
    with pytest.raises(PlanError, match=r"cpu: quantization.equalize needs mode 'static' \(calibrated\), got 'dynamic'"):
        QuantScheme(mode="dynamic", equalize=True).validate("cpu")


def test_bounds_are_checked():
    with pytest.raises(PlanError, match="adaround_iterations >= 1"):
        QuantScheme(mode="static", adaround=True, adaround_iterations=0).validate("t.toml")


def test_cpu_int8_is_the_vnni_scheme_and_portable_only_adds_reduce_range():
    fast, portable = get_target("cpu-int8").quantization, get_target("cpu-int8-portable").quantization
    assert not fast.reduce_range and portable.reduce_range
    assert dataclasses.replace(portable, reduce_range=False) == fast
    assert (fast.activation_type, fast.weight_type, fast.per_channel, fast.weight_symmetric) == ("uint8", "int8", True, True)
    assert fast.bias_correction and fast.mse_ranges


def test_auto_picks_cpu_int8_with_vnni_and_the_portable_profile_without():
    vnni = auto_target(CpuFeatures("x86_64", frozenset({"avx2", "avx512f", "avx512_vnni", "amx_int8"})))
    avx2 = auto_target(CpuFeatures("x86_64", frozenset({"avx2"})))
    assert vnni.quantization == get_target("cpu-int8").quantization
    assert avx2.quantization == get_target("cpu-int8-portable").quantization
