"""FastPose's head (AlphaPose's public SPPE): the deepest backbone map through a pixel shuffle,
then dense upsampling convolutions (DUC: 3x3 conv, BN, ReLU, pixel shuffle), then a 3x3 conv to
the K heatmaps. From a ResNet's C5 at stride 32 (2048 channels): shuffle to 512 at stride 16, DUC
512 -> 1024 -> 256 at stride 8, DUC 256 -> 512 -> 128 at stride 4, conv to K; at 256x192 the maps
are 64x48. Each pixel shuffle trades channels for resolution (C, H, W) -> (C / 4, 2H, 2W), so
upsampling costs no interpolation and no transposed convolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class DUC(nn.Sequential):
    """Dense upsampling convolution: 3x3 conv without bias, BN, ReLU, pixel shuffle by 2."""

    def __init__(self, in_channels: int, channels: int) -> None:
        if channels % 4:
            raise ValueError(f"a DUC's channels must divide by 4 (shuffled by 2): {channels}")
        super().__init__(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.PixelShuffle(2),
        )


class DUCHead(nn.Module):
    """Args:
    in_channels: the deepest backbone map's channels (the last entry if a list).
    num_keypoints: K.
    duc_channels: each DUC's conv width (FastPose: 1024, 512); each halves the stride.
    """

    def __init__(
        self,
        in_channels: int | Sequence[int],
        num_keypoints: int,
        duc_channels: Sequence[int] = (1024, 512),
    ) -> None:
        super().__init__()
        channels = in_channels if isinstance(in_channels, int) else list(in_channels)[-1]
        if channels % 4:
            raise ValueError(f"the backbone map's {channels} channels do not shuffle by 2")
        self.shuffle = nn.PixelShuffle(2)
        channels //= 4
        blocks = []
        for width in duc_channels:
            blocks.append(DUC(channels, width))
            channels = width // 4
        self.duc = nn.Sequential(*blocks)
        self.final = nn.Conv2d(channels, num_keypoints, 3, padding=1)

    def forward(self, features: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"heatmaps": self.final(self.duc(self.shuffle(features[-1])))}
