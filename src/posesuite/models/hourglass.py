"""Stacked Hourglass (Newell, Yang and Deng, ECCV 2016), RMPE's single-person pose estimator.

The structure of the authors' public Torch model (github.com/princeton-vl/pose-hg-train,
``hg.lua``), written anew:

- stem: 7x7 conv of stride 2 to 64 (BN, ReLU), residual 64 -> 128, 2x2 max-pool, residual
  128 -> 128, residual 128 -> ``channels`` (256): stride 4;
- each stack: an hourglass of ``depth`` (4) halvings (at every level a residual branch at the
  level's size, and max-pool -> residual -> the next level -> residual -> nearest 2x upsample),
  ``residuals_per_stack`` residuals, a 1x1 conv (BN, ReLU) and a 1x1 conv to the K heatmaps;
  between stacks, the stack's features (1x1 conv) and its heatmaps (1x1 conv K -> channels) are
  added to the stack's input;
- residual: pre-activation bottleneck (BN, ReLU, 1x1 to half; BN, ReLU, 3x3; BN, ReLU, 1x1 back),
  a 1x1 conv on the skip where the width changes.

Outputs: ``heatmaps`` (the last stack's, which the codec decodes) and ``stack_heatmaps``
(B, S, K, h, w), every stack's, for intermediate supervision (`posesuite.losses.StackedMSELoss`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Residual(nn.Module):
    """Pre-activation bottleneck residual of Newell's hourglass."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        middle = out_channels // 2
        self.branch = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, middle, 1),
            nn.BatchNorm2d(middle),
            nn.ReLU(inplace=True),
            nn.Conv2d(middle, middle, 3, padding=1),
            nn.BatchNorm2d(middle),
            nn.ReLU(inplace=True),
            nn.Conv2d(middle, out_channels, 1),
        )
        self.skip = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x) + self.skip(x)


class Hourglass(nn.Module):
    """One hourglass of ``depth`` halvings at a fixed width."""

    def __init__(self, depth: int, channels: int) -> None:
        super().__init__()
        self.upper = Residual(channels, channels)
        self.down = Residual(channels, channels)
        self.inner = Hourglass(depth - 1, channels) if depth > 1 else Residual(channels, channels)
        self.up = Residual(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lower = self.up(self.inner(self.down(F.max_pool2d(x, 2))))
        # Nearest upsampling back to the level's size (odd sizes: the pooled map was floored).
        return self.upper(x) + F.interpolate(lower, size=x.shape[-2:], mode="nearest")


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class StackedHourglass(nn.Module):
    """Args:
    num_keypoints: K.
    stacks: hourglasses in sequence (Newell: 8; RMPE's SPPE: 8 at 320x256 on MPII).
    channels: the hourglasses' width (256).
    depth: halvings per hourglass (4).
    residuals_per_stack: residuals after each hourglass (1).
    """

    def __init__(
        self,
        num_keypoints: int,
        stacks: int = 8,
        channels: int = 256,
        depth: int = 4,
        residuals_per_stack: int = 1,
    ) -> None:
        super().__init__()
        if stacks < 1 or depth < 1:
            raise ValueError(
                f"a stacked hourglass needs stacks >= 1 and depth >= 1: {stacks}, {depth}"
            )
        self.stem = nn.Sequential(
            conv_bn_relu(3, 64, 7, stride=2),
            Residual(64, 128),
            nn.MaxPool2d(2),
            Residual(128, 128),
            Residual(128, channels),
        )
        self.hourglasses = nn.ModuleList(Hourglass(depth, channels) for _ in range(stacks))
        self.features = nn.ModuleList(
            nn.Sequential(
                *(Residual(channels, channels) for _ in range(residuals_per_stack)),
                conv_bn_relu(channels, channels, 1),
            )
            for _ in range(stacks)
        )
        self.heads = nn.ModuleList(nn.Conv2d(channels, num_keypoints, 1) for _ in range(stacks))
        self.merge_features = nn.ModuleList(
            nn.Conv2d(channels, channels, 1) for _ in range(stacks - 1)
        )
        self.merge_heatmaps = nn.ModuleList(
            nn.Conv2d(num_keypoints, channels, 1) for _ in range(stacks - 1)
        )

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(images)
        stack_heatmaps = []
        for index, (hourglass, features, head) in enumerate(
            zip(self.hourglasses, self.features, self.heads, strict=True)
        ):
            y = features(hourglass(x))
            heatmaps = head(y)
            stack_heatmaps.append(heatmaps)
            if index < len(self.merge_features):
                x = x + self.merge_features[index](y) + self.merge_heatmaps[index](heatmaps)
        return {"heatmaps": stack_heatmaps[-1], "stack_heatmaps": torch.stack(stack_heatmaps, 1)}
