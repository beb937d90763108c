import os

import cv2
import numpy as np
import pytest

from posesuite.data.decoding import read_image
from posesuite.data.geometry import apply_affine, box_to_center_scale, invert_affine
from posesuite.data.records import PersonRecord
from posesuite.data.sources.coco import read_coco_keypoints
from posesuite.data.transforms import Augmentation, TopDownTransform
from posesuite.skeleton import load_skeleton

SKELETON = load_skeleton("coco17")


def disc_canvas(shape, point, radius=3):
    """Black image with one white anti-aliased disc centred on ``point`` (sub-pixel)."""
    canvas = np.zeros(shape, np.uint8)
    centre = (round(point[0] * 16), round(point[1] * 16))
    cv2.circle(canvas, centre, radius * 16, (255, 255, 255), -1, lineType=cv2.LINE_AA, shift=4)
    return canvas


def intensity_centroid(crop):
    weight = crop[..., 0].astype(np.float64)
    ys, xs = np.mgrid[: weight.shape[0], : weight.shape[1]]
    return np.array([(xs * weight).sum(), (ys * weight).sum()]) / weight.sum()


@pytest.mark.parametrize("seed", range(4))
def test_keypoints_land_on_the_joints_of_real_crops(real_data_dir, seed):
    coco_dir = real_data_dir / "coco"
    records = read_coco_keypoints(coco_dir / "test_coco.json", coco_dir, 17)
    aug = Augmentation(rotation_prob=1.0, flip_prob=0.5, half_body_prob=0.0, photometric=False)
    transform = TopDownTransform(SKELETON, (192, 256), augmentation=aug)
    transform._rng = np.random.default_rng(seed)  # a fixed draw per parametrisation
    transform._rng_pid = __import__("os").getpid()
    checked = 0
    for record in records:
        image = read_image(record.image_path)
        # One draw of the augmentation per person, then every joint's disc through that crop.
        state = transform.rng().bit_generator.state
        sample = transform(record, [image])
        flipped = np.linalg.det(sample["affine"][:, :2]) < 0  # a mirror reverses orientation
        zoom = np.sqrt(abs(np.linalg.det(sample["affine"][:, :2])))
        radius = max(2, round(8 / zoom))  # about 8 px in the crop: well sampled, sub-pixel centroid
        margin = radius * zoom + 2
        for k in range(17):
            x, y = sample["keypoints"][0, k]
            if sample["keypoint_weight"][0, k] == 0 or min(x, y, 191 - x, 255 - y) < margin:
                continue  # a disc cut by the crop border has a biased centroid
            # After a flip, output channel k holds the mirrored joint: its disc is drawn there.
            source = SKELETON.flip_index[k] if flipped else k
            sx, sy = record.keypoints[0, source, :2]
            if min(sx, sy, image.shape[1] - 1 - sx, image.shape[0] - 1 - sy) < radius + 1:
                continue  # likewise a disc cut by the image border
            transform.rng().bit_generator.state = state
            disc = transform(
                record, [disc_canvas(image.shape, record.keypoints[0, source, :2], radius)]
            )
            found = intensity_centroid(disc["image"][0].transpose(1, 2, 0))
            assert np.linalg.norm(found - sample["keypoints"][0, k]) < 0.15, (
                record.annotation_id,
                k,
            )
            checked += 1
        transform.rng().bit_generator.state = state
        transform(record, [image])  # leave the generator where the next person expects it
    assert checked > 20


def test_crop_keypoints_map_back_to_image_keypoints(real_data_dir):
    coco_dir = real_data_dir / "coco"
    records = read_coco_keypoints(coco_dir / "test_coco.json", coco_dir, 17)
    transform = TopDownTransform(SKELETON, (192, 256), augmentation=Augmentation(flip_prob=0.0))
    for record in records:
        sample = transform(record, [read_image(record.image_path)])
        back = apply_affine(
            sample["keypoints"].astype(np.float64),
            invert_affine(sample["affine"].astype(np.float64)),
        )
        labelled = record.keypoints[..., 2] > 0
        assert np.abs(back[labelled] - record.keypoints[labelled][:, :2]).max() < 1e-3


def test_evaluation_crop_centres_the_box(real_data_dir):
    coco_dir = real_data_dir / "coco"
    (record, *_) = read_coco_keypoints(coco_dir / "test_coco.json", coco_dir, 17)
    sample = TopDownTransform(SKELETON, (192, 256))(record, [read_image(record.image_path)])
    x, y, w, h = record.bbox
    centre = apply_affine(
        np.array([x + w / 2 - 0.5, y + h / 2 - 0.5]), sample["affine"].astype(np.float64)
    )
    np.testing.assert_allclose(centre, [95.5, 127.5], atol=1e-3)
    # A time axis of one frame: (T, 3, H, W), keypoints (T, K, 2), image ids (T,).
    assert sample["image"].shape == (1, 3, 256, 192) and sample["image"].dtype == np.uint8
    assert sample["keypoints"].shape == (1, 17, 2) and sample["keypoint_weight"].shape == (1, 17)


