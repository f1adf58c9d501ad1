"""Empirical bias correction removes the mean output shift that int8 leaves."""

from __future__ import annotations

import numpy as np

from tests.ptq.conftest import quantize, run


def test_bias_correction_lowers_the_mean_error(block_onnx, calib_images, val_images, tmp_path):
    reference = run(block_onnx, val_images)
    plain, _ = quantize(block_onnx, tmp_path / "plain", calib_images)
    corrected, info = quantize(block_onnx, tmp_path / "bc", calib_images, bias_correction=True)

    shift_plain = np.abs((run(plain, val_images) - reference).mean(axis=0)).mean()
    shift_corrected = np.abs((run(corrected, val_images) - reference).mean(axis=0)).mean()
    assert shift_corrected < 0.5 * shift_plain  # measured on held-out images, not the calibration set
    records = info.ptq_log.of("bias_correction")
    assert len(records) == 6 and all(r.max_abs_shift > 0 for r in records)
