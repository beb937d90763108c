"""Gaussian heatmaps for K joints plus one background map (UniPose).

Every map set this codec makes or reads has K + 1 channels, the background first (channel 0,
joint k in channel k + 1), as in UniPose's released code. The background target is
1 - max over the joint targets: 1 far from every joint, 0 at a joint's peak.

Which joints enter that max: the joints with a target weight, i.e. labelled and inside the crop
(``out_of_crop="overlap"``: also those just outside whose Gaussian reaches the map), and, where
the batch carries a ``keypoint_mask``, annotated by the sample's source. A joint without a weight
(unlabelled, not annotated by its source, or outside the crop) adds nothing: the background
stays 1 where it may lie, as in the released code, whose MPII targets place missing joints off
the map. The background channel's own weight is 1 when the crop holds at least one joint with a
weight and 0 otherwise: a person crop with no known joint would only teach "no joint anywhere".

Decoding and the flip test read the joint channels only, so the background is never a joint;
the flip test mirrors the background back like the joints but never swaps it with one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from posesuite.codecs.heatmap import HeatmapCodec


class BackgroundHeatmapCodec(HeatmapCodec):
    """`HeatmapCodec` with a background map in channel 0 of every map set.

    ``encode`` gives ``heatmaps`` (B, K + 1, h, w) and ``target_weight`` (B, K + 1), background
    first, so `posesuite.losses.KeypointMSELoss` (without per-joint weights) trains all K + 1
    maps; ``visibility`` and ``keypoint_mask`` stay (B, K). Arguments are the base codec's.
    """

    def encode(
        self, batch: Mapping[str, Any], outputs: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        expected = batch["keypoints"].shape[1] + 1
        if outputs["heatmaps"].shape[1] != expected:
            raise ValueError(
                f"the background codec reads K + 1 = {expected} maps (background first), the "
                f"network gives {outputs['heatmaps'].shape[1]}: it must predict num_keypoints + 1"
            )
        return super().encode(batch, outputs)

    def encode_keypoints(
        self,
        keypoints: torch.Tensor,
        keypoint_weight: torch.Tensor,
        visibility: torch.Tensor | None = None,
        keypoint_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        targets = super().encode_keypoints(keypoints, keypoint_weight, visibility, keypoint_mask)
        joints, weight = targets["heatmaps"], targets["target_weight"]  # zero where weight is 0
        background = 1.0 - joints.amax(dim=1, keepdim=True)
        background_weight = (weight > 0).any(dim=1, keepdim=True).to(weight.dtype)
        targets["heatmaps"] = torch.cat([background, joints], dim=1)
        targets["target_weight"] = torch.cat([background_weight, weight], dim=1)
        return targets

    def decode_heatmaps(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K + 1, h, w) -> crop-space keypoints (B, K, 2) and scores (B, K) of the joints."""
        return super().decode_heatmaps(heatmaps[:, 1:])

    @staticmethod
    def flip_back(heatmaps: torch.Tensor, flip_index: Sequence[int]) -> torch.Tensor:
        """(B, K + 1, h, w) maps of the mirrored crop -> those of the original crop: every map
        mirrored, the joints swapped by ``flip_index`` (K entries), the background kept first."""
        index = [0, *(int(i) + 1 for i in flip_index)]
        return HeatmapCodec.flip_back(heatmaps, index)
