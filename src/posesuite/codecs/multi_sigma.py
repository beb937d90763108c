"""Heatmap codec with one extra Gaussian target per pyramid level (CPN's GlobalNet).

Widths are given as kernel sizes because that is how CPN specifies them: its code blurs a delta
with ``cv2.GaussianBlur(k, 0)``, i.e. sigma = 0.3 ((k - 1) / 2 - 1) + 0.8 (``kernel_sigma``). We
draw untruncated Gaussians of that sigma at the sub-pixel keypoint, peak 1, like the base codec;
the official targets are truncated at the kernel's edge (about 10% of the peak for k = 7, so their
measured width is 2-3% smaller), centred on the pixel the keypoint truncates to and scaled to a
peak of 255.

Level-to-kernel assignment (256x192, kernels 7/9/11/15):
- official code (tf-cpn): the finest level C2 gets 15 and C5 gets 7 - a comment there says the
  labels are reversed from what was intended, kept to reproduce the released model;
- the best-known PyTorch port (GengDavid/pytorch-cpn): C5 gets 15 and C2 gets 7, the coarse
  level the wide target.
``global_kernel_sizes`` is listed finest level first (C2, C3, C4, C5), the order of the backbone's
``out_indices`` and of the network's ``global_heatmaps``; the configs default to the official
order, the one that trained the released models.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from posesuite.codecs.heatmap import HeatmapCodec, fitting_peak_blur, kernel_sigma


class MultiSigmaHeatmapCodec(HeatmapCodec):
    """``heatmaps`` (the RefineNet target, width ``kernel_size``) plus ``global_heatmaps``
    (B, L, K, h, w), one target per entry of ``global_kernel_sizes``, finest level first.

    ``peak_blur_kernel``: odd size of a Gaussian smoothing applied before the maximum is located
    at decoding (1: none). CPN's test code blurs with 21, zero padding, then steps 0.25 px toward
    the second maximum of the blurred map: ``refine="second_max"`` with kernel 21 is that decode
    (``refine="shift"`` the axis-wise quarter shift on the same blurred map). The refinement
    works on the blurred map. Near the border the zero padding would pull the blurred maximum
    inward (up to 0.75 px for kernel 21 on kernel-7 targets), so a map keeps the largest kernel,
    up to this size, whose blurred maximum lies at least the kernel's radius + 1 pixels from the
    border (the maximum and its neighbours then see no padding); radius 0 (no blur) is the last
    resort. Scores stay the maxima of the unsmoothed heatmaps, which the rescoring thresholds
    expect.
    Other arguments are the base codec's.
    """

    def __init__(
        self,
        input_size: Sequence[int],
        heatmap_size: Sequence[int],
        global_kernel_sizes: Sequence[int] = (15, 11, 9, 7),
        kernel_size: int = 7,
        refine: str = "shift",
        blur_kernel: int = 11,
        peak_blur_kernel: int = 1,
        out_of_crop: str = "drop",
    ) -> None:
        for size in (*global_kernel_sizes, kernel_size, peak_blur_kernel):
            if size < 1 or size % 2 != 1:
                raise ValueError(f"kernel sizes must be odd and positive, got {size}")
        super().__init__(
            input_size,
            heatmap_size,
            sigma=kernel_sigma(kernel_size),
            refine=refine,
            blur_kernel=blur_kernel,
            out_of_crop=out_of_crop,
        )
        self.global_sigmas = [kernel_sigma(size) for size in global_kernel_sizes]
        self.peak_blur_kernel = peak_blur_kernel

    def encode_keypoints(
        self,
        keypoints: torch.Tensor,
        keypoint_weight: torch.Tensor,
        visibility: torch.Tensor | None = None,
        keypoint_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        targets = super().encode_keypoints(keypoints, keypoint_weight, visibility, keypoint_mask)
        mask = targets["target_weight"][..., None, None]
        targets["global_heatmaps"] = torch.stack(
            [self.gaussian_heatmaps(keypoints, sigma) * mask for sigma in self.global_sigmas],
            dim=1,
        )
        return targets

    def decode_heatmaps(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.peak_blur_kernel == 1:
            return super().decode_heatmaps(heatmaps)
        heatmaps = heatmaps.float()
        smoothed, index, radius = fitting_peak_blur(heatmaps, self.peak_blur_kernel)
        points = self._refine_peaks(smoothed, index, blurred_radius=radius)
        return self.heatmap_to_crop(points), heatmaps.flatten(-2).amax(dim=-1)
