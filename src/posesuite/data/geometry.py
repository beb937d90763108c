"""Top-down crop geometry.

Convention used everywhere in posesuite: a pixel's centre has integer coordinates, so an image of
width W spans [-0.5, W - 0.5]. A crop maps the box's edges onto the crop's edges, which keeps
every step (image -> crop -> heatmap, and horizontal flip) an exact affine map with an exact
inverse; no half-pixel correction is needed when flipping heatmaps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
import torch


def box_to_center_scale(
    box_xywh: Sequence[float], aspect_ratio: float, padding: float = 1.25
) -> tuple[np.ndarray, np.ndarray]:
    """Centre (x, y) and size (w, h) in pixels of a box grown to ``aspect_ratio`` (w / h), padded.

    The box is enlarged along one axis to match the aspect ratio of the network input, then both
    sides are multiplied by ``padding`` (1.25 in the top-down literature).
    """
    x, y, w, h = (float(v) for v in box_xywh)
    center = np.array([x + w * 0.5 - 0.5, y + h * 0.5 - 0.5], dtype=np.float64)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    else:
        w = h * aspect_ratio
    return center, np.array([w * padding, h * padding], dtype=np.float64)


def keypoints_to_box(keypoints: np.ndarray, visible: np.ndarray) -> np.ndarray | None:
    """Tight [x, y, w, h] around the visible keypoints, None when fewer than two are visible."""
    points = keypoints[visible > 0]
    if len(points) < 2:
        return None
    low, high = points.min(axis=0), points.max(axis=0)
    return np.array([low[0], low[1], high[0] - low[0], high[1] - low[1]], dtype=np.float64)


def crop_affine(
    center: np.ndarray,
    size: np.ndarray,
    rotation_deg: float,
    output_size: tuple[int, int],
    flip: bool = False,
) -> np.ndarray:
    """2x3 matrix mapping image points to crop points.

    The box (``center``, ``size`` = (w, h) in image pixels) rotated by ``rotation_deg``
    (counter-clockwise, as in the top-down literature) fills the crop of ``output_size`` = (W, H);
    ``flip`` mirrors the crop horizontally.
    """
    out_w, out_h = output_size
    scale_x, scale_y = out_w / size[0], out_h / size[1]
    angle = math.radians(rotation_deg)
    cos, sin = math.cos(angle), math.sin(angle)
    # Rotate about the box centre, scale to the crop, move the centre to the crop centre.
    linear = np.array([[scale_x * cos, scale_x * sin], [-scale_y * sin, scale_y * cos]])
    crop_center = np.array([(out_w - 1) * 0.5, (out_h - 1) * 0.5])
    matrix = np.concatenate([linear, (crop_center - linear @ center)[:, None]], axis=1)
    if flip:
        matrix = flip_affine(out_w) @ to_homogeneous(matrix)
    return matrix


def flip_affine(width: int) -> np.ndarray:
    """2x3 matrix of a horizontal mirror of an image of ``width`` pixels: x -> W - 1 - x."""
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0]])


def to_homogeneous(matrix: np.ndarray) -> np.ndarray:
    return np.concatenate([matrix, np.array([[0.0, 0.0, 1.0]])], axis=0)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Exact inverse of a 2x3 affine matrix (batched over leading dimensions)."""
    linear, shift = matrix[..., :2], matrix[..., 2:]
    inverse_linear = np.linalg.inv(linear)
    return np.concatenate([inverse_linear, -inverse_linear @ shift], axis=-1)


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Map (..., 2) points through a 2x3 matrix."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def crop_to_image_points(points: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """(B, K, 2) crop points -> image points through the exact inverse of the (B, 2, 3) image ->
    crop affines, on the device; computed in float64, returned in the points' dtype."""
    linear, shift = affine[..., :2].double(), affine[..., 2:].double()
    inverse = torch.linalg.inv(linear)
    image_points = (points.double() - shift.transpose(-1, -2)) @ inverse.transpose(-1, -2)
    return image_points.to(points.dtype)


def warp_image(image: np.ndarray, matrix: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """Crop by the image -> crop matrix; outside the image is black, as in training and testing."""
    return cv2.warpAffine(
        image,
        matrix,
        output_size,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
