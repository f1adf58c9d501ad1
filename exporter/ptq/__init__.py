"""Post-training quantization algorithms on the float ONNX graph (one module per algorithm).

They run between onnxruntime's pre-processing and `quantize_static`, on the float model, so they
serve every input format (TorchScript and .pt2 included) and leave the Q/DQ placement to
onnxruntime (Conv/Gemm with Q/DQ on inputs, weights and outputs, which its CPU provider fuses):

| module            | what it changes                                      | QuantScheme field |
|-------------------|------------------------------------------------------|-------------------|
| `equalize`        | Conv/Gemm weights and biases, pairwise scaled        | `equalize`        |
| `bias_absorption` | biases moved across a Relu into an unpadded next layer | `bias_absorption` |
| `adaround`        | weights, moved onto an optimised int8 rounding       | `adaround`        |
| `ranges`          | the activation ranges in the calibration cache       | `mse_ranges`      |
| `bias_correction` | biases, after quantization, from measured shifts     | `bias_correction` |

`steps` runs them in that order for the static quantizer; `records` has the typed per-node records
each one leaves for the report.
"""

from exporter.ptq.records import PtqLog

__all__ = ["PtqLog"]
