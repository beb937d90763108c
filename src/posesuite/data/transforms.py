"""Top-down sample transform: choose the crop (centre/scale, half-body, random scale, rotation,
flip), warp the record's T frames with one affine, move keypoints to crop space.

Runs in the data-loader workers. It produces crop-space keypoints and the affine, never targets:
heatmaps are made on the training device by the codec, and the photometric augmentation runs
there too, in batch (`posesuite.data.photometric`).

The crop is chosen from the record alone (`TopDownTransform.plan`), before any pixel is
decoded, so the dataset can decode a JPEG at reduced scale when the crop would not use the
full resolution (`posesuite.data.decoding`).

Every sample has a time axis, T = 1 for an image: ``image`` (T, 3, H, W), ``keypoints``
(T, K, 2), ``keypoint_weight`` and ``visibility`` (T, K), ``image_id`` (T,); the rest (the affine,
the box, the source's keypoint mask) belongs to the whole record.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from posesuite.data.decoding import decode_reduction
from posesuite.data.geometry import (
    apply_affine,
    box_to_center_scale,
    crop_affine,
    keypoints_to_box,
    warp_image,
)
from posesuite.data.records import PersonRecord
from posesuite.skeleton import Skeleton


@dataclass
class Augmentation:
    """Random geometric augmentation; names and defaults follow the top-down literature."""

    scale_factor: float = 0.25  # box size x clip(1 + N(0, sf), 1 - sf, 1 + sf)
    rotation_factor: float = 30.0  # degrees, clip(N(0, rf), -2 rf, 2 rf)
    # Uniform draws instead, for recipes stated as ranges (CPN: scale 0.7-1.35, +-45 degrees).
    scale_range: Sequence[float] | None = None  # box size x U(low, high), replaces scale_factor
    rotation_range: Sequence[float] | None = None  # degrees U(low, high), replaces rotation_factor
    rotation_prob: float = 0.6
    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_min_keypoints: int = 8
    shift_factor: float = 0.0  # random box shift, fraction of the box size
    # Colour, blur and noise; run in batch on the training device by the data module's
    # `on_after_batch_transfer` (posesuite.data.photometric), not in the worker.
    photometric: bool = True


@dataclass(frozen=True)
class CropPlan:
    """The crop drawn for one sample: ``matrix`` maps original image pixels to crop pixels."""

    matrix: np.ndarray  # 2x3
    size: np.ndarray  # the box's (w, h) in image pixels
    flip: bool

    def decode_reduction(self) -> int:
        return decode_reduction(self.matrix)


class TopDownTransform:
    """Record + decoded frames -> crop, crop-space keypoints, weights, visibility flags and the
    crop's affine."""

    def __init__(
        self,
        skeleton: Skeleton,
        input_size: Sequence[int],
        padding: float = 1.25,
        augmentation: Augmentation | None = None,
    ) -> None:
        self.skeleton = skeleton
        self.input_size = (int(input_size[0]), int(input_size[1]))  # (W, H)
        self.aspect_ratio = self.input_size[0] / self.input_size[1]
        self.padding = padding
        self.augmentation = augmentation
        self._rng: np.random.Generator | None = None
        self._rng_pid: int | None = None

    def rng(self) -> np.random.Generator:
        """A generator per worker process, seeded from torch's per-worker seed (reproducible)."""
        if self._rng is None or self._rng_pid != os.getpid():
            self._rng = np.random.default_rng(torch.initial_seed() % (2**32))
            self._rng_pid = os.getpid()
        return self._rng

    def plan(self, record: PersonRecord) -> CropPlan:
        """Draw the crop of ``record`` (the random geometry, when augmenting); no pixels needed.
        A clip's half-body box covers the part over all its frames."""
        keypoints = record.keypoints[..., :2].reshape(-1, 2).astype(np.float64)
        center, size = box_to_center_scale(record.bbox, self.aspect_ratio, self.padding)
        rotation, flip = 0.0, False
        if self.augmentation is not None:
            labelled = np.rint(record.keypoints[..., 2].ravel()) > 0  # flags 1 and 2
            center, size, rotation, flip = self._random_crop(center, size, keypoints, labelled)
        matrix = crop_affine(center, size, rotation, self.input_size, flip=flip)
        return CropPlan(matrix, size, flip)

    def __call__(
        self,
        record: PersonRecord,
        frames: Sequence[np.ndarray],
        plan: CropPlan | None = None,
        to_original: Sequence[np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Crop the record's ``frames`` by ``plan`` (drawn now if None). ``to_original``: per
        frame, the 3x3 map from its pixels to the original image's, for frames decoded at
        reduced scale or in part (`posesuite.data.decoding.DecodedFrame`); the sample's affine
        maps the original image's pixels to the crop whatever was decoded."""
        if plan is None:
            plan = self.plan(record)
        maps = to_original if to_original is not None else [None] * len(frames)
        warps = [plan.matrix if to_frame is None else plan.matrix @ to_frame for to_frame in maps]
        crops = [
            warp_image(frame, warp, self.input_size)
            for frame, warp in zip(frames, warps, strict=True)
        ]
        sample = self.crop_targets(record, plan)
        sample["image"] = np.stack([crop.transpose(2, 0, 1) for crop in crops])  # (T, 3, H, W)
        return sample

    def crop_targets(self, record: PersonRecord, plan: CropPlan) -> dict[str, np.ndarray]:
        """Everything of the sample but the image: crop-space keypoints, weights and visibility
        flags per frame, the source's keypoint mask, the affine and the box area."""
        keypoints = record.keypoints[..., :2].astype(np.float64)  # (T, K, 2)
        visibility = np.rint(record.keypoints[..., 2]).clip(0, 2).astype(np.uint8)
        if record.keypoint_mask is None:
            keypoint_mask = np.ones(keypoints.shape[1], dtype=bool)
        else:
            keypoint_mask = np.asarray(record.keypoint_mask, dtype=bool)
        labelled = visibility > 0
        crop_keypoints = apply_affine(keypoints, plan.matrix)
        width, height = self.input_size
        inside = (
            (crop_keypoints[..., 0] >= -0.5)
            & (crop_keypoints[..., 0] <= width - 0.5)
            & (crop_keypoints[..., 1] >= -0.5)
            & (crop_keypoints[..., 1] <= height - 0.5)
        )
        weight = (labelled & inside).astype(np.float32)
        if plan.flip:
            flip = self.skeleton.flip_index
            crop_keypoints = crop_keypoints[:, flip]
            weight = weight[:, flip]
            visibility = visibility[:, flip]
            keypoint_mask = keypoint_mask[flip]
        return {
            "keypoints": crop_keypoints.astype(np.float32),  # (T, K, 2)
            "keypoint_weight": weight,  # (T, K): labelled and inside the crop
            "visibility": visibility,  # the annotation's flag: 0 unlabelled, 1 occluded, 2 visible
            "keypoint_mask": keypoint_mask,  # the joints the record's source annotates at all
            "affine": plan.matrix.astype(np.float32),
            "area": np.float32(plan.size[0] * plan.size[1]),
        }

    def _random_crop(
        self, center: np.ndarray, size: np.ndarray, keypoints: np.ndarray, labelled: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, float, bool]:
        aug, rng = self.augmentation, self.rng()
        if labelled.sum() >= aug.half_body_min_keypoints and rng.random() < aug.half_body_prob:
            half = self._half_body_box(keypoints, labelled, rng)
            if half is not None:
                center, size = half
        if aug.shift_factor > 0:
            center = center + rng.uniform(-1, 1, size=2) * aug.shift_factor * size
        if aug.scale_range is not None:
            scale = rng.uniform(*aug.scale_range)
        else:
            scale = np.clip(
                rng.normal() * aug.scale_factor + 1, 1 - aug.scale_factor, 1 + aug.scale_factor
            )
        rotation = 0.0
        if rng.random() < aug.rotation_prob:
            if aug.rotation_range is not None:
                rotation = float(rng.uniform(*aug.rotation_range))
            else:
                rotation = float(
                    np.clip(
                        rng.normal() * aug.rotation_factor,
                        -2 * aug.rotation_factor,
                        2 * aug.rotation_factor,
                    )
                )
        flip = bool(rng.random() < aug.flip_prob)
        return center, size * scale, rotation, flip

    def _half_body_box(
        self, keypoints: np.ndarray, labelled: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Box of the upper or the lower body alone (random choice), as in the half-body
        augmentation of the top-down baselines."""
        upper = np.zeros_like(labelled)
        upper[list(self.skeleton.upper_body)] = True
        lower = np.zeros_like(labelled)
        lower[list(self.skeleton.lower_body)] = True
        groups = [g & labelled for g in (upper, lower) if (g & labelled).sum() >= 2]
        if not groups:
            return None
        group = groups[rng.integers(len(groups))]
        box = keypoints_to_box(keypoints, group)
        if box is None:
            return None
        center, size = box_to_center_scale(box, self.aspect_ratio, padding=1.5)
        return center, size
