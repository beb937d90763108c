"""Gaussian heatmap codec.

Targets are encoded in batch on the training device from crop-space keypoints, never in the
data-loader workers. Crop and heatmap coordinates follow the geometry convention of
`posesuite.data.geometry` (pixel centres at integers, edges aligned), so a heatmap pixel u maps to
crop pixel (u + 0.5) * stride - 0.5 and a horizontal flip of the heatmap is exact: no one-pixel
shift is needed after flipping back.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

REFINEMENTS = ("dark", "shift", "none")


class HeatmapCodec:
    """Keypoints <-> Gaussian heatmaps, decoding with sub-pixel refinement.

    Args:
        input_size: network input (W, H) in pixels.
        heatmap_size: output heatmap (W, H).
        sigma: Gaussian standard deviation in heatmap pixels.
        refine: ``dark`` (second-order Taylor expansion on the log of the smoothed heatmap),
            ``shift`` (0.25 px toward the higher neighbour, the classic rule) or ``none``.
        blur_kernel: odd kernel size of the smoothing used by ``dark`` (1: none). As in the
            reference method, the smoothing pads by replication, which pulls peaks lying within
            the kernel's radius of the heatmap border slightly toward it.
    """

    def __init__(
        self,
        input_size: Sequence[int],
        heatmap_size: Sequence[int],
        sigma: float = 2.0,
        refine: str = "dark",
        blur_kernel: int = 11,
    ) -> None:
        if refine not in REFINEMENTS:
            raise ValueError(f"refine must be one of {REFINEMENTS}, got {refine!r}")
        if blur_kernel % 2 != 1:
            raise ValueError(f"blur_kernel must be odd, got {blur_kernel}")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        self.stride = (
            self.input_size[0] / self.heatmap_size[0],
            self.input_size[1] / self.heatmap_size[1],
        )
        self.sigma = sigma
        self.refine = refine
        self.blur_kernel = blur_kernel

    # --- coordinates -------------------------------------------------------------------------
    def crop_to_heatmap(self, points: torch.Tensor) -> torch.Tensor:
        stride = points.new_tensor(self.stride)
        return (points + 0.5) / stride - 0.5

    def heatmap_to_crop(self, points: torch.Tensor) -> torch.Tensor:
        stride = points.new_tensor(self.stride)
        return (points + 0.5) * stride - 0.5

    # --- encoding ----------------------------------------------------------------------------
    def gaussian_heatmaps(
        self, keypoints: torch.Tensor, sigma: float | None = None
    ) -> torch.Tensor:
        """(B, K, 2) crop-space keypoints -> (B, K, h, w) unnormalised Gaussians (peak 1)."""
        sigma = self.sigma if sigma is None else sigma
        width, height = self.heatmap_size
        centers = self.crop_to_heatmap(keypoints.float())
        xs = torch.arange(width, device=keypoints.device, dtype=torch.float32)
        ys = torch.arange(height, device=keypoints.device, dtype=torch.float32)
        # Separable: exp(-(dx^2 + dy^2) / 2s^2) = exp(-dx^2 / 2s^2) * exp(-dy^2 / 2s^2).
        gx = torch.exp(-((xs - centers[..., :1]) ** 2) / (2 * sigma**2))
        gy = torch.exp(-((ys - centers[..., 1:]) ** 2) / (2 * sigma**2))
        return gy.unsqueeze(-1) * gx.unsqueeze(-2)

    def encode(
        self, keypoints: torch.Tensor, keypoint_weight: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Training targets for a batch: ``heatmaps`` (B, K, h, w) and ``target_weight`` (B, K)."""
        heatmaps = self.gaussian_heatmaps(keypoints)
        weight = keypoint_weight.float()
        return {"heatmaps": heatmaps * weight[..., None, None], "target_weight": weight}

    # --- decoding ----------------------------------------------------------------------------
    def decode(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K, h, w) -> crop-space keypoints (B, K, 2) and scores (B, K) (heatmap maxima)."""
        heatmaps = heatmaps.float()
        batch, channels, _, width = heatmaps.shape
        flat = heatmaps.reshape(batch, channels, -1)
        scores, index = flat.max(dim=-1)
        x = (index % width).float()
        y = torch.div(index, width, rounding_mode="floor").float()
        points = torch.stack([x, y], dim=-1)
        if self.refine == "dark":
            points = points + self._dark_offsets(heatmaps, index)
        elif self.refine == "shift":
            points = points + 0.25 * self._neighbour_signs(heatmaps, index)
        return self.heatmap_to_crop(points), scores

    def _neighbour_signs(self, heatmaps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        padded = F.pad(heatmaps, (1, 1, 1, 1), mode="replicate")
        width = heatmaps.shape[-1]
        x, y = index % width + 1, torch.div(index, width, rounding_mode="floor") + 1
        at = _gather_2d(padded)
        dx = at(x + 1, y) - at(x - 1, y)
        dy = at(x, y + 1) - at(x, y - 1)
        return torch.stack([torch.sign(dx), torch.sign(dy)], dim=-1)

    def _dark_offsets(self, heatmaps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Newton step on the log of the smoothed heatmap at its maximum (DARK, CVPR 2020)."""
        smoothed = gaussian_blur(heatmaps, self.blur_kernel)
        # Keep each map's peak height, as the reference method does, then work in log space.
        peak = heatmaps.amax(dim=(-2, -1), keepdim=True)
        smoothed = smoothed * peak / smoothed.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-10)
        log_map = torch.log(smoothed.clamp_min(1e-10))
        padded = F.pad(log_map, (1, 1, 1, 1), mode="replicate")
        width = heatmaps.shape[-1]
        x, y = index % width + 1, torch.div(index, width, rounding_mode="floor") + 1
        at = _gather_2d(padded)
        center = at(x, y)
        dx = 0.5 * (at(x + 1, y) - at(x - 1, y))
        dy = 0.5 * (at(x, y + 1) - at(x, y - 1))
        dxx = at(x + 1, y) - 2 * center + at(x - 1, y)
        dyy = at(x, y + 1) - 2 * center + at(x, y - 1)
        dxy = 0.25 * (at(x + 1, y + 1) - at(x + 1, y - 1) - at(x - 1, y + 1) + at(x - 1, y - 1))
        det = dxx * dyy - dxy**2
        valid = det.abs() > 1e-12
        safe_det = torch.where(valid, det, torch.ones_like(det))
        offset_x = -(dyy * dx - dxy * dy) / safe_det
        offset_y = -(dxx * dy - dxy * dx) / safe_det
        offsets = torch.stack([offset_x, offset_y], dim=-1)
        # A flat or saddle-shaped neighbourhood gives no trustworthy step: keep the integer peak.
        offsets = torch.where(valid[..., None], offsets, torch.zeros_like(offsets))
        return offsets.clamp(-1.0, 1.0)

    @staticmethod
    def flip_back(heatmaps: torch.Tensor, flip_index: Sequence[int]) -> torch.Tensor:
        """Heatmaps predicted on a mirrored crop -> heatmaps of the original crop."""
        index = torch.as_tensor(flip_index, device=heatmaps.device, dtype=torch.long)
        return heatmaps.flip(-1).index_select(1, index)


