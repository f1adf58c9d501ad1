"""Mixed precision for static int8: which layers run in int8 and which in float, decided by measurement.

Read in this order (imports run downhill, from the plain-data modules to the driver):

- `units`: the units of decision (each quantized node of the QDQ model, with its PyTorch module);
- `modules`: ONNX node -> PyTorch module path; `pin`: keep float layers float at run time;
- `mixed`: the plain int8 model with a set of units turned back to float (graph surgery);
- `latency`: each unit's kernel time in int8 and in float, from onnxruntime's profiler;
- `ranking`: each unit's own output error in dB (only that unit in int8);
- `decision`: the rules, on plain data: int8 slower -> float, error per ms, the final pick;
- `trials`: one candidate file per trial, judged by the run's evaluator; `cache`: timings and errors
  kept in the output folder;
- `search`: the driver (`run_search`), bounded by time and trials, never slower than float;
- `budget`: the user's `--accuracy-budget` goal; `sensitivity`, `plot`, `inspect`: the
  `exporter inspect OUT_DIR` analysis (isolated per-layer error) and its SVG.

Submodules are imported on use (they load onnx and onnxruntime); this package imports nothing heavy.
"""
