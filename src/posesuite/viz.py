"""Skeleton drawing for prediction sheets, predict output and notebooks."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from posesuite.skeleton import Skeleton


def side_colour(name: str) -> tuple[int, int, int]:
    """RGB by body side: left orange, right blue, centre green (the usual convention)."""
    if name.startswith("left"):
        return (255, 128, 0)
    if name.startswith("right"):
        return (51, 153, 255)
    return (0, 220, 0)


def draw_pose(
    image: np.ndarray,
    keypoints: np.ndarray,
    skeleton: Skeleton,
    score_threshold: float = 0.2,
    thickness: int | None = None,
    colour: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """Draw one (K, 3) pose [x, y, score-or-visibility] on a copy of an RGB image.

    Limbs take the colour of their side unless ``colour`` is given; joints below
    ``score_threshold`` are not drawn.
    """
    canvas = image.copy()
    size = max(canvas.shape[:2])
    thickness = thickness or max(1, round(size / 200))
    shown = keypoints[:, 2] > score_threshold
    for a, b in skeleton.limbs:
        if shown[a] and shown[b]:
            limb_colour = colour or side_colour(skeleton.keypoints[b])
            pa = tuple(round(v) for v in keypoints[a, :2])
            pb = tuple(round(v) for v in keypoints[b, :2])
            cv2.line(canvas, pa, pb, limb_colour, thickness, lineType=cv2.LINE_AA)
    for k in np.flatnonzero(shown):
        centre = tuple(round(v) for v in keypoints[k, :2])
        cv2.circle(
            canvas,
            centre,
            thickness + 1,
            colour or side_colour(skeleton.keypoints[k]),
            -1,
            cv2.LINE_AA,
        )
    return canvas


def distinct_colours(n: int) -> list[tuple[int, int, int]]:
    return [
        tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / max(1, n), 0.8, 1.0)) for i in range(n)
    ]


def contact_sheet(images: Sequence[np.ndarray], columns: int = 4, tile: int = 256) -> np.ndarray:
    """Tile RGB images (letterboxed to ``tile`` x ``tile``) into one image."""
    rows = (len(images) + columns - 1) // columns
    sheet = np.zeros((rows * tile, columns * tile, 3), np.uint8)
    for i, image in enumerate(images):
        scale = tile / max(image.shape[:2])
        resized = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
        r, c = divmod(i, columns)
        sheet[r * tile : r * tile + resized.shape[0], c * tile : c * tile + resized.shape[1]] = (
            resized
        )
    return sheet


def save_rgb(path: str | Path, image: np.ndarray) -> None:
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
