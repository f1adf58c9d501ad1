"""CPU feature detection: parsing what the OS reports into one vocabulary."""

from __future__ import annotations

import pytest

from targets import hardware
from targets.hardware import CpuFeatures, normalize_arch, parse_cpuinfo, parse_sysctl, read_cpu_features

X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu sse sse2 ssse3 sse4_1 avx avx2 fma avx512f avx512bw avx512_vnni amx_int8 avx512_bf16
bugs\t\t: spectre_v1

processor\t: 1
flags\t\t: fpu sse
"""

ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 48.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp i8mm
CPU implementer\t: 0x41
"""


def test_x86_flags_are_normalised_from_the_first_processor():
    assert parse_cpuinfo(X86_CPUINFO, "x86_64") == {"avx2", "avx512f", "avx512_vnni", "amx_int8"}


def test_arm_features_line():
    assert parse_cpuinfo(ARM_CPUINFO, "arm64") == {"arm_dotprod", "arm_i8mm"}
    assert parse_cpuinfo("Features\t: fp asimd\n", "arm64") == frozenset()


def test_macos_sysctl_lines():
    text = "hw.optional.arm.FEAT_DotProd: 1\nhw.optional.arm.FEAT_I8MM: 0\nhw.optional.avx2_0: 1\n"
    assert parse_sysctl(text) == {"arm_dotprod", "avx2"}


@pytest.mark.parametrize(("machine", "arch"), [("AMD64", "x86_64"), ("x86_64", "x86_64"), ("aarch64", "arm64"), ("arm64", "arm64"), ("riscv64", "riscv64")])
def test_architecture_names(machine, arch):
    assert normalize_arch(machine) == arch


def test_read_from_a_given_cpuinfo(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(ARM_CPUINFO)
    monkeypatch.setattr(hardware.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(hardware.platform, "system", lambda: "Linux")
    assert read_cpu_features(cpuinfo) == CpuFeatures("arm64", frozenset({"arm_dotprod", "arm_i8mm"}))
    assert read_cpu_features(tmp_path / "missing") == CpuFeatures("arm64", frozenset())


def test_this_machine_reads_without_error():
    features = read_cpu_features()
    assert features.flags <= set(hardware.KNOWN_FEATURES)
    assert features.to_dict()["arch"] == features.arch
