"""`ImagePreprocess` numbers and shapes, presets, validation messages; `DataOptions`."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from calibration import DataOptions, ImagePreprocess
from calibration.preprocess import IMAGENET_MEAN, IMAGENET_STD
from exporter.errors import PlanError


def test_imagenet_preset_on_a_solid_colour_png(tmp_path, image_writer):
    path = image_writer(tmp_path / "c.png", (255, 128, 0), size=(400, 300))
    out = ImagePreprocess.preset("imagenet").apply(Image.open(path))
    assert out.shape == (3, 224, 224) and out.dtype == np.float32
    expected = (np.array([255, 128, 0]) / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(out[:, 0, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(out, np.broadcast_to(expected[:, None, None], out.shape).astype(np.float32), rtol=1e-5)
    assert out[0, 0, 0] == pytest.approx(2.2489083, rel=1e-5)


def test_resize_keeps_aspect_on_the_shorter_side():
    image = Image.new("RGB", (40, 20))
    assert ImagePreprocess(resize=10).apply(image).shape == (3, 10, 20)
    assert ImagePreprocess(resize=10).apply(image.rotate(90, expand=True)).shape == (3, 20, 10)
    assert ImagePreprocess(resize=16, crop=8).apply(image).shape == (3, 8, 8)


def test_center_crop_takes_the_middle_pixels():
    pixels = (np.arange(4)[:, None] * 10 + np.arange(6)[None, :]).astype(np.uint8)  # H=4, W=6
    gray = ImagePreprocess(crop=2, mean=(0.0,), std=(1.0,), scale=1.0, channels="gray")
    out = gray.apply(Image.fromarray(pixels, mode="L"))
    np.testing.assert_array_equal(out, pixels[None, 1:3, 2:4].astype(np.float32))


def test_gray_unit_and_bgr():
    gray = ImagePreprocess.preset("gray-unit").apply(Image.new("L", (3, 2), 51))
    assert gray.shape == (1, 2, 3)
    np.testing.assert_allclose(gray, 0.2, rtol=1e-6)
    bgr = ImagePreprocess(channels="bgr").apply(Image.new("RGB", (2, 2), (255, 0, 51)))
    np.testing.assert_allclose(bgr[:, 1, 1], [0.2, 0.0, 1.0], rtol=1e-6)
    rgba = ImagePreprocess().apply(Image.new("RGBA", (2, 2), (0, 255, 0, 7)))
    np.testing.assert_allclose(rgba[:, 0, 0], [0.0, 1.0, 0.0])


def test_presets_and_round_trip():
    assert ImagePreprocess.preset("unit") == ImagePreprocess()
    assert ImagePreprocess.preset("symmetric").mean == (0.5, 0.5, 0.5)
    imagenet = ImagePreprocess.preset("imagenet")
    assert (imagenet.resize, imagenet.crop, imagenet.channels) == (256, 224, "rgb")
    assert ImagePreprocess.from_dict(imagenet.to_dict()) == imagenet
    assert imagenet.to_dict()["mean"] == list(IMAGENET_MEAN)
    options = DataOptions(image=imagenet, max_samples=10)
    assert options.to_dict() == {"image": imagenet.to_dict(), "max_samples": 10, "seed": 0}
    assert DataOptions.from_dict(options.to_dict()) == options
    assert DataOptions.from_dict({"image": "gray-unit"}).image.channels == "gray"
    assert DataOptions().image == ImagePreprocess.preset("unit")


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(
        PlanError,
        match=re.escape(
            "unknown image preset 'imagenett': did you mean 'imagenet'? valid: gray-unit, imagenet, symmetric, unit"
        ),
    ):
        ImagePreprocess.preset("imagenett")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"resize": 100, "crop": 224}, "image crop 224 is larger than resize 100: the crop is cut from the resized"),
        ({"std": (0.5, 0.0, 0.5)}, "image std [0.5, 0.0, 0.5] contains 0: every std must be non-zero"),
        ({"mean": (0.5,)}, "image mean [0.5] has 1 values but channels 'rgb' has 3: give one mean per channel"),
        ({"channels": "gray"}, "image mean [0.0, 0.0, 0.0] has 3 values but channels 'gray' has 1"),
        ({"channels": "rgba"}, "bad image channels 'rgba': expected one of rgb, bgr, gray"),
        ({"resize": 0}, "bad image resize 0: expected a positive number of pixels or none"),
        ({"crop": 2.5}, "bad image crop 2.5: expected a positive number of pixels or none"),
        ({"scale": 0.0}, "bad image scale 0.0: expected a positive factor"),
    ],
)
def test_bad_preprocess_settings(settings, message):
    with pytest.raises(PlanError, match=re.escape(message)):
        ImagePreprocess(**settings)


def test_bad_data_options():
    with pytest.raises(PlanError, match=re.escape("bad max_samples 0: expected a positive number of samples or none")):
        DataOptions(max_samples=0)
    with pytest.raises(PlanError, match=re.escape("unknown image preprocessing setting(s) ['size']: valid: ")):
        ImagePreprocess.from_dict({"size": 3})
