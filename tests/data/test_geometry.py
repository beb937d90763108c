import numpy as np
import pytest
import torch

from posesuite.data.geometry import (
    apply_affine,
    box_to_center_scale,
    crop_affine,
    crop_to_image_points,
    flip_affine,
    invert_affine,
    to_homogeneous,
    warp_image,
)


def test_box_to_center_scale_fixes_aspect_ratio_and_pads():
    center, size = box_to_center_scale([10, 20, 30, 120], aspect_ratio=0.75, padding=1.25)
    np.testing.assert_allclose(center, [24.5, 79.5])  # pixel-centre convention
    np.testing.assert_allclose(size, [90 * 1.25, 120 * 1.25])
    _, size = box_to_center_scale([0, 0, 200, 100], aspect_ratio=0.75, padding=1.0)
    np.testing.assert_allclose(size, [200, 200 / 0.75])


@pytest.mark.parametrize("flip", [False, True])
def test_crop_and_inverse_round_trip_below_1e3_px(flip):
    rng = np.random.default_rng(0)
    for _ in range(50):
        matrix = crop_affine(
            center=rng.uniform(0, 640, 2),
            size=rng.uniform(20, 400, 2),
            rotation_deg=rng.uniform(-90, 90),
            output_size=(192, 256),
            flip=flip,
        )
        points = rng.uniform(-100, 700, (17, 2))
        back = apply_affine(apply_affine(points, matrix), invert_affine(matrix))
        assert np.abs(back - points).max() < 1e-3


def test_box_edges_map_to_crop_edges():
    center, size = np.array([49.5, 99.5]), np.array([100.0, 200.0])
    matrix = crop_affine(center, size, 0.0, (48, 64))
    corners = np.array([[-0.5, -0.5], [99.5, 199.5]])
    np.testing.assert_allclose(apply_affine(corners, matrix), [[-0.5, -0.5], [47.5, 63.5]])


def test_rotation_is_counter_clockwise_about_the_box_centre():
    center, size = np.array([100.0, 100.0]), np.array([64.0, 64.0])
    matrix = crop_affine(center, size, 90.0, (64, 64))
    # A point right of the centre in the image ends up above the centre of a crop rotated by +90.
    x, y = apply_affine(np.array([110.0, 100.0]), matrix)
    assert x == pytest.approx(31.5) and y == pytest.approx(21.5)


def test_flip_affine_is_its_own_inverse():
    flip = to_homogeneous(flip_affine(48))
    np.testing.assert_allclose(flip @ flip, np.eye(3))


def test_warp_image_places_a_pixel_where_the_matrix_says():
    image = np.zeros((64, 64, 3), np.uint8)
    image[20, 10] = 255
    matrix = crop_affine(np.array([31.5, 31.5]), np.array([64.0, 64.0]), 0.0, (128, 128))
    crop = warp_image(image, matrix, (128, 128))[..., 0].astype(np.float64)
    ys, xs = np.mgrid[:128, :128]
    centroid = [(xs * crop).sum() / crop.sum(), (ys * crop).sum() / crop.sum()]
    np.testing.assert_allclose(centroid, apply_affine(np.array([10.0, 20.0]), matrix), atol=1e-6)


def test_crop_to_image_points_is_the_exact_inverse_affine_in_torch():
    rng = np.random.default_rng(0)
    affines = rng.normal(size=(4, 2, 3))
    points = rng.uniform(0, 100, (4, 17, 2))
    expected = np.stack(
        [
            p @ invert_affine(a)[:, :2].T + invert_affine(a)[:, 2]
            for p, a in zip(points, affines, strict=True)
        ]
    )
    result = crop_to_image_points(torch.tensor(points), torch.tensor(affines))
    np.testing.assert_allclose(result.numpy(), expected, atol=1e-9)
