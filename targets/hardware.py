"""What this CPU can do for int8 inference, read from the operating system.

Rule: the architecture comes from `platform.machine()`; the features come from the OS's own
report (Linux `/proc/cpuinfo`: the `flags` line on x86, the `Features` line on ARM; macOS
`sysctl` best effort). Names are normalised to one vocabulary so `targets.auto` never has to
know where they came from:

| normalised      | x86 `/proc/cpuinfo` flag | ARM `Features` / macOS sysctl              |
|-----------------|--------------------------|--------------------------------------------|
| `avx2`          | `avx2`                   | `hw.optional.avx2_0`                       |
| `avx512f`       | `avx512f`                | `hw.optional.avx512f`                      |
| `avx512_vnni`   | `avx512_vnni`            | `hw.optional.avx512vnni`                   |
| `avx_vnni`      | `avx_vnni`               | -                                          |
| `amx_int8`      | `amx_int8`               | -                                          |
| `arm_dotprod`   | -                        | `asimddp`; `hw.optional.arm.FEAT_DotProd`  |
| `arm_i8mm`      | -                        | `i8mm`; `hw.optional.arm.FEAT_I8MM`        |

Nothing here raises: an unreadable source yields an empty flag set, and the caller says so.
"""

from __future__ import annotations

import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

KNOWN_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "arm_dotprod", "arm_i8mm")

_X86_FLAGS = {name: name for name in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")}
_ARM_FEATURES = {"asimddp": "arm_dotprod", "i8mm": "arm_i8mm"}
_MACOS_SYSCTL = {
    "hw.optional.avx2_0": "avx2",
    "hw.optional.avx512f": "avx512f",
    "hw.optional.avx512vnni": "avx512_vnni",
    "hw.optional.arm.FEAT_DotProd": "arm_dotprod",
    "hw.optional.arm.FEAT_I8MM": "arm_i8mm",
}
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "x86_64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}


@dataclass(frozen=True)
class CpuFeatures:
    """The CPU architecture (`x86_64`, `arm64`, or what `platform.machine()` said) and its normalised feature names."""

    arch: str
    flags: frozenset[str]

    @property
    def is_x86(self) -> bool:
        """True on 64-bit x86 (Intel/AMD)."""
        return self.arch == "x86_64"

    @property
    def is_arm(self) -> bool:
        """True on 64-bit ARM (phones, Apple silicon, Graviton, Raspberry Pi 4/5)."""
        return self.arch == "arm64"

    @property
    def has_vnni(self) -> bool:
        """x86 int8 dot-product instructions (AVX512-VNNI, AVX-VNNI, or AMX which implies them)."""
        return bool(self.flags & {"avx512_vnni", "avx_vnni", "amx_int8"})

    def to_dict(self) -> dict:
        """Plain-data form for the report."""
        return {"arch": self.arch, "flags": sorted(self.flags)}


def normalize_arch(machine: str) -> str:
    """Map `platform.machine()` spellings to `x86_64` / `arm64`; anything else is returned lower-cased."""
    machine = machine.strip().lower()
    return _ARCH_ALIASES.get(machine, machine or "unknown")


def parse_cpuinfo(text: str, arch: str) -> frozenset[str]:
    """Normalised features from Linux `/proc/cpuinfo` text: the first `flags` (x86) or `Features` (ARM) line."""
    key, table = ("features", _ARM_FEATURES) if arch == "arm64" else ("flags", _X86_FLAGS)
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() == key:
            return frozenset(table[word] for word in value.split() if word in table)
    return frozenset()


def parse_sysctl(text: str) -> frozenset[str]:
    """Normalised features from `sysctl hw.optional` output lines such as `hw.optional.arm.FEAT_DotProd: 1`."""
    found = set()
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and value.strip() == "1" and name.strip() in _MACOS_SYSCTL:
            found.add(_MACOS_SYSCTL[name.strip()])
    return frozenset(found)


def read_cpu_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuFeatures:
    """Read this machine's architecture and int8-relevant features from the OS (empty flags if unreadable)."""
    arch = normalize_arch(platform.machine())
    flags: frozenset[str] = frozenset()
    system = platform.system()
    if system == "Linux":
        try:
            flags = parse_cpuinfo(cpuinfo.read_text(encoding="utf-8", errors="replace"), arch)
        except OSError:
            flags = frozenset()
    elif system == "Darwin":
        try:
            done = subprocess.run(["sysctl", "hw.optional"], capture_output=True, text=True, timeout=5, check=False)
            flags = parse_sysctl(done.stdout)
        except (OSError, subprocess.SubprocessError):
            flags = frozenset()
        if arch == "arm64" and not flags:
            # Every Apple-silicon core has the dot-product extension (ARMv8.4+); old macOS lacks the sysctl key.
            flags = frozenset({"arm_dotprod"})
    return CpuFeatures(arch=arch, flags=flags)
