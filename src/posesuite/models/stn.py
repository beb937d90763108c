"""RMPE's symmetric spatial transformer (Fang et al., ICCV 2017): an STN that resamples the loose
person crop on the device before the single-person pose estimator, and the SDTN that maps the
poses it predicts back to the loose crop.

The one convention is torch's: ``theta`` (B, 2, 3) is what `torch.nn.functional.affine_grid`
takes, the map from a point of the output (the STN frame) to the point of the input (the loose
crop) that it samples, both in normalised coordinates. With posesuite's pixel convention (pixel
centres on integers, a map of width W spans [-0.5, W - 0.5]) and ``align_corners=False``, the
normalisation of a (W, H) map is exactly x_n = (2 x + 1) / W - 1, so in pixels

    A = N_crop^-1 theta N_frame        (STN-frame pixels -> loose-crop pixels).

- SDTN, the STN frame's keypoints back to the loose crop: ``A`` (`frame_to_crop_points`). The
  paper writes the STN as the forward map T of the crop onto the frame and the SDTN as its
  inverse, gamma = (2x2 part of T)^-1 with offset -gamma t; with T = A^-1 that is A itself.
- A point of the loose crop in the STN frame (ground truth for the parallel SPPE): ``A^-1``
  (`crop_to_frame_points`).

Both are computed in float64 and are exact inverses of each other; `SpatialTransformer`
resamples images with the same ``theta`` (`tests/models/test_stn.py` checks that a feature at p
in the crop lands at A^-1 p in the frame).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from posesuite.models.backbones import TimmBackbone

IDENTITY_THETA = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def pixels_to_normalized(size: Sequence[int], dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(3, 3) map of a (W, H) map's pixel coordinates to grid_sample's ``align_corners=False``
    normalised coordinates: x_n = (2 x + 1) / W - 1, y_n = (2 y + 1) / H - 1."""
    width, height = float(size[0]), float(size[1])
    return torch.tensor(
        [[2 / width, 0.0, 1 / width - 1], [0.0, 2 / height, 1 / height - 1], [0.0, 0.0, 1.0]],
        dtype=dtype,
    )


def theta_in_pixels(
    theta: torch.Tensor, crop_size: Sequence[int], frame_size: Sequence[int]
) -> torch.Tensor:
    """(B, 3, 3) float64 pixel map A of the STN frame (``frame_size``, (W, H)) into the loose crop
    (``crop_size``) that ``theta`` (B, 2, 3) resamples."""
    bottom = theta.new_tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(theta.shape[0], 1, 3)
    theta3 = torch.cat([theta.double(), bottom], dim=1)
    to_frame = pixels_to_normalized(frame_size).to(theta.device)
    from_crop = torch.linalg.inv(pixels_to_normalized(crop_size)).to(theta.device)
    return from_crop @ theta3 @ to_frame


def _apply(points: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """(B, K, 2) points through (B, 3, 3) matrices, in float64, back in the points' dtype."""
    mapped = points.double() @ matrix[:, :2, :2].transpose(1, 2) + matrix[:, None, :2, 2]
    return mapped.to(points.dtype)


def frame_to_crop_points(
    points: torch.Tensor,
    theta: torch.Tensor,
    crop_size: Sequence[int],
    frame_size: Sequence[int],
) -> torch.Tensor:
    """The SDTN: (B, K, 2) pixel points of the STN frame -> the loose crop's pixels."""
    return _apply(points, theta_in_pixels(theta, crop_size, frame_size))


def crop_to_frame_points(
    points: torch.Tensor,
    theta: torch.Tensor,
    crop_size: Sequence[int],
    frame_size: Sequence[int],
) -> torch.Tensor:
    """(B, K, 2) pixel points of the loose crop -> the STN frame's pixels (the exact inverse of
    `frame_to_crop_points`)."""
    return _apply(points, torch.linalg.inv(theta_in_pixels(theta, crop_size, frame_size)))


class SpatialTransformer(nn.Module):
    """The STN: a localisation network regresses ``theta`` from the loose crop, which is then
    resampled by it (bilinear, zeros outside) into a ``frame_size`` (W, H) map.

    The regressor starts at zero weights and the identity's bias, so training starts from the
    plain crop (at the identity and ``frame_size`` equal to the crop's, the output is the input).

    Args:
        localisation: a `TimmBackbone` returning one feature map (default: ResNet-18's C5).
        frame_size: the STN output's (W, H); None keeps the input's size.
    """

    def __init__(
        self,
        localisation: TimmBackbone | None = None,
        frame_size: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.localisation = localisation or TimmBackbone("resnet18", out_indices=(4,))
        self.frame_size = tuple(int(v) for v in frame_size) if frame_size else None
        self.regressor = nn.Linear(self.localisation.out_channels[-1], 6)
        nn.init.zeros_(self.regressor.weight)
        with torch.no_grad():
            self.regressor.bias.copy_(torch.tensor(IDENTITY_THETA))

    def output_size(self, images: torch.Tensor) -> tuple[int, int]:
        """(W, H) of the STN frame for these images."""
        return self.frame_size or (images.shape[-1], images.shape[-2])

    def predict_theta(self, images: torch.Tensor) -> torch.Tensor:
        features = self.localisation(images)[-1]
        return self.regressor(features.mean(dim=(2, 3))).view(-1, 2, 3)

    def resample(self, images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """The images seen through ``theta``, at the frame's size."""
        width, height = self.output_size(images)
        grid = F.affine_grid(
            theta.to(images.dtype), [images.shape[0], images.shape[1], height, width], False
        )
        return F.grid_sample(images, grid, "bilinear", "zeros", align_corners=False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the STN frame's images, theta)."""
        theta = self.predict_theta(images)
        return self.resample(images, theta), theta
