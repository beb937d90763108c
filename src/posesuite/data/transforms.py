"""Top-down sample transform: choose the crop (centre/scale, half-body, random scale, rotation,
flip), warp the frames with one affine, move keypoints to crop space, photometric augmentation.

Runs in the data-loader workers. It produces crop-space keypoints and the affine, never targets:
heatmaps are made on the training device by the codec.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import albumentations as A
import numpy as np
import torch

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
    photometric: bool = True


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
        self._photometric: A.Compose | None = None

    def rng(self) -> np.random.Generator:
        """A generator per worker process, seeded from torch's per-worker seed (reproducible)."""
        if self._rng is None or self._rng_pid != os.getpid():
            seed = torch.initial_seed() % (2**32)
            self._rng = np.random.default_rng(seed)
            self._rng_pid = os.getpid()
            if self.augmentation is not None and self.augmentation.photometric:
                self._photometric = photometric_pipeline(seed)
        return self._rng

    def __call__(self, record: PersonRecord, frames: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        keypoints = record.keypoints[:, :2].astype(np.float64)
        visibility = np.rint(record.keypoints[:, 2]).clip(0, 2).astype(np.uint8)
        labelled = visibility > 0
        center, size = box_to_center_scale(record.bbox, self.aspect_ratio, self.padding)
        rotation, flip = 0.0, False
        if self.augmentation is not None:
            center, size, rotation, flip = self._random_crop(center, size, keypoints, labelled)
        matrix = crop_affine(center, size, rotation, self.input_size, flip=flip)
        crops = [warp_image(frame, matrix, self.input_size) for frame in frames]
        if self._photometric is not None:
            crops = [self._photometric(image=crop)["image"] for crop in crops]

        crop_keypoints = apply_affine(keypoints, matrix)
        width, height = self.input_size
        inside = (
            (crop_keypoints[:, 0] >= -0.5)
            & (crop_keypoints[:, 0] <= width - 0.5)
            & (crop_keypoints[:, 1] >= -0.5)
            & (crop_keypoints[:, 1] <= height - 0.5)
        )
        weight = (labelled & inside).astype(np.float32)
        if flip:
            crop_keypoints = crop_keypoints[self.skeleton.flip_index]
            weight = weight[self.skeleton.flip_index]
            visibility = visibility[self.skeleton.flip_index]
        return {
            "image": np.stack([c.transpose(2, 0, 1) for c in crops])
            if len(crops) > 1
            else crops[0].transpose(2, 0, 1),
            "keypoints": crop_keypoints.astype(np.float32),
            "keypoint_weight": weight,  # labelled and inside the crop
            "visibility": visibility,  # the annotation's flag: 0 unlabelled, 1 occluded, 2 visible
            "affine": matrix.astype(np.float32),
            "area": np.float32(size[0] * size[1]),
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


def photometric_pipeline(seed: int) -> A.Compose:
    """Colour, noise and blur augmentation of the crop (cheaper than on the full image)."""
    return A.Compose(
        [
            A.RandomBrightnessContrast(brightness_limit=0.25, contrast_limit=0.25, p=0.5),
            A.HueSaturationValue(p=0.3),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.MotionBlur(blur_limit=(3, 5))], p=0.15),
            A.GaussNoise(std_range=(0.02, 0.06), p=0.15),
        ],
        seed=seed,
    )
