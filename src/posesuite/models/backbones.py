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
    """

    def __init__(
        self,
        name: str = "resnet50",
        out_indices: Sequence[int] = (4,),
        checkpoint: str | None = None,
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
        if checkpoint:
            self.load_checkpoint(checkpoint)

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
