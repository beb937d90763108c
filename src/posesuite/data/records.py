"""What a reader produces: one record per person crop to make, always with a time axis."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


class DataError(ValueError):
    """Bad input data; the message names the file and the record."""


@dataclass(frozen=True)
class PersonRecord:
    """One person in T consecutive frames (T = 1 for an image), in image pixel coordinates.

    ``frames`` holds the T frame paths, all cropped with one affine made from ``bbox``.
    ``keypoints`` is (T, K, 3) with COCO visibility (0 unlabelled, 1 occluded, 2 visible); a
    single image's (K, 3) is taken as T = 1. Records made from detector boxes carry zeros there.
    ``frame_ids`` are the frames' image ids (evaluation matches predictions by them); None means
    ``(image_id,)``, the single image's. ``keypoint_mask`` (K,) marks the keypoints the record's
    source annotates at all (`posesuite.data.mapping`); None means every one.
    """

    image_id: int
    frames: tuple[str, ...]
    bbox: np.ndarray  # [x, y, w, h]
    keypoints: np.ndarray  # (T, K, 3)
    box_score: float = 1.0
    annotation_id: int = -1
    area: float = 0.0
    keypoint_mask: np.ndarray | None = None
    frame_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        keypoints = np.asarray(self.keypoints)
        if keypoints.ndim == 2:
            keypoints = keypoints[None]
            object.__setattr__(self, "keypoints", keypoints)
        frame_ids = self.frame_ids or (self.image_id,)
        if keypoints.ndim != 3 or keypoints.shape[2] != 3:
            raise DataError(
                f"image id {self.image_id}: keypoints must be (T, K, 3), got {keypoints.shape}"
            )
        if not len(self.frames) == len(keypoints) == len(frame_ids):
            raise DataError(
                f"image id {self.image_id}: {len(self.frames)} frames, {len(keypoints)} frames "
                f"of keypoints and {len(frame_ids)} frame ids: one of each per frame"
            )

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def image_ids(self) -> tuple[int, ...]:
        """The image id of each frame."""
        return self.frame_ids or (self.image_id,)

    @property
    def image_path(self) -> str:
        """The last frame (the image, for T = 1)."""
        return self.frames[-1]


class Split(Protocol):
    """One split of a dataset in any format (e.g. `posesuite.data.sources.coco.CocoSplit`):
    ``annotations`` is the ground-truth file the metric reads (``metric(ground_truth=...)``),
    ``images`` the image folder, ``detections`` a detector's COCO results file or None, and
    ``read_people`` the format's reader: one record per labelled person."""

    annotations: Path
    images: Path
    detections: Path | None

    def read_people(self, num_keypoints: int) -> list[PersonRecord]: ...
