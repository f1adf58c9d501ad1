"""Accuracy-aware quantization: per-layer error, module names, float fallback and its report pieces.

- `budget`: the user's accuracy goal and search limits (`--accuracy-budget`);
- `modules`: ONNX node -> PyTorch module path, from the exporter's node metadata;
- `sensitivity`: the error each quantized layer introduces, measured against the float graph;
- `fallback`: keep the most sensitive layers in float and re-quantize until the goal is met;
- `units`: known troublemakers and the nodes that keep a tensor float (the fallback's units);
- `requantize`: one re-quantization per fallback trial, from per-method calibration caches;
- `plot`: an SVG bar chart of error per layer; `inspect`: the `exporter inspect OUT_DIR` body.

Submodules are imported on use (they load onnx and onnxruntime); this package imports nothing heavy.
"""
