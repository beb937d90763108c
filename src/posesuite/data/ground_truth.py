"""The ground truth a PCK-style protocol scores against, whatever the dataset's format.

Each reader of a single-person benchmark (LSP's ``joints.mat``, Penn Action's per-video label
files, the synthetic video) gives one `KeypointGroundTruth`: one entry per annotated person in
one frame, keyed by (``image_id``, ``annotation_id``) exactly as the reader's `PersonRecord`
names them, so a prediction (which carries both, per frame) finds its entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class KeypointGroundTruth:
    """N annotated people-in-a-frame, in 0-based pixel coordinates (pixel centres on integers).

    ``boxes`` (N, 4) are [x, y, w, h] person boxes (Penn Action's per-frame box; for LSP the
    tight box of the labelled joints); ``labelled`` marks the joints the protocol scores.
    """

    path: Path
    image_ids: np.ndarray  # (N,) int64
    annotation_ids: np.ndarray  # (N,) int64
    joints: np.ndarray  # (N, K, 2) float64, zeros where unlabelled
    labelled: np.ndarray  # (N, K) bool
    boxes: np.ndarray  # (N, 4) float64

    def __post_init__(self) -> None:
        count = len(self.image_ids)
        shapes = {
            "annotation_ids": (self.annotation_ids.shape, (count,)),
            "joints": (self.joints.shape[:1] + self.joints.shape[2:], (count, 2)),
            "labelled": (self.labelled.shape[:1], (count,)),
            "boxes": (self.boxes.shape, (count, 4)),
        }
        for name, (shape, expected) in shapes.items():
            if tuple(shape) != expected:
                raise ValueError(f"{self.path}: {name} has shape {shape}, expected {expected}")
        keys = set(zip(self.image_ids.tolist(), self.annotation_ids.tolist(), strict=True))
        if len(keys) != count:
            raise ValueError(f"{self.path}: two entries share an (image id, annotation id) pair")

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def num_keypoints(self) -> int:
        return int(self.joints.shape[1])
