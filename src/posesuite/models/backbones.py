"""timm backbones as feature extractors; weights only from local files."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import timm
import torch
from torch import nn

log = logging.getLogger(__name__)


class TimmBackbone(nn.Module):
    """A timm model with ``features_only=True``; returns the feature maps at ``out_indices``.

    ``checkpoint`` is an optional local file (a timm/torchvision state dict, or a Lightning
    checkpoint's ``state_dict``); nothing is downloaded.

    ``multi_grid`` (DeepLabv3's multi-grid, e.g. ``[1, 2, 4]``): block i of the stage that gives
    the deepest returned map has its 3x3 convs dilated by the stage's rate times ``multi_grid[i]``
    (one entry per block). With ``output_stride=16`` the ResNet C5 rate is 2, so ``[1, 2, 4]``
    gives the dilations 2, 4, 8 of the DeepLab-style ResNets (timm alone gives 1, 2, 2). It
    changes no parameter, only where the kernels sample.
    """

    def __init__(
        self,
        name: str = "resnet50",
        out_indices: Sequence[int] = (4,),
        checkpoint: str | None = None,
        multi_grid: Sequence[int] | None = None,
        **timm_kwargs,
    ) -> None:
        super().__init__()
        self.body = timm.create_model(
            name,
            pretrained=False,
            features_only=True,
            out_indices=tuple(out_indices),
            **timm_kwargs,
        )
        self.out_channels: list[int] = list(self.body.feature_info.channels())
        self.strides: list[int] = list(self.body.feature_info.reduction())
        if multi_grid:
            self.apply_multi_grid(multi_grid)
        if checkpoint:
            self.load_checkpoint(checkpoint)

    def apply_multi_grid(self, multi_grid: Sequence[int]) -> None:
        stage_name = self.body.feature_info.module_name()[-1]
        blocks = list(self.body.get_submodule(stage_name).children())
        if len(blocks) != len(multi_grid):
            raise ValueError(
                f"multi_grid {list(multi_grid)} needs one entry per block of {stage_name}, "
                f"which has {len(blocks)} in {type(self.body).__name__}"
            )
        convs = [
            [m for m in block.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
            for block in blocks
        ]
        # The stage's rate: that of its last block (timm keeps the previous rate for the first).
        rate = convs[-1][-1].dilation[0]
        for block_convs, grid in zip(convs, multi_grid, strict=True):
            for conv in block_convs:
                conv.dilation = (rate * grid, rate * grid)
                conv.padding = (rate * grid, rate * grid)

    def load_checkpoint(self, path: str) -> None:
        file = Path(path).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"model.backbone.checkpoint: no such file {file}")
        state = torch.load(file, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        # features_only models drop the classifier; keep only keys the body knows.
        own = self.body.state_dict()
        matched = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
        if not matched:
            raise ValueError(
                f"model.backbone.checkpoint {file}: no parameter matches {type(self.body).__name__}"
            )
        missing = sorted(set(own) - set(matched))
        self.body.load_state_dict(matched, strict=False)
        log.info(
            "loaded %d tensors from %s (%d left at random init)", len(matched), file, len(missing)
        )

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.body(images)
