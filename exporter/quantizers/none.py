"""Mode `none`: the deployable file is the float ONNX itself."""

from __future__ import annotations

import shutil

from exporter.quantizers.base import QuantizeInfo, QuantizeRequest, register_quantizer


@register_quantizer("none")
def keep_float(request: QuantizeRequest) -> QuantizeInfo:
    """Copy the float model unchanged (targets without quantization, e.g. `cpu-fp32`)."""
    shutil.copyfile(request.float_path, request.out_path)
    return QuantizeInfo(mode="none")
