"""Compression passes: every module in this folder registers one pass in `PASSES`.

To add a pass, write `exporter/passes/<name>.py` with a `@register_pass` class; it is discovered
when this package is imported (modules starting with `_` and `base` are skipped).
"""

import importlib
import pkgutil

from exporter.passes.base import (
    PASSES,
    CompressionPass,
    PassConfig,
    PassContext,
    PassRecord,
    PassResult,
    register_pass,
    setting,
)

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_") and _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "PASSES",
    "CompressionPass",
    "PassConfig",
    "PassContext",
    "PassRecord",
    "PassResult",
    "register_pass",
    "setting",
]
