"""Losses. Each reads what it needs from the network's output dict and the codec's target dict."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class KeypointMSELoss(nn.Module):
    """Target-weighted heatmap MSE (SimpleBaseline): 0.5 * mean over pixels, keypoints, batch.

    ``joint_weights`` (per keypoint, from the skeleton file) scale each keypoint's term.
    """

    def __init__(self, joint_weights: Sequence[float] | None = None, key: str = "heatmaps") -> None:
        super().__init__()
        self.key = key
        weights = torch.as_tensor(
            joint_weights if joint_weights is not None else [], dtype=torch.float32
        )
        self.register_buffer("joint_weights", weights, persistent=False)

    def forward(
        self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        prediction = outputs[self.key].float()
        target = targets[self.key]
        weight = targets["target_weight"]
        if self.joint_weights.numel():
            weight = weight * self.joint_weights
        per_pixel = (prediction - target) ** 2 * weight[..., None, None] ** 2
        loss = 0.5 * per_pixel.mean()
        return {"loss": loss, "loss_heatmap": loss.detach()}
