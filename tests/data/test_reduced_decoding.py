"""Reduced-scale JPEG decoding: the crop plan picks the scale, the composed affine keeps the
geometry exact, and the crops match those of a full decode. Also the device-decoding option."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import torch

from posesuite.data.datamodule import TopDownDataset, collate_skipping, decode_crops_on_device
from posesuite.data.decoding import decode_reduction, read_image, reduced_to_original
from posesuite.data.geometry import apply_affine, invert_affine, warp_image
from posesuite.data.sources.coco import read_coco_keypoints
from posesuite.data.sources.synthetic import SyntheticSpec, ensure_synthetic_coco
from posesuite.data.transforms import Augmentation, CropPlan, TopDownTransform
from posesuite.skeleton import load_skeleton

SKELETON = load_skeleton("coco17")
GEOMETRY_ONLY = Augmentation(photometric=False)


def real_records(real_data_dir):
    coco_dir = real_data_dir / "coco"
    return read_coco_keypoints(coco_dir / "test_coco.json", coco_dir, 17)


@pytest.fixture(scope="module")
def synthetic_records(tmp_path_factory):
    spec = SyntheticSpec(num_train_images=1, num_val_images=6)
    paths = ensure_synthetic_coco(tmp_path_factory.mktemp("synthetic"), spec)
    return read_coco_keypoints(paths.val_annotations, paths.val_images, 17)


def seeded(transform: TopDownTransform, seed: int) -> TopDownTransform:
    transform._rng = np.random.default_rng(seed)
    transform._rng_pid = os.getpid()
    return transform


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(error, 1e-12)))


@pytest.mark.parametrize(
    ("zoom", "expected"), [(1.3, 1), (1.0, 1), (0.51, 1), (0.5, 2), (0.3, 2), (0.2, 4), (0.1, 8)]
)
def test_reduction_is_the_largest_that_keeps_the_crop_resolution(zoom, expected):
    angle = np.radians(30)
    linear = zoom * np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    plan = CropPlan(np.concatenate([linear, [[5.0], [7.0]]], 1), np.ones(2), flip=False)
    assert plan.decode_reduction() == expected


def test_reduced_pixels_sit_at_the_centres_of_the_blocks_they_stand_for(tmp_path):
    """A JPEG of one bright dot decoded at 1/f: the dot's centroid is at (x - (f - 1) / 2) / f."""
    point = np.array([203.3, 141.6])
    canvas = np.zeros((320, 400, 3), np.uint8)
    centre = (round(point[0] * 16), round(point[1] * 16))
    cv2.circle(canvas, centre, 24 * 16, (255, 255, 255), -1, lineType=cv2.LINE_AA, shift=4)
    path = str(tmp_path / "dot.jpg")
    cv2.imwrite(path, canvas, [cv2.IMWRITE_JPEG_QUALITY, 98])
    for reduction in (1, 2, 4, 8):
        image = read_image(path, reduction)[..., 0].astype(np.float64)
        assert image.shape == (-(-320 // reduction), -(-400 // reduction))
        ys, xs = np.mgrid[: image.shape[0], : image.shape[1]]
        found = np.array([(xs * image).sum(), (ys * image).sum()]) / image.sum()
        expected = (point - (reduction - 1) / 2) / reduction
        assert np.linalg.norm(found - expected) < 0.05 * reduction, (reduction, found, expected)


def test_joints_land_on_real_crops_decoded_at_reduced_scale(real_data_dir, tmp_path):
    """As the full-decode test in test_transforms.py: a disc drawn on each joint, written as a
    JPEG, decoded at the plan's reduction and cropped, has its centroid on the crop keypoint."""
    transform = seeded(TopDownTransform(SKELETON, (96, 128), augmentation=GEOMETRY_ONLY), 0)
    checked, reductions = 0, set()
    for record in real_records(real_data_dir):
        height, width = cv2.imread(record.image_path).shape[:2]
        plan = transform.plan(record)
        reduction = plan.decode_reduction()
        reductions.add(reduction)
        targets = transform.crop_targets(record, plan)
        zoom = np.sqrt(abs(np.linalg.det(plan.matrix[:, :2])))
        radius = max(3 * reduction, round(6 / zoom))  # ~6 crop pixels, several reduced pixels
        for k in range(17):
            x, y = targets["keypoints"][0, k]
            margin = radius * zoom + 2
            if targets["keypoint_weight"][0, k] == 0 or min(x, y, 95 - x, 127 - y) < margin:
                continue
            source = SKELETON.flip_index[k] if plan.flip else k
            sx, sy = record.keypoints[0, source, :2]
            if min(sx, sy, width - 1 - sx, height - 1 - sy) < radius + reduction:
                continue
            canvas = np.zeros((height, width, 3), np.uint8)
            centre = (round(sx * 16), round(sy * 16))
            cv2.circle(canvas, centre, radius * 16, (255, 255, 255), -1, cv2.LINE_AA, 4)
            path = str(tmp_path / "disc.jpg")
            cv2.imwrite(path, canvas, [cv2.IMWRITE_JPEG_QUALITY, 98])
            frame = read_image(path, reduction)
            crop = transform(record, [frame], plan, [reduced_to_original(reduction)])["image"][0]
            weight = crop[0].astype(np.float64)
            ys, xs = np.mgrid[:128, :96]
            found = np.array([(xs * weight).sum(), (ys * weight).sum()]) / weight.sum()
            assert np.linalg.norm(found - (x, y)) < 0.15, (record.annotation_id, k, reduction)
            checked += 1
    assert checked > 20 and reductions >= {1, 2}, (checked, reductions)


def reduced_and_full_samples(records, input_size, seed):
    """(reduction, reduced-decode sample, full-decode sample) of each record, the same draws."""
    reduced, full = (
        TopDownDataset(
            records,
            seeded(TopDownTransform(SKELETON, input_size, augmentation=GEOMETRY_ONLY), seed),
            decode_reduced=decode_reduced,
        )
        for decode_reduced in (True, False)
    )
    samples = [(reduced[i], full[i]) for i in range(len(records))]
    return [(decode_reduction(full["affine"]), r, full) for r, full in samples]


def antialiased_crop(record, affine: np.ndarray, input_size, supersampling: int = 4):
    """The crop as an ideal resampler would make it: warped at 4x the crop's resolution from the
    full decode, then box-averaged down."""
    s = supersampling
    finer = np.array([[s, 0, (s - 1) / 2], [0, s, (s - 1) / 2], [0, 0, 1]])
    matrix = finer @ np.vstack([affine.astype(np.float64), [0, 0, 1]])
    big = warp_image(
        read_image(record.image_path), matrix[:2], (input_size[0] * s, input_size[1] * s)
    )
    return cv2.resize(big, tuple(input_size), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)


@pytest.mark.parametrize("input_size", [(96, 128), (192, 256)])
def test_reduced_crops_match_full_crops_on_real_images(real_data_dir, input_size):
    records = real_records(real_data_dir)
    reduced_error, full_error = [], []
    for seed in range(3):
        samples = reduced_and_full_samples(records, input_size, seed)
        for record, (reduction, reduced, full) in zip(records, samples, strict=True):
            for key in ("keypoints", "keypoint_weight", "visibility", "affine", "area"):
                np.testing.assert_array_equal(reduced[key], full[key])
            if reduction == 1:
                np.testing.assert_array_equal(reduced["image"], full["image"])
                continue
            # Measured over these 3 x 12 draws: PSNR 22.9-29.8 dB, mean |difference| 2.8-11.1
            # levels of 255 (96x128, 19 reduced crops), 28.6-29.2 dB (192x256, 3 crops).
            assert psnr(reduced["image"], full["image"]) > 21
            difference = np.abs(reduced["image"].astype(int) - full["image"].astype(int))
            assert difference.mean() < 13
            ideal = antialiased_crop(record, full["affine"], input_size)
            reduced_error.append(psnr(reduced["image"], ideal))
            full_error.append(psnr(full["image"], ideal))
    assert len(reduced_error) >= (10 if input_size == (96, 128) else 1)
    # The gap is mostly the full decode's aliasing (bilinear taps at a 2x-8x zoom-out): the
    # reduced decode averages f x f blocks and is the closer of the two to an anti-aliased crop.
    assert np.mean(reduced_error) > np.mean(full_error) + 1.0, (reduced_error, full_error)


def test_reduced_crops_match_full_crops_on_synthetic_jpegs(synthetic_records):
    compared = 0
    for seed in range(3):
        for reduction, reduced, full in reduced_and_full_samples(synthetic_records, (48, 64), seed):
            np.testing.assert_array_equal(reduced["keypoints"], full["keypoints"])
            np.testing.assert_array_equal(reduced["affine"], full["affine"])
            if reduction > 1:  # measured: PSNR 30.5-41.0 dB over 11 reduced crops
                assert psnr(reduced["image"], full["image"]) > 28
                compared += 1
    assert compared > 5


def test_sample_affine_maps_the_original_image(real_data_dir):
    records = real_records(real_data_dir)
    transform = seeded(TopDownTransform(SKELETON, (96, 128), augmentation=GEOMETRY_ONLY), 1)
    dataset = TopDownDataset(records, transform, decode_reduced=True)
    for index, record in enumerate(records):
        sample = dataset[index]
        back = apply_affine(
            sample["keypoints"][0].astype(np.float64),
            invert_affine(sample["affine"].astype(np.float64)),
        )
        source = record.keypoints[0, :, :2]
        labelled = record.keypoints[0, :, 2] > 0
        if np.linalg.det(sample["affine"][:, :2]) < 0:  # flipped: channel k holds flip_index[k]
            source, labelled = source[SKELETON.flip_index], labelled[SKELETON.flip_index]
        assert np.abs(back[labelled] - source[labelled]).max() < 1e-3


def test_other_formats_decode_in_full(tmp_path, real_data_dir):
    (record, *_) = real_records(real_data_dir)
    png = tmp_path / "person.png"
    cv2.imwrite(str(png), cv2.imread(record.image_path))
    as_png = type(record)(record.image_id, (str(png),), record.bbox, record.keypoints)
    transform = TopDownTransform(SKELETON, (48, 64))  # a small crop: a JPEG would be reduced
    assert transform.plan(as_png).decode_reduction() > 1
    sample = TopDownDataset([as_png], transform, decode_reduced=True)[0]
    expected = transform(as_png, [read_image(str(png))])
    np.testing.assert_array_equal(sample["image"], expected["image"])


def test_rgb_decoding_equals_bgr_decoding_then_conversion(real_data_dir):
    for record in real_records(real_data_dir)[:4]:
        bgr = cv2.imread(record.image_path, cv2.IMREAD_COLOR)
        np.testing.assert_array_equal(
            read_image(record.image_path), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        )


def test_device_decoding_matches_worker_crops(real_data_dir):
    """device_jpeg_decode with the CPU as the device: torchvision's decoder and a grid-sample
    warp give the worker's crops up to interpolation rounding."""
    records = real_records(real_data_dir)
    transform = TopDownTransform(SKELETON, (96, 128))
    undecoded = TopDownDataset(records, transform, device_jpeg_decode=True)
    decoded = TopDownDataset(records, transform)
    batch = collate_skipping([undecoded[i] for i in range(len(records))])
    assert "image" not in batch and len(batch["jpeg"]) == len(records)
    crops = decode_crops_on_device(batch["jpeg"], batch["affine"], (96, 128), "cpu")
    expected = torch.stack([torch.from_numpy(decoded[i]["image"]) for i in range(len(records))])
    assert crops.shape == expected.shape  # (B, T = 1, 3, H, W)
    difference = (crops.int() - expected.int()).abs().float()
    # Measured on the CPU: mean 0.0002 levels, largest 1 (interpolation rounding). On a CUDA
    # device nvJPEG decodes, whose IDCT and chroma upsampling differ a little from libjpeg's.
    assert difference.mean() < 0.01 and difference.max() <= 2
