"""A toy model family, built only from config by tests/lit/test_toy_family.py: direct coordinate
regression (pooled features -> a linear layer -> normalised x, y and a score per joint), with its
own codec (normalised-coordinate targets, a coordinate flip test) and loss. It is what the
README's "Adding a model family" asks a new family to write, and nothing else."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn


class RegressionHead(nn.Module):
    """Deepest feature map -> ``coordinates`` (B, K, 2) in [0, 1] of the crop, ``logits`` (B, K)."""

    def __init__(self, in_channels: int, num_keypoints: int) -> None:
        super().__init__()
        self.num_keypoints = num_keypoints
        self.linear = nn.Linear(in_channels, num_keypoints * 3)

    def forward(self, features: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        pooled = features[-1].float().mean(dim=(-2, -1))
        values = self.linear(pooled).view(-1, self.num_keypoints, 3)
        return {"coordinates": values[..., :2].sigmoid(), "logits": values[..., 2]}


class RegressionCodec:
    """Crop pixels <-> coordinates normalised to the crop; flip test by mirroring coordinates."""

    def __init__(self, input_size: Sequence[int]) -> None:
        self.input_size = (int(input_size[0]), int(input_size[1]))

    def _scale(self, like: torch.Tensor) -> torch.Tensor:
        return like.new_tensor(self.input_size) - 1

    def encode(
        self, batch: Mapping[str, Any], outputs: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        keypoints = batch["keypoints"].float()
        return {
            "coordinates": keypoints / self._scale(keypoints),
            "target_weight": batch["keypoint_weight"].float(),
        }

    def decode(
        self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        coordinates = outputs["coordinates"].float()
        return coordinates * self._scale(coordinates), outputs["logits"].float().sigmoid()

    def flip_test(
        self,
        outputs: Mapping[str, torch.Tensor],
        flipped_outputs: Mapping[str, torch.Tensor],
        batch: Mapping[str, Any],
        flip_index: Sequence[int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keypoints, scores = self.decode(outputs, batch)
        mirrored, mirrored_scores = self.decode(flipped_outputs, batch)
        index = torch.as_tensor(flip_index, device=keypoints.device)
        mirrored = mirrored.index_select(1, index)
        mirrored[..., 0] = self.input_size[0] - 1 - mirrored[..., 0]  # x -> W - 1 - x
        return 0.5 * (keypoints + mirrored), 0.5 * (scores + mirrored_scores.index_select(1, index))


class WeightedL1(nn.Module):
    def forward(
        self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        error = (outputs["coordinates"].float() - targets["coordinates"]).abs().sum(-1)
        loss = (error * targets["target_weight"]).mean()
        return {"loss": loss}
