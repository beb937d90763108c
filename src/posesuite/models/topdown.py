"""Top-down network: backbone + head; outputs a dict that the loss and codec read by name."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from posesuite.models.backbones import TimmBackbone


class TopDownNet(nn.Module):
    """``head`` is a factory taking the backbone's channel list as ``in_channels`` (Hydra
    ``_partial_: true``): heads that read one level get the last entry."""

    def __init__(self, backbone: TimmBackbone, head: Callable[..., nn.Module]) -> None:
        super().__init__()
        self.backbone = backbone
        channels = backbone.out_channels
        self.head = head(in_channels=channels[-1] if len(channels) == 1 else channels)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(self.backbone(images))
