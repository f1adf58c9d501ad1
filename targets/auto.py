"""`--target auto`: the int8 settings that are actually fast on this CPU, and why.

Rule (from the CPU features the OS reports, see `targets.hardware`):

| CPU                                         | base profile | scheme                          | why |
|---------------------------------------------|--------------|---------------------------------|-----|
| x86-64 with AVX512-VNNI, AVX-VNNI or AMX    | `cpu-int8`   | U8S8, per-channel, no reduce_range | VNNI's vpdpbusd sums u8 x s8 products straight into int32: nothing saturates, full 8-bit weights keep the accuracy |
| x86-64 with AVX2 (or AVX-512) but no VNNI   | `cpu-int8-portable` | U8S8, per-channel, reduce_range | onnxruntime's U8S8 kernel uses vpmaddubsw, which adds pairs of u8 x s8 products into int16 and saturates (255*127*2 > 32767); 7-bit weights make the pair sum fit. U8S8 + reduce_range keeps the fastest int8 kernel; U8U8 avoids saturation too but runs onnxruntime's slower widening (vpmaddwd) path |
| x86-64 without AVX2, or flags unreadable    | `cpu-int8-portable` | U8S8, per-channel, reduce_range | same saturation risk (SSE4.1 pmaddubsw); the safe choice |
| arm64 (any)                                 | `arm64-int8` | S8S8, symmetric per-channel weights | sdot/smmla take signed bytes on both sides and accumulate in int32; the description says whether dot product / i8mm are present |
| anything else                               | `cpu-int8-portable` | U8S8, per-channel, reduce_range | portable default |

`cpu-int8` itself is the VNNI scheme (the CPU this project is measured on has AVX512-VNNI and AMX;
see the numbers in targets/cpu-int8.toml); `cpu-int8-portable` is the same with reduce_range.
The returned target is named `auto`; its description states what was picked and why, so the plan
and the report show it.
"""

from __future__ import annotations

import dataclasses

from targets.hardware import CpuFeatures, read_cpu_features
from targets.profile import Target


def _choice(features: CpuFeatures) -> tuple[str, bool, str]:
    """(base profile name, reduce_range, one-line explanation) for `features`."""
    flags = features.flags
    if features.is_arm:
        extras = [name for flag, name in (("arm_dotprod", "dot product"), ("arm_i8mm", "i8mm")) if flag in flags]
        if extras:
            cpu = f"arm64 with {' and '.join(extras)}"
            why = "sdot/smmla multiply signed bytes into int32"
        else:
            cpu = "arm64 without the dot-product extension"
            why = "signed int8 NEON kernels; expect a smaller int8 speed-up than on dot-product cores"
        return "arm64-int8", False, f"{cpu}: S8S8 QDQ, symmetric per-channel weights, no reduce_range ({why})"
    if features.is_x86:
        if features.has_vnni:
            names = [n for f, n in (("amx_int8", "AMX-INT8"), ("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI")) if f in flags]
            return (
                "cpu-int8",
                False,
                f"x86-64 with {' and '.join(names)}: U8S8 per-channel, no reduce_range "
                "(VNNI accumulates u8 x s8 in int32, so full 8-bit weights cannot saturate)",
            )
        if "avx2" in flags or "avx512f" in flags:
            simd = "AVX-512" if "avx512f" in flags else "AVX2"
            return (
                "cpu-int8-portable",
                True,
                f"x86-64 with {simd} but no VNNI: U8S8 per-channel with reduce_range "
                "(vpmaddubsw sums u8 x s8 pairs in int16 and saturates on full 8-bit weights; "
                "7-bit weights keep the fast U8S8 kernel exact)",
            )
        if not flags:
            return (
                "cpu-int8-portable",
                True,
                "x86-64, CPU flags unreadable: U8S8 per-channel with reduce_range (safe on every x86 CPU)",
            )
        return (
            "cpu-int8-portable",
            True,
            "x86-64 without AVX2: U8S8 per-channel with reduce_range (pmaddubsw saturates like AVX2's)",
        )
    return (
        "cpu-int8-portable",
        True,
        f"unrecognised CPU architecture {features.arch!r}: U8S8 per-channel with reduce_range (the portable choice)",
    )


def explain_auto_choice(features: CpuFeatures) -> str:
    """One line saying what `auto` picks on `features` and why, e.g. `x86-64 with AVX512-VNNI: U8S8 ...`."""
    return _choice(features)[2]


def auto_target(features: CpuFeatures | None = None) -> Target:
    """The `auto` target for `features` (read from this machine when None), built on cpu-int8,
    cpu-int8-portable or arm64-int8 (the profile's PTQ algorithms and tolerances come with it)."""
    from targets import get_target

    features = read_cpu_features() if features is None else features
    base_name, reduce_range, why = _choice(features)
    base = get_target(base_name)
    arch = features.arch if features.arch in ("x86_64", "arm64") else "any"
    return dataclasses.replace(
        base,
        name="auto",
        description=why,
        quantization=dataclasses.replace(base.quantization, reduce_range=reduce_range),
        arch=arch,
        source=f"auto (based on {base_name}; CPU: {features.arch}, flags: {', '.join(sorted(features.flags)) or 'none'})",
    )
