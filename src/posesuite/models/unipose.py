"""UniPose (Artacho and Savakis, CVPR 2020): ResNet at output stride 16, a Waterfall Atrous
Spatial Pooling module (WASP), and a decoder that merges the layer1 features at stride 8.

Follows the released code (github.com/bmartacho/UniPose, bf53632) where the paper leaves a
detail open:

- Backbone: ResNet-101 with C5 dilated to output stride 16 and DeepLabv3's multi-grid (C5 blocks
  dilated 2, 4, 8: ``TimmBackbone(multi_grid=[1, 2, 4])``); it returns layer1 (C2, stride 4) and
  C5 (stride 16).
- WASP: a 1x1 conv 2048 -> 256 (BN, ReLU), then a waterfall of 3x3 atrous convs 256 -> 256
  (BN, ReLU), each fed by the previous one, at ``rates``: released 18, 12, 6 (its list reads
  24, 18, 12, 6, but the rate-24 entry goes to the 1x1 conv, where a dilation does nothing); the
  paper's 6, 12, 18, 24 make one branch more. Every branch's output then passes twice through
  one 1x1 conv 256 -> 256 shared by all branches (no bias, no BN; ``shared_branch_convs=False``
  gives each branch its own two, as the WASP figure draws them). A global-average-pool branch
  (1x1 2048 -> 256, BN, ReLU, broadcast to the map) joins them; concatenation, 1x1 to 256, BN,
  ReLU, dropout 0.5.
- Decoder: layer1 through 1x1 256 -> 48 (BN, ReLU) and a 3x3 max-pool of stride 2 (stride 8);
  the pooled 256 channels upsampled to it and concatenated (304); 3x3 conv to 256 (BN, ReLU,
  dropout 0.5), 3x3 conv to 256 (BN, ReLU, dropout 0.1), 1x1 conv to K + 1 maps, channel 0 the
  background (`posesuite.codecs.background`).
- Output at stride 8, as released (``upsample_to_input=False``), or bilinearly upsampled to the
  input size, as the paper describes (``upsample_to_input=True``).

Departures: every resize uses half-pixel sampling (``align_corners=False``), which maps pixel
centres between strides exactly under the codecs' convention, where the released code aligns
corners; the last 1x1 conv starts from small weights (std 0.001, zero bias, as the other heads
here) instead of Kaiming's, so the first maps are near zero rather than unit-variance noise.

``pooling`` switches the module for the ablations: ``wasp``; ``aspp`` (DeepLabv3's parallel
pyramid: the 1x1 and each atrous conv read the backbone map itself, plus the pooling branch,
with the same fusion); ``none`` (a 1x1 conv 2048 -> 256, BN, ReLU, so the decoder is unchanged).

Parameters (K = 16, MPII): the released model has 47,547,313 = ResNet-101 without its classifier
42,500,160 + WASP 3,214,336 + decoder 1,832,817. The released decoder builds a 1x1 conv
2048 -> 256 and its BN (524,288 + 512) that its forward never calls (commented out); they are
left out here, so this network has 47,022,513 (-1.10%). The count includes the background map:
the last conv has 17 outputs (4,369 parameters).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from posesuite.models.backbones import TimmBackbone

POOLING_MODULES = ("wasp", "aspp", "none")


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1
) -> nn.Sequential:
    """Conv without bias (the BN supplies it), BN, ReLU; 3x3 convs keep the map's size."""
    return nn.Sequential(
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            padding=dilation * (kernel_size // 2),
            dilation=dilation,
            bias=False,
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def resize(maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize with half-pixel sampling; a no-op when the size already matches."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)


class ImagePooling(nn.Module):
    """Global average pool, 1x1 conv (BN, ReLU), broadcast back to the map's size."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.project = conv_bn_relu(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.project(x.mean(dim=(-2, -1), keepdim=True))
        return pooled.expand(-1, -1, *x.shape[-2:])


class AtrousPooling(nn.Module):
    """WASP (``waterfall=True``) or ASPP (``waterfall=False``); see the module docstring.

    ``branch_outputs(x)`` gives the branches before fusion (the 1x1 first, then one per rate,
    then the pooling branch), for inspection.
    """

    def __init__(
        self,
        in_channels: int,
        rates: Sequence[int],
        channels: int = 256,
        waterfall: bool = True,
        shared_branch_convs: bool = True,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if not rates:
            raise ValueError("the atrous pooling module needs at least one rate")
        self.waterfall = waterfall
        self.reduce = conv_bn_relu(in_channels, channels)
        atrous_in = channels if waterfall else in_channels
        self.atrous = nn.ModuleList(
            conv_bn_relu(atrous_in, channels, 3, dilation=rate) for rate in rates
        )
        # The released WASP sends every branch twice through one 1x1 conv; ASPP has none.
        num_branches = 1 + len(rates)
        self.shared_branch_conv = (
            nn.Conv2d(channels, channels, 1, bias=False)
            if waterfall and shared_branch_convs
            else None
        )
        self.branch_convs = (
            nn.ModuleList(
                nn.Sequential(
                    nn.Conv2d(channels, channels, 1, bias=False),
                    nn.Conv2d(channels, channels, 1, bias=False),
                )
                for _ in range(num_branches)
            )
            if waterfall and not shared_branch_convs
            else None
        )
        self.image_pooling = ImagePooling(in_channels, channels)
        self.fuse = nn.Sequential(
            conv_bn_relu((num_branches + 1) * channels, channels), nn.Dropout(dropout)
        )

    def branch_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        branches = [self.reduce(x)]
        for conv in self.atrous:
            branches.append(conv(branches[-1] if self.waterfall else x))
        if self.shared_branch_conv is not None:
            branches = [self.shared_branch_conv(self.shared_branch_conv(b)) for b in branches]
        elif self.branch_convs is not None:
            branches = [convs(b) for convs, b in zip(self.branch_convs, branches, strict=True)]
        return [*branches, self.image_pooling(x)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat(self.branch_outputs(x), dim=1))


class UniPoseDecoder(nn.Module):
    """Low-level features (stride 4) to stride 8, merged with the pooled features; K + 1 maps."""

    def __init__(
        self,
        low_level_channels: int,
        in_channels: int,
        num_outputs: int,
        low_level_out: int = 48,
        channels: int = 256,
    ) -> None:
        super().__init__()
        self.low_level = nn.Sequential(
            conv_bn_relu(low_level_channels, low_level_out),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        self.fuse = nn.Sequential(
            conv_bn_relu(in_channels + low_level_out, channels, 3),
            nn.Dropout(0.5),
            conv_bn_relu(channels, channels, 3),
            nn.Dropout(0.1),
        )
        self.final = nn.Conv2d(channels, num_outputs, kernel_size=1)
        nn.init.normal_(self.final.weight, std=0.001)
        nn.init.zeros_(self.final.bias)

    def forward(self, x: torch.Tensor, low_level: torch.Tensor) -> torch.Tensor:
        low_level = self.low_level(low_level)
        x = torch.cat([resize(x, low_level.shape[-2:]), low_level], dim=1)
        return self.final(self.fuse(x))


class UniPose(nn.Module):
    """UniPose network; returns ``{"heatmaps": (B, K + 1, h, w)}``, channel 0 the background.

    Args:
        backbone: a `TimmBackbone` returning two levels, the low-level one first (ResNet
            ``out_indices=[1, 4]``, ``output_stride=16``).
        num_keypoints: K; the network predicts K + 1 maps.
        pooling: ``wasp`` | ``aspp`` | ``none``.
        rates: the atrous rates, in cascade order for WASP.
        shared_branch_convs: WASP's branch 1x1 convs shared by all branches (released) or each
            branch's own.
        upsample_to_input: maps at the input size (paper) instead of stride 8 (released).
        channels: the width of the pooling module and the decoder (released: 256).
    """

    def __init__(
        self,
        backbone: TimmBackbone,
        num_keypoints: int,
        pooling: str = "wasp",
        rates: Sequence[int] = (18, 12, 6),
        shared_branch_convs: bool = True,
        upsample_to_input: bool = False,
        channels: int = 256,
    ) -> None:
        super().__init__()
        if pooling not in POOLING_MODULES:
            raise ValueError(f"pooling must be one of {POOLING_MODULES}, got {pooling!r}")
        if len(backbone.out_channels) != 2:
            raise ValueError(
                "UniPose needs the backbone's low-level and deepest maps (e.g. ResNet "
                f"out_indices=[1, 4]), got {len(backbone.out_channels)} levels"
            )
        low_channels, deep_channels = backbone.out_channels
        self.backbone = backbone
        if pooling == "none":
            self.pooling = conv_bn_relu(deep_channels, channels)
        else:
            self.pooling = AtrousPooling(
                deep_channels,
                rates,
                channels,
                waterfall=pooling == "wasp",
                shared_branch_convs=shared_branch_convs,
            )
        self.decoder = UniPoseDecoder(low_channels, channels, num_keypoints + 1, channels=channels)
        self.upsample_to_input = upsample_to_input
        for name, module in self.named_modules():
            # Kaiming-normal convs as released; the backbone keeps timm's init, the final conv
            # its small one.
            if (
                isinstance(module, nn.Conv2d)
                and not name.startswith("backbone")
                and module is not self.decoder.final
            ):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        low_level, deep = self.backbone(images)
        heatmaps = self.decoder(self.pooling(deep), low_level)
        if self.upsample_to_input:
            heatmaps = resize(heatmaps, images.shape[-2:])
        return {"heatmaps": heatmaps}
