"""Decoding the frames a person crop needs, as cheaply as the crop allows.

A worker's time is mostly JPEG decoding (experiments/benchmarks, section 1), most of that the
entropy decoding, so `decode_for_crop` decodes only the part of a JPEG that the crop of the
image -> crop matrix reads (the C extension `posesuite.data._jpeg_region`: libjpeg-turbo skips
the rows above it, decodes only the iMCU columns that hold it and stops after its last row),
and, when asked, at the coarsest JPEG scale that loses no resolution at the input size
(libjpeg's DCT scaling). It returns the pixels with the 3x3 map from their coordinates to the
original image's, which the transform composes into its warp, so the sample's geometry stays
that of the original image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg

try:
    from posesuite.data._jpeg_region import decode_region
except ImportError:  # not built (`make setup` builds it): frames are decoded whole
    decode_region = None

JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe")
JPEG_START = b"\xff\xd8"
# Colour spaces libjpeg-turbo cannot convert to RGB: OpenCV decodes those.
NOT_RGB_CONVERTIBLE = ("CMYK", "YCCK")
DECODE_REDUCTIONS = (8, 4, 2)  # the JPEG DCT scalings that are exactly 1 / f
# Decoded pixels kept beyond the crop's extreme sample positions: the bilinear warp's second
# tap, and a pixel of slack for the warp's rounding of the sample positions.
REGION_MARGIN = 2
# Fancy (smooth) chroma upsampling treats a region's left and right columns as the image's
# edges, so they can differ from a full decode (by up to 13 levels, 4:2:0 and 4:2:2): one more
# column on each side keeps them out of the warp's taps. Rows are decoded exactly.
UPSAMPLING_EDGE = 1


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
    scaling (pixel i then stands for original pixels f i .. f i + f - 1); other formats, and
    CMYK or YCCK JPEGs, decode in full with OpenCV, so pass it only for JPEG files (`is_jpeg`).
    """
    try:
        data = np.fromfile(path, np.uint8)
    except OSError:
        return None
    return _decode_whole(data, reduction)[0]


def _decode_whole(data: np.ndarray, reduction: int) -> tuple[np.ndarray | None, int]:
    """The decoded image and the reduction it was decoded at (1 where OpenCV decodes)."""
    if data[:2].tobytes() == JPEG_START:
        try:
            if reduction == 1:
                return simplejpeg.decode_jpeg(data, colorspace="RGB"), 1
            # The smallest of libjpeg's scales (M / 8) that keeps this size is exactly 1 / f.
            height, width = simplejpeg.decode_jpeg_header(data)[:2]
            pixels = simplejpeg.decode_jpeg(
                data,
                colorspace="RGB",
                min_height=-(-height // reduction),
                min_width=-(-width // reduction),
            )
            return pixels, reduction
        except ValueError:
            if not _not_rgb_convertible(data):
                return None, 1  # truncated or corrupt
    return cv2.imdecode(data, cv2.IMREAD_COLOR_RGB), 1


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


def crop_region(
    matrix: np.ndarray, output_size: tuple[int, int], reduction: int = 1
) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the pixels [x0, x1) x [y0, y1) of the 1/``reduction`` decode that the
    crop of the 2x3 image -> crop ``matrix`` and ``output_size`` (W, H) reads, with the margins
    above; not clipped to the image."""
    (a, b, c), (d, e, f) = matrix.tolist()
    determinant = a * e - b * d
    # Crop pixel (u, v) samples the image at inverse @ (u - c, v - f), an affine function of
    # (u, v), so its extremes over the crop lie at the corners (0 or W - 1, 0 or H - 1).
    inverse = ((e / determinant, -b / determinant), (-d / determinant, a / determinant))
    last_u, last_v = output_size[0] - 1, output_size[1] - 1
    centre = (reduction - 1) / 2  # original pixel x is reduced pixel (x - centre) / reduction
    bounds = []
    for p, q in inverse:
        start = -(p * c + q * f) - centre
        low = (start + min(0.0, p * last_u) + min(0.0, q * last_v)) / reduction
        high = (start + max(0.0, p * last_u) + max(0.0, q * last_v)) / reduction
        bounds.append((math.floor(low - REGION_MARGIN), math.floor(high + REGION_MARGIN) + 1))
    (x0, x1), (y0, y1) = bounds
    return x0 - UPSAMPLING_EDGE, y0, x1 + UPSAMPLING_EDGE, y1


def decode_for_crop(
    path: str, matrix: np.ndarray, output_size: tuple[int, int], reduce: bool = True
) -> DecodedFrame | None:
    """The part of the frame at ``path`` that the crop of the 2x3 image -> crop ``matrix`` and
    ``output_size`` (W, H) reads, decoded at the coarsest JPEG scale the crop allows when
    ``reduce``, else in full resolution; None when the file cannot be read or decoded.

    JPEGs are decoded in part by `posesuite.data._jpeg_region`: every pixel the crop reads is
    the full decode's (tested); the crop differs from a full decode's by 1 level on about 1e-4
    of its values, where OpenCV's warp rounds the sample positions of the region's shifted map
    differently. A file cut short below the region is still refused (its EOI marker is
    missing); corrupt data below the region goes unread. Other formats, CMYK and YCCK JPEGs,
    and every file where the extension is not built, are decoded whole (`read_image`). A crop
    entirely outside the image gets one black pixel outside it.
    """
    try:
        data = np.fromfile(path, np.uint8)
    except OSError:
        return None
    jpeg = data[:2].tobytes() == JPEG_START
    reduction = decode_reduction(matrix) if reduce and jpeg else 1
    if jpeg and decode_region is not None:
        try:
            buffer, width, height, x, y = decode_region(
                data, *crop_region(matrix, output_size, reduction), reduction
            )
        except ValueError:
            if not _not_rgb_convertible(data):
                return None  # truncated or corrupt
        else:
            if width == 0:
                pixels = np.zeros((1, 1, 3), np.uint8)
                x, y = -2, -2  # the black pixel lies outside the image
            else:
                pixels = np.frombuffer(buffer, np.uint8).reshape(height, width, 3)
            shift = np.array([[1.0, 0.0, x], [0.0, 1.0, y], [0.0, 0.0, 1.0]])
            return DecodedFrame(pixels, reduced_to_original(reduction) @ shift)
    pixels, reduction = _decode_whole(data, reduction)
    if pixels is None:
        return None
    return DecodedFrame(pixels, reduced_to_original(reduction))
