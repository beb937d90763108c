"""Decoding the frames a person crop needs, as cheaply as the crop allows.

A worker's time is mostly JPEG decoding (experiments/benchmarks, section 1), so the frame is
decoded for its crop: `decode_for_crop` takes the crop's image -> crop matrix and decodes at the
coarsest JPEG scale that loses no resolution at the input size (libjpeg's DCT scaling). It
returns the frame with the 3x3 map from its pixels to the original image's, which the transform
composes into its warp, so the sample's geometry stays that of the original image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg

JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe")
JPEG_START = b"\xff\xd8"
# Colour spaces libjpeg-turbo cannot convert to RGB: OpenCV decodes those.
NOT_RGB_CONVERTIBLE = ("CMYK", "YCCK")
DECODE_REDUCTIONS = (8, 4, 2)  # the JPEG DCT scalings that are exactly 1 / f


@dataclass(frozen=True)
class DecodedFrame:
    """RGB uint8 pixels and ``to_original``, the 3x3 map from their pixel coordinates to the
    original image's (the identity for a full decode)."""

    pixels: np.ndarray
    to_original: np.ndarray


def read_image(path: str, reduction: int = 1) -> np.ndarray | None:
    """RGB uint8 image, or None when the file cannot be read or decoded.

    JPEGs are decoded by libjpeg-turbo through simplejpeg: the same pixels as OpenCV's decoder
    (tested), about as fast (1.3-1.5 ms for a 640x425 COCO image either way, one thread), and
    strict: a truncated or corrupt file is an error, where OpenCV fills the missing part with
    grey. ``reduction`` 2, 4 or 8 decodes at that fraction of the size with libjpeg's DCT
    scaling (pixel i then stands for original pixels f i .. f i + f - 1); other formats decode
    in full with OpenCV, so pass it only for JPEG files (`is_jpeg`).
    """
    try:
        data = np.fromfile(path, np.uint8)
    except OSError:
        return None
    if data[:2].tobytes() == JPEG_START:
        try:
            if reduction == 1:
                return simplejpeg.decode_jpeg(data, colorspace="RGB")
            # The smallest of libjpeg's scales (M / 8) that keeps this size is exactly 1 / f.
            height, width = simplejpeg.decode_jpeg_header(data)[:2]
            return simplejpeg.decode_jpeg(
                data,
                colorspace="RGB",
                min_height=-(-height // reduction),
                min_width=-(-width // reduction),
            )
        except ValueError:
            if not _not_rgb_convertible(data):
                return None  # truncated or corrupt
    return cv2.imdecode(data, cv2.IMREAD_COLOR_RGB)


def _not_rgb_convertible(data: np.ndarray) -> bool:
    try:
        return simplejpeg.decode_jpeg_header(data)[2] in NOT_RGB_CONVERTIBLE
    except ValueError:
        return False


def is_jpeg(path: str) -> bool:
    return path.lower().endswith(JPEG_SUFFIXES)


def decode_reduction(matrix: np.ndarray) -> int:
    """Largest JPEG reduction f in {1, 2, 4, 8} that loses no resolution in the crop of the
    2x3 image -> crop ``matrix``: the crop samples the image at most once per f pixels along any
    direction (the largest singular value of the linear part, times f, is at most 1)."""
    largest_scale = np.linalg.norm(matrix[:, :2], ord=2)
    return next((f for f in DECODE_REDUCTIONS if largest_scale * f <= 1.0), 1)


def reduced_to_original(reduction: int) -> np.ndarray:
    """3x3 map from a frame decoded at 1/``reduction`` scale to the original image: reduced
    pixel i covers original pixels f i .. f i + f - 1, so its centre is at f i + (f - 1) / 2."""
    offset = (reduction - 1) / 2
    return np.array([[reduction, 0.0, offset], [0.0, reduction, offset], [0.0, 0.0, 1.0]])


def decode_for_crop(path: str, matrix: np.ndarray, reduce: bool = True) -> DecodedFrame | None:
    """The frame at ``path`` decoded for the crop of the 2x3 image -> crop ``matrix``: at the
    coarsest JPEG scale the crop allows when ``reduce`` (JPEG files only), else in full. None
    when the file cannot be read or decoded."""
    reduction = decode_reduction(matrix) if reduce and is_jpeg(path) else 1
    pixels = read_image(path, reduction)
    if pixels is None:
        return None
    return DecodedFrame(pixels, reduced_to_original(reduction))
