"""What the one LightningModule asks of a model family's codec.

A codec is the family's bridge between the network's named outputs and keypoints: it makes the
training targets from the batch on the device, turns outputs back into crop-space keypoints, and
owns the flip test, whose right form depends on the representation (heatmaps are averaged with
the mirrored crop's maps flipped back; regressed coordinates are mirrored and averaged; an STN
decodes each pass through its own theta). The module maps crop-space keypoints to the image
through the crop's exact inverse affine, the same for every family.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch


class KeypointCodec(Protocol):
    """Targets from the batch, keypoints from the network's outputs (all tensors on the device).

    ``batch`` is the frame view of the loader's batch (`posesuite.data.batch.flatten_time`: B
    counts frames, B * T for clips of T frames) and holds at least ``keypoints`` (B, K, 2) in
    crop pixels, ``keypoint_weight`` (B, K) (1 for joints labelled and inside the crop),
    ``visibility`` (B, K) (the annotation's flags 0/1/2) and ``affine`` (B, 2, 3) (image ->
    crop); ``outputs`` is the network's dict, one entry per frame.
    """

    def encode(
        self, batch: Mapping[str, Any], outputs: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Training targets for the family's loss (e.g. ``heatmaps``, ``target_weight``)."""
        ...

    def decode(
        self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Crop-space keypoints (B, K, 2) and their scores (B, K)."""
        ...

    def flip_test(
        self,
        outputs: Mapping[str, torch.Tensor],
        flipped_outputs: Mapping[str, torch.Tensor],
        batch: Mapping[str, Any],
        flip_index: Sequence[int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Like ``decode``, merging the outputs of the horizontally mirrored crop
        (``flipped_outputs``; ``flip_index`` swaps left and right joints)."""
        ...
