"""Gaussian heatmap codec.

Targets are encoded in batch on the training device from crop-space keypoints, never in the
data-loader workers. Crop and heatmap coordinates follow the geometry convention of
`posesuite.data.geometry` (pixel centres at integers, edges aligned), so a heatmap pixel u maps to
crop pixel (u + 0.5) * stride - 0.5 and a horizontal flip of the heatmap is exact: no one-pixel
shift is needed after flipping back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

REFINEMENTS = ("dark", "shift", "second_max", "none")
OUT_OF_CROP_RULES = ("drop", "overlap")


class HeatmapCodec:
    """Keypoints <-> Gaussian heatmaps, decoding with sub-pixel refinement.

    Args:
        input_size: network input (W, H) in pixels.
        heatmap_size: output heatmap (W, H).
        sigma: Gaussian standard deviation in heatmap pixels.
        refine: the step from the integer maximum to the decoded position:
            ``dark`` (Newton step on the log of the smoothed heatmap, DARK, CVPR 2020),
            ``shift`` (0.25 px along each axis toward the higher neighbour, the classic rule),
            ``second_max`` (0.25 px along the unit vector toward the map's second highest pixel,
            CPN's test code) or ``none``.
        blur_kernel: odd size of the Gaussian smoothing used by ``dark`` (1: none).
        out_of_crop: which labelled joints that fall outside the crop are trained: ``drop``
            (weight 0, the default) or ``overlap`` (kept while their Gaussian reaches the map
            within 3 sigma, as mmpose does); see `target_weight`.

    Decoding at the border. Smoothing pads with zeros, as DARK's and CPN's reference code do,
    not by replication (which raises the outside of the map to its edge value and pulls a peak
    near the edge outward: up to 1.3 px with ``dark``, 2.3 px with a blur of 21). Zero padding
    has the opposite bias: a peak near the edge loses more of its smoothing on the outer side and
    moves inward (up to 0.8 px for kernel 11 on sigma-2 targets). So ``dark`` smooths each map
    with the largest kernel, up to ``blur_kernel``, whose support around the whole 3x3 stencil
    of the maximum stays in the map (kernel radius <= distance to the border - 1; no smoothing
    one pixel from the border); the stencil's values are then those of the interior and clean
    targets decode exactly (within 0.001 px) wherever the stencil fits, 1 <= x <= W - 2 and
    1 <= y <= H - 2. A maximum on the border row or column (no outer neighbour), or a stencil
    whose log is not concave, gets the quarter shift instead. The quarter shift reads a neighbour
    outside the map as 0 and never points out of the map at its border; every decoded position
    is clamped to the map.
    """

    def __init__(
        self,
        input_size: Sequence[int],
        heatmap_size: Sequence[int],
        sigma: float = 2.0,
        refine: str = "dark",
        blur_kernel: int = 11,
        out_of_crop: str = "drop",
    ) -> None:
        if out_of_crop not in OUT_OF_CROP_RULES:
            raise ValueError(f"out_of_crop must be one of {OUT_OF_CROP_RULES}, got {out_of_crop!r}")
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
        self.out_of_crop = out_of_crop

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

    def encode_keypoints(
        self,
        keypoints: torch.Tensor,
        keypoint_weight: torch.Tensor,
        visibility: torch.Tensor | None = None,
        keypoint_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Targets from (B, K, 2) crop-space keypoints: ``heatmaps`` (B, K, h, w) and
        ``target_weight`` (B, K); when given, the ``visibility`` flags (B, K), for losses that
        treat occluded joints apart, and the ``keypoint_mask`` (B, K) of the joints the
        sample's source annotates at all (the others get weight 0)."""
        weight = self.target_weight(keypoints, keypoint_weight, visibility)
        if keypoint_mask is not None:
            weight = weight * keypoint_mask
        targets = {
            "heatmaps": self.gaussian_heatmaps(keypoints) * weight[..., None, None],
            "target_weight": weight,
        }
        if visibility is not None:
            targets["visibility"] = visibility
        if keypoint_mask is not None:
            targets["keypoint_mask"] = keypoint_mask
        return targets

    def target_weight(
        self,
        keypoints: torch.Tensor,
        keypoint_weight: torch.Tensor,
        visibility: torch.Tensor | None,
    ) -> torch.Tensor:
        """Which joints are trained (B, K), by ``out_of_crop``: ``drop`` keeps the data's weight
        (labelled joints inside the crop); ``overlap`` keeps every labelled joint whose Gaussian
        reaches the map within 3 sigma, as mmpose does, so a joint just outside the crop still
        pulls its edge of the map up."""
        if self.out_of_crop == "drop":
            return keypoint_weight.float()
        if visibility is None:
            raise ValueError("out_of_crop='overlap' needs the visibility flags of the batch")
        centers = self.crop_to_heatmap(keypoints.float())
        reach = 3 * self.sigma
        upper = centers.new_tensor(self.heatmap_size) - 1 + reach
        overlaps = ((centers >= -reach) & (centers <= upper)).all(-1)
        return ((visibility > 0) & overlaps).float()

    # --- decoding ----------------------------------------------------------------------------
    def decode_heatmaps(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K, h, w) -> crop-space keypoints (B, K, 2) and scores (B, K) (heatmap maxima)."""
        heatmaps = heatmaps.float()
        scores, index = heatmaps.flatten(-2).max(dim=-1)
        return self.heatmap_to_crop(self._refine_peaks(heatmaps, index)), scores

    def _refine_peaks(
        self,
        maps: torch.Tensor,
        index: torch.Tensor,
        blurred_radius: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Heatmap coordinates (B, K, 2) of the maxima at flat ``index`` (B, K), refined.

        ``blurred_radius`` (B, K): the radius of a smoothing ``maps`` already went through, so
        that DARK's own smoothing keeps the sum of both within the map. The result lies in the map.
        """
        height, width = maps.shape[-2:]
        x, y = index % width, torch.div(index, width, rounding_mode="floor")
        points = torch.stack([x, y], dim=-1).float()
        if self.refine == "dark":
            points = points + self._dark_offsets(maps, index, blurred_radius)
        elif self.refine == "shift":
            points = points + 0.25 * self._neighbour_signs(maps, index)
        elif self.refine == "second_max":
            points = points + _second_max_offsets(maps, index)
        limit = points.new_tensor([width - 1, height - 1])
        return torch.minimum(points.clamp_min(0.0), limit)

    def _neighbour_signs(self, heatmaps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Per axis, the sign of (next - previous neighbour) at the maximum: the quarter shift's
        direction. A neighbour outside the map counts as 0 (zero padding), and at the border the
        sign never points out of the map."""
        padded = F.pad(heatmaps, (1, 1, 1, 1))
        height, width = heatmaps.shape[-2:]
        x, y = index % width, torch.div(index, width, rounding_mode="floor")
        at = _gather_2d(padded)
        sign_x = torch.sign(at(x + 2, y + 1) - at(x, y + 1))
        sign_y = torch.sign(at(x + 1, y + 2) - at(x + 1, y))
        sign_x = torch.where(x == 0, sign_x.clamp_min(0), sign_x)
        sign_x = torch.where(x == width - 1, sign_x.clamp_max(0), sign_x)
        sign_y = torch.where(y == 0, sign_y.clamp_min(0), sign_y)
        sign_y = torch.where(y == height - 1, sign_y.clamp_max(0), sign_y)
        return torch.stack([sign_x, sign_y], dim=-1)

    def _dark_offsets(
        self,
        heatmaps: torch.Tensor,
        index: torch.Tensor,
        blurred_radius: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Newton step on the log of the smoothed heatmap at its maximum (DARK, CVPR 2020).

        The smoothing of each map is the largest Gaussian of at most ``blur_kernel`` whose
        support, around every pixel of the 3x3 stencil, stays inside the map, so zero padding
        never enters the stencil's values. Where the stencil itself leaves the map (a maximum on
        the border row or column), or the smoothed log map is not concave there, the step is
        the quarter-pixel shift instead.
        """
        height, width = heatmaps.shape[-2:]
        x, y = index % width, torch.div(index, width, rounding_mode="floor")
        margin = _border_margin(index, height, width)
        used = 0 if blurred_radius is None else blurred_radius
        radius = (margin - 1 - used).clamp(0, self.blur_kernel // 2)
        smoothed = _blur_each(heatmaps, radius)
        # Keep each map's peak height, as the reference method does, then work in log space
        # (a factor per map: it moves the log by a constant and leaves the step unchanged).
        peak = heatmaps.amax(dim=(-2, -1), keepdim=True)
        smoothed = smoothed * peak / smoothed.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-10)
        log_map = torch.log(smoothed.clamp_min(1e-10))
        at = _gather_2d(log_map)
        center = at(x, y)
        dx = 0.5 * (at(x + 1, y) - at(x - 1, y))
        dy = 0.5 * (at(x, y + 1) - at(x, y - 1))
        dxx = at(x + 1, y) - 2 * center + at(x - 1, y)
        dyy = at(x, y + 1) - 2 * center + at(x, y - 1)
        dxy = 0.25 * (at(x + 1, y + 1) - at(x + 1, y - 1) - at(x - 1, y + 1) + at(x - 1, y - 1))
        det = dxx * dyy - dxy**2
        # Only a negative-definite Hessian (a maximum) gives a trustworthy step.
        usable = (margin >= 1) & (dxx < 0) & (det > 1e-12)
        safe_det = torch.where(usable, det, torch.ones_like(det))
        offset_x = -(dyy * dx - dxy * dy) / safe_det
        offset_y = -(dxx * dy - dxy * dx) / safe_det
        newton = torch.stack([offset_x, offset_y], dim=-1).clamp(-1.0, 1.0)
        fallback = 0.25 * self._neighbour_signs(heatmaps, index)
        return torch.where(usable[..., None], newton, fallback)

    @staticmethod
    def flip_back(heatmaps: torch.Tensor, flip_index: Sequence[int]) -> torch.Tensor:
        """Heatmaps predicted on a mirrored crop -> heatmaps of the original crop."""
        index = torch.as_tensor(flip_index, device=heatmaps.device, dtype=torch.long)
        return heatmaps.flip(-1).index_select(1, index)

    # --- the codec protocol (posesuite.codecs.base.KeypointCodec) -----------------------------
    def encode(
        self, batch: Mapping[str, Any], outputs: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        self.check_heatmaps(outputs["heatmaps"])
        return self.encode_keypoints(
            batch["keypoints"],
            batch["keypoint_weight"],
            batch.get("visibility"),
            batch.get("keypoint_mask"),
        )

    def decode(
        self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_heatmaps(outputs["heatmaps"])
        return self.decode_heatmaps(outputs["heatmaps"])

    def flip_test(
        self,
        outputs: Mapping[str, torch.Tensor],
        flipped_outputs: Mapping[str, torch.Tensor],
        batch: Mapping[str, Any],
        flip_index: Sequence[int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decodes the average of the heatmaps and the mirrored crop's heatmaps flipped back
        (exact in posesuite's geometry: no one-pixel shift)."""
        heatmaps = outputs["heatmaps"].float()
        self.check_heatmaps(heatmaps)
        flipped = self.flip_back(flipped_outputs["heatmaps"].float(), flip_index)
        return self.decode_heatmaps(0.5 * (heatmaps + flipped))

    def check_heatmaps(self, heatmaps: torch.Tensor) -> None:
        """The network's maps must have the codec's size, or targets and decoding would not
        line up with them (e.g. an input side that is not a multiple of the backbone stride)."""
        width, height = self.heatmap_size
        if tuple(heatmaps.shape[-2:]) != (height, width):
            raise ValueError(
                f"the network outputs {heatmaps.shape[-1]}x{heatmaps.shape[-2]} (W x H) heatmaps "
                f"for {self.input_size} inputs, but model.heatmap_size is "
                f"[{width}, {height}]: make model.input_size a multiple of the backbone's stride "
                "or set model.heatmap_size to what the network gives"
            )


def _gather_2d(maps: torch.Tensor):
    """Returns at(x, y): values of (B, K, H, W) maps at per-channel integer positions (B, K)
    (positions outside the map read its nearest pixel; callers keep to the map)."""
    batch, channels, height, width = maps.shape
    flat = maps.reshape(batch, channels, height * width)

    def at(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.clamp(0, width - 1)
        y = y.clamp(0, height - 1)
        return flat.gather(-1, (y * width + x).unsqueeze(-1)).squeeze(-1)

    return at


def _border_margin(index: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixels between the flat positions ``index`` and the nearest map border (0 on it)."""
    x, y = index % width, torch.div(index, width, rounding_mode="floor")
    return torch.minimum(torch.minimum(x, width - 1 - x), torch.minimum(y, height - 1 - y))


def _second_max_offsets(maps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """0.25 px along the unit vector from the maximum at ``index`` toward the map's second
    highest pixel (CPN's test code, tf-cpn ``mptest.py``). The second maximum lies in the map, so
    the step never leaves it."""
    width = maps.shape[-1]
    flat = maps.flatten(-2).clone()
    flat.scatter_(-1, index.unsqueeze(-1), float("-inf"))
    second = flat.argmax(dim=-1)
    step = torch.stack(
        [
            (second % width - index % width).float(),
            (
                torch.div(second, width, rounding_mode="floor")
                - torch.div(index, width, rounding_mode="floor")
            ).float(),
        ],
        dim=-1,
    )
    length = step.norm(dim=-1, keepdim=True)
    return torch.where(length > 0, 0.25 * step / length.clamp_min(1e-12), torch.zeros_like(step))


def _blur_each(maps: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) maps, each smoothed with the Gaussian kernel of size 2 r + 1 for its entry r
    of ``radius`` (B, K) (0: unchanged)."""
    out = maps.clone()
    for r in radius.unique().tolist():
        if r > 0:
            chosen = radius == r
            out[chosen] = gaussian_blur(maps[chosen].unsqueeze(0), 2 * r + 1).squeeze(0)
    return out


def fitting_peak_blur(
    maps: torch.Tensor, kernel_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Maxima of the maps after a Gaussian smoothing of size ``kernel_size``, the kernel made
    smaller for a map whose maximum would otherwise see the zero padding.

    With zero padding, a peak within the kernel's radius of the border loses the part of its
    smoothing that falls outside the map, asymmetrically, and the smoothed maximum moves inward.
    So a map whose smoothed maximum lies less than r + 1 pixels from the border (r: the kernel's
    radius) is smoothed again with a smaller kernel, of radius at most that distance - 1, until
    the maximum lies at least r + 1 pixels in: the maximum and its eight neighbours are then
    untouched by the padding, as in the interior. Radius 0 (no smoothing) is the last resort.
    Returns the smoothed maps (B, K, H, W), the flat index of their maxima (B, K) and the radius
    used (B, K).
    """
    height, width = maps.shape[-2:]
    smoothed = maps.clone()
    radius = torch.full(maps.shape[:2], kernel_size // 2, dtype=torch.long, device=maps.device)
    index = torch.zeros_like(radius)
    pending = torch.ones_like(radius, dtype=torch.bool)
    while pending.any():
        for r in radius[pending].unique().tolist():
            rows, cols = (pending & (radius == r)).nonzero(as_tuple=True)
            candidates = maps[rows, cols]
            if r > 0:
                candidates = gaussian_blur(candidates.unsqueeze(0), 2 * r + 1).squeeze(0)
            peaks = candidates.flatten(-2).argmax(dim=-1)
            margin = _border_margin(peaks, height, width)
            fits = (margin >= r + 1) | (r == 0)
            smoothed[rows[fits], cols[fits]] = candidates[fits]
            index[rows[fits], cols[fits]] = peaks[fits]
            pending[rows[fits], cols[fits]] = False
            # Next try: a radius that would fit around this maximum, and smaller than this one.
            shrunk = torch.minimum(margin - 1, torch.full_like(margin, r - 1)).clamp_min(0)
            radius[rows[~fits], cols[~fits]] = shrunk[~fits]
    return smoothed, index, radius


def kernel_sigma(kernel_size: int) -> float:
    """The sigma OpenCV gives a Gaussian kernel of this size when asked for sigma 0
    (``cv2.getGaussianKernel``; small sizes use fixed tables of nearly that width): how reference
    code that specifies kernel sizes means its widths."""
    return 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8


def gaussian_blur(maps: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Depth-wise Gaussian smoothing of (B, K, H, W) maps; sigma from the size, as OpenCV does.

    Pads with zeros, as DARK's and CPN's reference code do (a heatmap is 0 outside the crop):
    near the border the smoothed values lack the part of the kernel that falls outside the map.
    """
    if kernel_size == 1:
        return maps
    sigma = kernel_sigma(kernel_size)
    radius = kernel_size // 2
    offsets = torch.arange(-radius, radius + 1, device=maps.device, dtype=maps.dtype)
    kernel_1d = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel_1d = kernel_1d / kernel_1d.sum()
    channels = maps.shape[1]
    horizontal = kernel_1d.view(1, 1, 1, -1).expand(channels, 1, 1, kernel_size)
    vertical = kernel_1d.view(1, 1, -1, 1).expand(channels, 1, kernel_size, 1)
    out = F.conv2d(maps, horizontal, padding=(0, radius), groups=channels)
    return F.conv2d(out, vertical, padding=(radius, 0), groups=channels)
