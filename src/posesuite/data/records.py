"""What a reader produces: one record per person crop to make."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PersonRecord:
    """One person in one image, in image pixel coordinates.

    ``keypoints`` is (K, 3) with COCO visibility (0 unlabelled, 1 occluded, 2 visible); records
    made from detector boxes carry zeros there. ``frames`` holds the image path, or several
    consecutive frames for clip models, all cropped with one shared affine. ``keypoint_mask``
    (K,) marks the keypoints the record's source annotates at all (`posesuite.data.mapping`);
    None means every one.
    """

    image_id: int
    frames: tuple[str, ...]
    bbox: np.ndarray  # [x, y, w, h]
    keypoints: np.ndarray  # (K, 3)
    box_score: float = 1.0
    annotation_id: int = -1
    area: float = 0.0
    keypoint_mask: np.ndarray | None = None

    @property
    def image_path(self) -> str:
        return self.frames[-1]


class DataError(ValueError):
    """Bad input data; the message names the file and the record."""
