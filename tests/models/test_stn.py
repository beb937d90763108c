"""The symmetric STN's geometry: the resampling and the point maps agree to a hundredth of a pixel,
the SDTN round trip through a real crop is exact, the STN starts as the plain crop, and its
resampling is differentiable down to the localisation network."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from posesuite.data.geometry import apply_affine, crop_affine, crop_to_image_points
from posesuite.models.backbones import TimmBackbone
from posesuite.models.stn import (
    SpatialTransformer,
    crop_to_frame_points,
    frame_to_crop_points,
    pixels_to_normalized,
)

CROP_SIZE = (48, 64)  # (W, H)
IDENTITY = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]


def non_identity_theta() -> torch.Tensor:
    """A rotation of 20 degrees, anisotropic zoom and a shift, in normalised coordinates."""
    angle = math.radians(20)
    rotation = torch.tensor(
        [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]
    )
    linear = rotation @ torch.diag(torch.tensor([0.8, 0.7]))
    return torch.cat([linear, torch.tensor([[0.05], [-0.08]])], dim=1)[None]


def blob(size, centre, sigma=1.5) -> torch.Tensor:
    """(1, 1, H, W) Gaussian at ``centre`` in pixel coordinates (centres on integers)."""
    xs = torch.arange(size[0], dtype=torch.float64)
    ys = torch.arange(size[1], dtype=torch.float64)
    squared = (xs[None, :] - centre[0]) ** 2 + (ys[:, None] - centre[1]) ** 2
    return torch.exp(-squared / (2 * sigma**2))[None, None]


def centroid(image: torch.Tensor) -> torch.Tensor:
    weights = image[0, 0]
    ys, xs = torch.meshgrid(
        torch.arange(weights.shape[0], dtype=weights.dtype),
        torch.arange(weights.shape[1], dtype=weights.dtype),
        indexing="ij",
    )
    return torch.stack([(weights * xs).sum(), (weights * ys).sum()]) / weights.sum()


def small_stn(frame_size=None) -> SpatialTransformer:
    return SpatialTransformer(TimmBackbone("resnet18", out_indices=(4,)), frame_size)


def test_pixel_centres_and_edges_normalise_as_grid_sample_reads_them():
    matrix = pixels_to_normalized(CROP_SIZE)
    edges = torch.tensor(
        [[-0.5, -0.5, 1.0], [47.5, 63.5, 1.0], [23.5, 31.5, 1.0]], dtype=torch.float64
    )
    torch.testing.assert_close(
        (edges @ matrix.T)[:, :2],
        torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]], dtype=torch.float64),
    )


@pytest.mark.parametrize("frame_size", [CROP_SIZE, (24, 32), (40, 40)])
def test_a_feature_of_the_crop_lands_where_the_point_map_says(frame_size):
    """Resample a Gaussian at p with a non-identity theta: its centroid in the STN frame is
    crop_to_frame_points(p), and frame_to_crop_points takes it back to p."""
    stn = small_stn(frame_size)
    theta = non_identity_theta()
    centre = torch.tensor([[[22.3, 35.7]]], dtype=torch.float64)
    frame = stn.resample(blob(CROP_SIZE, centre[0, 0]), theta.double())
    expected = crop_to_frame_points(centre, theta, CROP_SIZE, frame_size)
    assert torch.linalg.norm(centroid(frame) - expected[0, 0]) < 0.01
    back = frame_to_crop_points(expected, theta, CROP_SIZE, frame_size)
    torch.testing.assert_close(back, centre, atol=1e-9, rtol=0)


def test_keypoints_round_trip_image_crop_frame_crop_image_within_a_thousandth_of_a_pixel():
    """Image keypoints -> loose crop (the worker's affine) -> STN frame (non-identity theta) ->
    SDTN -> image through the crop's exact inverse."""
    rng = np.random.default_rng(0)
    image_points = rng.uniform(100, 400, size=(1, 17, 2))
    affine = crop_affine(np.array([250.0, 260.0]), np.array([210.0, 280.0]), 15.0, CROP_SIZE)
    crop_points = torch.from_numpy(apply_affine(image_points[0], affine)[None]).float()
    theta = non_identity_theta()
    frame_points = crop_to_frame_points(crop_points, theta, CROP_SIZE, (24, 32))
    back = frame_to_crop_points(frame_points, theta, CROP_SIZE, (24, 32))
    restored = crop_to_image_points(back, torch.from_numpy(affine)[None].float())
    assert (restored - torch.from_numpy(image_points).float()).abs().max() < 1e-3


def test_the_stn_starts_at_the_identity_and_returns_the_plain_crop():
    torch.manual_seed(0)
    stn = small_stn().eval()
    images = torch.rand(2, 3, *CROP_SIZE[::-1])
    frames, theta = stn(images)
    torch.testing.assert_close(theta, torch.tensor(IDENTITY).expand(2, 2, 3))
    torch.testing.assert_close(frames, images, atol=1e-5, rtol=0)
    points = torch.rand(2, 17, 2) * 40
    torch.testing.assert_close(frame_to_crop_points(points, theta, CROP_SIZE, CROP_SIZE), points)


def test_the_resampling_is_differentiable_down_to_the_localisation_network():
    torch.manual_seed(0)
    stn = small_stn()
    images = torch.rand(2, 3, *CROP_SIZE[::-1])
    frames, _ = stn(images)
    (frames * torch.rand_like(frames)).sum().backward()
    assert stn.regressor.weight.grad.abs().sum() > 0
    # The regressor's weights start at zero, so only its gradient reaches the features at first;
    # after one update the localisation network gets gradients too.
    with torch.no_grad():
        stn.regressor.weight.add_(torch.randn_like(stn.regressor.weight) * 1e-3)
    stn.zero_grad()
    frames, _ = stn(images)
    (frames * torch.rand_like(frames)).sum().backward()
    conv1 = next(p for name, p in stn.localisation.named_parameters() if "conv1" in name)
    assert conv1.grad.abs().sum() > 0
