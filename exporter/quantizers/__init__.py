"""Quantizers: one module per quantization mode (`QuantScheme.mode`), registered in `QUANTIZERS`.

A target's `[quantization] mode` picks the quantizer; adding a mode means adding one module here
with a `@register_quantizer("<mode>")` function. Modules are discovered on import.
"""

import importlib
import pkgutil

from exporter.quantizers.base import QUANTIZERS, QuantizeInfo, QuantizeRequest, quantize_model, register_quantizer

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_") and _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["QUANTIZERS", "QuantizeInfo", "QuantizeRequest", "quantize_model", "register_quantizer"]
