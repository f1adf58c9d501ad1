"""The CLE paper's failure case: plain int8 misses the fidelity bar; equalization + AdaRound clear it."""

from __future__ import annotations

from tests.ptq.conftest import cosine, quantize, run


def test_plain_int8_fails_and_equalization_plus_rounding_pass(block_onnx, calib_images, val_images, tmp_path):
    reference = run(block_onnx, val_images)
    plain, _ = quantize(block_onnx, tmp_path / "plain", calib_images)
    improved, info = quantize(block_onnx, tmp_path / "ptq", calib_images, equalize=True, adaround=True)

    plain_out, improved_out = run(plain, val_images), run(improved, val_images)
    assert cosine(plain_out, reference) < 0.99  # the bar for logits
    assert cosine(improved_out, reference) >= 0.999
    assert (improved_out.argmax(1) == reference.argmax(1)).mean() >= 0.95
    # the Q/DQ placement is onnxruntime's own: same op counts as the plain file
    assert info.op_counts == quantize(block_onnx, tmp_path / "again", calib_images)[1].op_counts
    algorithms = {record.algorithm for record in info.ptq_log.records}
    assert {"equalization", "adaround"} <= algorithms
