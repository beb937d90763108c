"""The worker's image decoding: libjpeg-turbo through simplejpeg gives OpenCV's pixels, faster,
and refuses truncated files that OpenCV would fill with grey."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from posesuite.data.decoding import read_image
from posesuite.paths import REPO_ROOT


@pytest.fixture(scope="module")
def some_jpegs(synthetic_coco) -> list:
    """Synthetic JPEGs, and the real COCO ones where the real samples are present."""
    real = REPO_ROOT.parent / "shared" / "data" / "real" / "coco"
    return sorted(synthetic_coco.images.glob("*.jpg"))[:3] + sorted(real.glob("*.jpg"))


def test_jpegs_decode_to_opencvs_pixels_in_rgb(some_jpegs):
    assert some_jpegs
    for path in some_jpegs:
        expected = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(read_image(str(path)), expected)


@pytest.mark.parametrize("reduction", [2, 4, 8])
def test_reduced_decoding_has_libjpegs_scaled_size(some_jpegs, reduction):
    for path in some_jpegs:
        full = read_image(str(path))
        reduced = read_image(str(path), reduction)
        assert reduced.shape == (
            -(-full.shape[0] // reduction),
            -(-full.shape[1] // reduction),
            3,
        )


def test_truncated_jpeg_is_refused_where_opencv_fills_it_with_grey(some_jpegs, tmp_path):
    data = some_jpegs[0].read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    assert cv2.imread(str(truncated)) is not None  # OpenCV's decoder accepts it
    assert read_image(str(truncated)) is None


def test_other_formats_and_missing_files(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    png = tmp_path / "image.png"
    cv2.imwrite(str(png), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(read_image(str(png)), image)
    assert read_image(str(tmp_path / "missing.jpg")) is None
