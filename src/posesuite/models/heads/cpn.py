"""Cascaded Pyramid Network head (Chen et al., CVPR 2018): GlobalNet + RefineNet.

Follows the official TensorFlow code (chenyilun95/tf-cpn) where the paper leaves a detail open:

- GlobalNet: per level, a lateral 1x1 conv to 256 (BN, ReLU); the coarser level's map is
  upsampled, passed through a 1x1 conv (with bias, no BN) and added. Each level's predictor is a
  1x1 conv to 256 (BN, ReLU) then a 3x3 conv to K, resized to stride 4.
- RefineNet: level i (C2 = 0) goes through i bottlenecks (256 out, 128 mid, identity shortcut),
  is upsampled to stride 4; the concatenation (1024 channels for four levels) goes through one
  bottleneck with a projection shortcut and a 3x3 conv to K.
- One deliberate departure: the five 3x3 convs to K end without BatchNorm (a bias instead, small
  initial weights, as in SimpleBaseline's head). The official code normalises them too, which
  makes every heatmap channel unit-variance at the start while the targets' standard deviation is
  about 0.07: the maps fit only once each BN scale has shrunk some 15-fold. Over the paper's 400
  epochs that is a detail; on short budgets it is the whole run - measured on
  ``cpn_res18_synthetic-128x96``, the scales were still 0.89 (Adam 5e-4) and 0.30 (4e-3) after
  600 steps and AP stayed at 0.000 (experiments/cpn/README.md).
- Every resize is bilinear, as in both the official code and the best-known PyTorch port
  (GengDavid/pytorch-cpn). We use half-pixel sampling (``align_corners=False``): it maps pixel
  centres between strides exactly under the codec's convention (pixel u of a stride-s map covers
  input pixels [u s, (u + 1) s)), where TF1's ``resize_bilinear`` and the port's
  ``align_corners=True`` each shift the map by a fraction of a pixel.

Outputs: ``heatmaps`` (B, K, h, w), the RefineNet prediction (or, with ``use_refine=False``, the
finest GlobalNet prediction: the paper's "GlobalNet only" ablation) and, in training mode only,
``global_heatmaps`` (B, L, K, h, w), the L GlobalNet predictions, finest level (C2) first, all
at stride 4. Batch first, like every other tensor the network and the codec exchange.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Weights keep PyTorch's default initialisation, except the heatmap convs': every other conv but
# the merge conv is followed by BatchNorm, which removes the initial scale.


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, relu: bool = True) -> nn.Module:
    """Conv without bias (the BN supplies it), BN, then ReLU unless ``relu`` is false."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def resize(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize with half-pixel sampling; a no-op when the size already matches."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)


def heatmap_conv(in_channels: int, num_keypoints: int) -> nn.Conv2d:
    """3x3 conv to one map per keypoint, no BN (see the module docstring): near-zero maps at the
    start, like the targets' background."""
    conv = nn.Conv2d(in_channels, num_keypoints, kernel_size=3, padding=1)
    nn.init.normal_(conv.weight, std=0.001)
    nn.init.zeros_(conv.bias)
    return conv


class Bottleneck(nn.Module):
    """ResNet bottleneck with free widths; a projection shortcut only when the widths differ."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            conv_bn(in_channels, mid_channels, 1),
            conv_bn(mid_channels, mid_channels, 3),
            conv_bn(mid_channels, out_channels, 1, relu=False),
        )
        self.shortcut = (
            nn.Identity()
            if in_channels == out_channels
            else conv_bn(in_channels, out_channels, 1, relu=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.residual(x) + self.shortcut(x))


class GlobalNet(nn.Module):
    """Feature pyramid over the backbone levels (finest first) with one predictor per level."""

    def __init__(self, in_channels: Sequence[int], num_keypoints: int, channels: int = 256) -> None:
        super().__init__()
        self.laterals = nn.ModuleList(conv_bn(c, channels, 1) for c in in_channels)
        # merges[i] brings level i + 1 into level i.
        self.merges = nn.ModuleList(
            nn.Conv2d(channels, channels, kernel_size=1) for _ in in_channels[:-1]
        )
        self.predictors = nn.ModuleList(
            nn.Sequential(conv_bn(channels, channels, 1), heatmap_conv(channels, num_keypoints))
            for _ in in_channels
        )

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Backbone maps (finest first) -> pyramid maps, finest first."""
        top = self.laterals[-1](features[-1])
        pyramid = [top]
        for level in range(len(features) - 2, -1, -1):
            lateral = self.laterals[level](features[level])
            top = lateral + self.merges[level](resize(top, lateral.shape[-2:]))
            pyramid.insert(0, top)
        return pyramid

    def predict(self, pyramid: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Heatmaps of the given pyramid levels (the first ones, finest first), all at the size
        of the first."""
        return [
            resize(predictor(level_map), pyramid[0].shape[-2:])
            for predictor, level_map in zip(self.predictors, pyramid, strict=False)
        ]


class RefineNet(nn.Module):
    """Deeper levels get more bottlenecks; all are upsampled to stride 4, concatenated, fused."""

    def __init__(
        self,
        num_levels: int,
        num_keypoints: int,
        channels: int = 256,
        mid_channels: int = 128,
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*(Bottleneck(channels, mid_channels, channels) for _ in range(level)))
            for level in range(num_levels)
        )
        self.fuse = Bottleneck(channels * num_levels, mid_channels, channels)
        self.predictor = heatmap_conv(channels, num_keypoints)

    def forward(self, pyramid: Sequence[torch.Tensor]) -> torch.Tensor:
        size = pyramid[0].shape[-2:]
        refined = [
            resize(branch(level_map), size)
            for branch, level_map in zip(self.branches, pyramid, strict=True)
        ]
        return self.predictor(self.fuse(torch.cat(refined, dim=1)))


class CPNHead(nn.Module):
    """GlobalNet + RefineNet on a multi-level backbone (e.g. ResNet ``out_indices: [1, 2, 3, 4]``).

    ``use_refine=False`` builds GlobalNet alone; ``heatmaps`` is then its finest prediction.
    ``global_heatmaps`` is returned in training mode only (see the module docstring).
    """

    def __init__(
        self,
        in_channels: Sequence[int] | int,
        num_keypoints: int,
        use_refine: bool = True,
        channels: int = 256,
        mid_channels: int = 128,
    ) -> None:
        super().__init__()
        if isinstance(in_channels, int) or len(in_channels) < 2:
            raise ValueError(
                "CPNHead needs several backbone levels, finest first: set the backbone's "
                f"out_indices to e.g. [1, 2, 3, 4] (got in_channels={in_channels})"
            )
        self.global_net = GlobalNet(in_channels, num_keypoints, channels)
        self.refine_net = (
            RefineNet(len(in_channels), num_keypoints, channels, mid_channels)
            if use_refine
            else None
        )

    def forward(self, features: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        pyramid = self.global_net(features)
        # GlobalNet's predictions only supervise training: inference runs at most the finest
        # one, as the official test graph does, which saves 6% of CPN-R50's multiply-accumulates.
        levels = len(pyramid) if self.training else int(self.refine_net is None)
        global_heatmaps = self.global_net.predict(pyramid[:levels])
        heatmaps = global_heatmaps[0] if self.refine_net is None else self.refine_net(pyramid)
        if not self.training:
            return {"heatmaps": heatmaps}
        return {"heatmaps": heatmaps, "global_heatmaps": torch.stack(global_heatmaps, dim=1)}