def _gather_2d(maps: torch.Tensor):
    """Returns at(x, y): values of (B, K, H, W) maps at per-channel integer positions (B, K)."""
    batch, channels, height, width = maps.shape
    flat = maps.reshape(batch, channels, height * width)

    def at(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.clamp(0, width - 1)
        y = y.clamp(0, height - 1)
        return flat.gather(-1, (y * width + x).unsqueeze(-1)).squeeze(-1)

    return at


def kernel_sigma(kernel_size: int) -> float:
    """The sigma OpenCV gives a Gaussian kernel of this size when asked for sigma 0
    (``cv2.getGaussianKernel``; small sizes use fixed tables of nearly that width): how reference
    code that specifies kernel sizes means its widths."""
    return 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8


def gaussian_blur(maps: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Depth-wise Gaussian smoothing of (B, K, H, W) maps; sigma from the size, as OpenCV does."""
    sigma = kernel_sigma(kernel_size)
    radius = kernel_size // 2
    offsets = torch.arange(-radius, radius + 1, device=maps.device, dtype=maps.dtype)
    kernel_1d = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel_1d = kernel_1d / kernel_1d.sum()
    channels = maps.shape[1]
    horizontal = kernel_1d.view(1, 1, 1, -1).expand(channels, 1, 1, kernel_size)
    vertical = kernel_1d.view(1, 1, -1, 1).expand(channels, 1, kernel_size, 1)
    out = F.conv2d(
        F.pad(maps, (radius, radius, 0, 0), mode="replicate"), horizontal, groups=channels
    )
    return F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), vertical, groups=channels)
