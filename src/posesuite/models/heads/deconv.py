"""SimpleBaseline head: transposed convolutions up to stride 4, then a 1x1 conv to K heatmaps."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class DeconvHead(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_keypoints: int,
        deconv_channels: Sequence[int] = (256, 256, 256),
        kernel_size: int = 4,
    ) -> None:
        super().__init__()
        padding, output_padding = {4: (1, 0), 3: (1, 1), 2: (0, 0)}[kernel_size]
        layers: list[nn.Module] = []
        channels = in_channels
        for out_channels in deconv_channels:
            layers += [
                nn.ConvTranspose2d(
                    channels,
                    out_channels,
                    kernel_size,
                    stride=2,
                    padding=padding,
                    output_padding=output_padding,
                    bias=False,
                ),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
            channels = out_channels
        self.deconv = nn.Sequential(*layers)
        self.final = nn.Conv2d(channels, num_keypoints, kernel_size=1)
        for module in self.modules():
            if isinstance(module, nn.ConvTranspose2d):
                nn.init.normal_(module.weight, std=0.001)
        nn.init.normal_(self.final.weight, std=0.001)
        nn.init.zeros_(self.final.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"heatmaps": self.final(self.deconv(features[-1]))}
