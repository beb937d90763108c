"""SimpleBaseline head: transposed convolutions up to stride 4, then a 1x1 conv to K heatmaps.

Given several backbone levels (finest first, e.g. C2-C5), each upsampled map also receives a 1x1
projection of the backbone map at its stride (lateral skip connections, as in FPN or U-Net). At
small inputs the deepest map is tiny (3x4 cells at 96x128), and the skips carry the position
detail it cannot. With skips, any input side that is a multiple of 4 gives maps at stride 4.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class DeconvHead(nn.Module):
    def __init__(
        self,
        in_channels: int | Sequence[int],
        num_keypoints: int,
        deconv_channels: Sequence[int] = (256, 256, 256),
        kernel_size: int = 4,
    ) -> None:
        super().__init__()
        levels = [in_channels] if isinstance(in_channels, int) else list(in_channels)
        skip_channels = levels[-2::-1]  # the levels below the deepest, coarse to fine
        if len(skip_channels) > len(deconv_channels):
            raise ValueError(
                f"{len(levels)} backbone levels need at least {len(levels) - 1} deconvolutions "
                f"to reach the finest, got deconv_channels={list(deconv_channels)}"
            )
        padding, output_padding = {4: (1, 0), 3: (1, 1), 2: (0, 0)}[kernel_size]
        self.upsample = nn.ModuleList()
        self.laterals = nn.ModuleList()
        channels = levels[-1]
        for index, out_channels in enumerate(deconv_channels):
            self.upsample.append(
                nn.Sequential(
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
                )
            )
            if index < len(skip_channels):
                self.laterals.append(
                    nn.Sequential(
                        nn.Conv2d(skip_channels[index], out_channels, 1, bias=False),
                        nn.BatchNorm2d(out_channels),
                    )
                )
            channels = out_channels
        self.activation = nn.ReLU(inplace=True)
        self.final = nn.Conv2d(channels, num_keypoints, kernel_size=1)
        for module in self.upsample.modules():
            if isinstance(module, nn.ConvTranspose2d):
                nn.init.normal_(module.weight, std=0.001)
        nn.init.normal_(self.final.weight, std=0.001)
        nn.init.zeros_(self.final.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        x = features[-1]
        for index, upsample in enumerate(self.upsample):
            x = upsample(x)
            if index < len(self.laterals):
                skip = features[-2 - index]
                # A side that is not a multiple of the deepest stride rounds the coarse maps up
                # (48 px: C5 has 2 cells, C4 3): trim the upsampled map to the skip's size.
                x = x[..., : skip.shape[-2], : skip.shape[-1]] + self.laterals[index](skip)
            x = self.activation(x)
        return {"heatmaps": self.final(x)}
