"""A clip (T frames of one person) gets one augmentation: one crop, scale, rotation and flip drawn
for the record and applied to every frame alike, on made-up frames and on a real video."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from posesuite.data.decoding import read_image
from posesuite.data.geometry import apply_affine
from posesuite.data.records import PersonRecord
from posesuite.data.transforms import Augmentation, TopDownTransform
from posesuite.skeleton import load_skeleton

PENN = load_skeleton("penn13")
# Every random draw on, often: scale, rotation, flip, a box shift and half-body crops.
FULL = Augmentation(rotation_prob=1.0, flip_prob=0.5, half_body_prob=0.5, shift_factor=0.1)
INPUT_SIZE = (64, 80)


def transform(seed: int) -> TopDownTransform:
    result = TopDownTransform(PENN, INPUT_SIZE, augmentation=FULL)
    result._rng = np.random.default_rng(seed)
    result._rng_pid = os.getpid()
    return result


def moving_clip(frames: int, seed: int) -> tuple[PersonRecord, list[np.ndarray]]:
    """A person walking right over ``frames`` frames: its joints shift 3 px a frame, and each
    frame is a different random image."""
    rng = np.random.default_rng(seed)
    base = np.column_stack([rng.uniform(40, 80, 13), rng.uniform(30, 110, 13), np.full(13, 2.0)])
    keypoints = np.stack([base + np.array([3.0 * t, 0.0, 0.0]) for t in range(frames)])
    images = [rng.integers(0, 256, (140, 160, 3), dtype=np.uint8) for _ in range(frames)]
    record = PersonRecord(
        image_id=frames - 1,
        frames=tuple(f"frame{t}.jpg" for t in range(frames)),
        bbox=np.array([35.0, 25.0, 60.0 + 3 * frames, 90.0]),
        keypoints=keypoints,
        frame_ids=tuple(range(frames)),
    )
    return record, images


@pytest.mark.parametrize("seed", range(6))
def test_every_frame_is_cropped_by_the_one_affine_drawn_for_the_clip(seed):
    record, images = moving_clip(5, seed)
    sample = transform(seed)(record, images)
    matrix = sample["affine"].astype(np.float64)
    assert sample["image"].shape == (5, 3, INPUT_SIZE[1], INPUT_SIZE[0])
    for t, image in enumerate(images):
        expected = cv2.warpAffine(
            image, matrix, INPUT_SIZE, flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0)
        )
        # The worker warps with the float64 matrix; float32 rounding of the stored affine moves
        # a few samples by one level.
        difference = np.abs(sample["image"][t].transpose(1, 2, 0).astype(int) - expected)
        assert (difference > 1).mean() < 0.01, t
    # The keypoints of every frame through that affine (channels swapped on a flip).
    crop_points = apply_affine(record.keypoints[..., :2], matrix)
    flipped = matrix[0, 0] < 0
    if flipped:
        crop_points = crop_points[:, PENN.flip_index]
    np.testing.assert_allclose(sample["keypoints"], crop_points, atol=1e-3)
    # The motion survives the crop: the same frame-to-frame step (mirrored on a flip), scaled and
    # rotated by the one affine.
    steps = np.diff(sample["keypoints"], axis=0)
    np.testing.assert_allclose(steps, np.broadcast_to(steps[:1], steps.shape), atol=1e-3)


def test_the_draws_change_between_clips_but_not_within_one():
    record, images = moving_clip(3, seed=0)
    augment = transform(seed=1)
    affines = [augment(record, images)["affine"] for _ in range(8)]
    assert len({a.tobytes() for a in affines}) == 8  # a new augmentation for every sample
    # A clip of T copies of one frame gives T identical crops.
    still = PersonRecord(
        0, ("a", "b", "c"), record.bbox, np.repeat(record.keypoints[:1], 3, 0), frame_ids=(0, 1, 2)
    )
    crops = augment(still, [images[0]] * 3)["image"]
    assert (crops == crops[:1]).all()


def test_a_real_video_clip_shares_its_crop(real_data_dir):
    """Five consecutive PoseTrack frames as one clip: every frame's crop is that frame through the
    sample's affine."""
    folder = real_data_dir / "video_posetrack18_000001"
    paths = sorted(str(p) for p in folder.glob("*.jpg"))
    assert len(paths) == 5
    frames = [read_image(path) for path in paths]
    height, width = frames[0].shape[:2]
    # Joints spread over the middle of the frame (the same in every frame: only the crop is
    # being checked).
    keypoints = np.zeros((5, 13, 3))
    keypoints[..., 0] = np.linspace(0.35, 0.65, 13) * width
    keypoints[..., 1] = np.linspace(0.25, 0.75, 13) * height
    keypoints[..., 2] = 2
    record = PersonRecord(
        image_id=4,
        frames=tuple(paths),
        bbox=np.array([width * 0.3, height * 0.2, width * 0.4, height * 0.6]),
        keypoints=keypoints,
        frame_ids=tuple(range(5)),
    )
    sample = transform(seed=3)(record, frames)
    matrix = sample["affine"].astype(np.float64)
    for t, frame in enumerate(frames):
        expected = cv2.warpAffine(
            frame, matrix, INPUT_SIZE, flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0)
        )
        difference = np.abs(sample["image"][t].transpose(1, 2, 0).astype(int) - expected)
        assert (difference > 1).mean() < 0.01, paths[t]
    # The frames differ (it is a video), and so do their crops.
    assert not np.array_equal(sample["image"][0], sample["image"][4])