def test_keypoints_outside_the_crop_get_zero_weight(real_data_dir):
    coco_dir = real_data_dir / "coco"
    records = read_coco_keypoints(coco_dir / "test_coco.json", coco_dir, 17)
    aug = Augmentation(
        scale_factor=0.0,
        rotation_prob=0.0,
        flip_prob=0.0,
        half_body_prob=1.0,
        half_body_min_keypoints=8,
        photometric=False,
    )
    transform = TopDownTransform(SKELETON, (192, 256), augmentation=aug)
    dropped = 0
    for record in records:
        sample = transform(record, [read_image(record.image_path)])
        points, weight = sample["keypoints"][0], sample["keypoint_weight"][0]
        inside = (
            (points[:, 0] >= -0.5)
            & (points[:, 0] <= 191.5)
            & (points[:, 1] >= -0.5)
            & (points[:, 1] <= 255.5)
        )
        assert not (weight.astype(bool) & ~inside).any()
        dropped += int(((record.keypoints[0, :, 2] > 0) & (weight == 0)).sum())
    assert dropped > 0  # half-body crops really cut joints off


def test_scale_and_rotation_ranges_draw_uniformly_within_their_bounds():
    aug = Augmentation(
        scale_range=(0.7, 1.35),
        rotation_range=(-45.0, 45.0),
        rotation_prob=1.0,
        flip_prob=0.0,
        half_body_prob=0.0,
        photometric=False,
    )
    transform = TopDownTransform(SKELETON, (192, 256), augmentation=aug)
    transform._rng = np.random.default_rng(0)
    transform._rng_pid = os.getpid()
    bbox = np.array([40.0, 30.0, 60.0, 120.0])
    record = PersonRecord(1, ("unused.jpg",), bbox, np.zeros((17, 3)))
    _, size = box_to_center_scale(bbox, 192 / 256)
    frame = np.zeros((200, 160, 3), np.uint8)
    scales, angles = [], []
    for _ in range(300):
        linear = transform(record, [frame])["affine"][:, :2].astype(np.float64)
        # Row 0 of the crop affine is (192 / box width) x (cos, sin) of the rotation.
        scales.append(192 / size[0] / np.hypot(*linear[0]))
        angles.append(np.degrees(np.arctan2(linear[0, 1], linear[0, 0])))
    scales, angles = np.array(scales), np.array(angles)
    assert 0.7 - 1e-6 <= scales.min() < 0.73 and 1.32 < scales.max() <= 1.35 + 1e-6
    assert abs(scales.mean() - 1.025) < 0.04  # uniform, not centred on 1
    assert -45 - 1e-6 <= angles.min() < -40 and 40 < angles.max() <= 45 + 1e-6
    assert abs(angles.mean()) < 5


def test_visibility_flags_reach_the_sample_and_follow_a_flip():
    keypoints = np.zeros((17, 3))
    keypoints[:, :2] = [[50.0 + 3 * k, 60.0 + 4 * k] for k in range(17)]
    keypoints[:, 2] = [2, 1, 0] * 5 + [2, 1]
    record = PersonRecord(1, ("unused.jpg",), np.array([40.0, 50.0, 60.0, 80.0]), keypoints)
    frame = np.zeros((200, 160, 3), np.uint8)
    for flip_prob in (0.0, 1.0):
        aug = Augmentation(
            scale_factor=0.0,
            rotation_prob=0.0,
            half_body_prob=0.0,
            flip_prob=flip_prob,
            photometric=False,
        )
        transform = TopDownTransform(SKELETON, (192, 256), augmentation=aug)
        sample = transform(record, [frame])
        expected = keypoints[:, 2].astype(np.uint8)
        if flip_prob:  # channel k of a mirrored crop holds joint flip_index[k]
            expected = expected[SKELETON.flip_index]
        np.testing.assert_array_equal(sample["visibility"], expected[None])
        assert sample["visibility"].dtype == np.uint8
        # The weight marks labelled joints inside the crop, whatever their flag.
        np.testing.assert_array_equal(sample["keypoint_weight"] > 0, expected[None] > 0)


def test_a_plan_drawn_first_gives_the_same_sample(real_data_dir):
    """The dataset draws the crop before decoding (to choose the decode scale); the sample is
    the one the transform makes when it draws the crop itself."""
    coco_dir = real_data_dir / "coco"
    records = read_coco_keypoints(coco_dir / "test_coco.json", coco_dir, 17)
    drawing, planned = (
        TopDownTransform(SKELETON, (192, 256), augmentation=Augmentation()) for _ in range(2)
    )
    for transform in (drawing, planned):
        transform._rng = np.random.default_rng(5)
        transform._rng_pid = os.getpid()
    for record in records:
        frames = [read_image(record.image_path)]
        expected = drawing(record, frames)
        found = planned(record, frames, planned.plan(record))
        assert expected.keys() == found.keys()
        for key in expected:
            np.testing.assert_array_equal(found[key], expected[key])


def test_the_worker_leaves_colours_to_the_device(real_data_dir):
    """With photometric augmentation on, the worker's crop is still the plain warp: the colour,
    blur and noise steps run in batch on the training device."""
    coco_dir = real_data_dir / "coco"
    (record, *_) = read_coco_keypoints(coco_dir / "test_coco.json", coco_dir, 17)
    transform = TopDownTransform(SKELETON, (192, 256), augmentation=Augmentation(photometric=True))
    image = read_image(record.image_path)
    for _ in range(20):
        plan = transform.plan(record)
        crop = transform(record, [image], plan)["image"]
        expected = cv2.warpAffine(image, plan.matrix, (192, 256), flags=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(crop, expected.transpose(2, 0, 1)[None])
