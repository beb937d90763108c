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


def ohkm_loss(per_keypoint_loss: torch.Tensor, top_k: int) -> torch.Tensor:
    """Online hard keypoint mining (CPN): the mean, over samples, of each sample's ``top_k``
    largest keypoint losses, so that gradients reach only the hardest keypoints.

    ``per_keypoint_loss`` is (B, K); ``top_k = K`` gives the plain mean (no mining).
    """
    num_keypoints = per_keypoint_loss.shape[-1]
    if not 1 <= top_k <= num_keypoints:
        raise ValueError(f"OHKM top_k must lie in [1, {num_keypoints}] keypoints, got {top_k}")
    hardest, _ = per_keypoint_loss.topk(top_k, dim=-1, sorted=False)
    return hardest.mean()


class CPNLoss(nn.Module):
    """CPN's loss: heatmap L2 on every GlobalNet level plus OHKM L2 on the RefineNet output.

    ``loss_global`` is 0.5 x the masked MSE over levels, keypoints, pixels and batch;
    ``loss_refine`` is OHKM (``top_k`` of K per sample) of each keypoint's masked MSE over
    pixels. With unit weights the total equals the official code's (its global term is the mean
    over levels halved; its refine term has no 0.5). Unlabelled keypoints (target weight 0) are
    masked out of both terms; the official code also sets the GlobalNet target of occluded
    (v = 1) keypoints to zero, which needs visibility this pipeline does not carry.
    For the "GlobalNet only" ablation (``CPNHead(use_refine=False)``) set ``refine_weight=0``.
    """

    def __init__(
        self, top_k: int = 8, global_weight: float = 1.0, refine_weight: float = 1.0
    ) -> None:
        super().__init__()
        self.top_k = top_k
        self.global_weight = global_weight
        self.refine_weight = refine_weight

    def forward(
        self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        mask = targets["target_weight"][..., None, None]
        global_error = outputs["global_heatmaps"].float() - targets["global_heatmaps"]
        loss_global = 0.5 * (global_error * mask.unsqueeze(1)).pow(2).mean()
        refine_error = (outputs["heatmaps"].float() - targets["heatmaps"]) * mask
        loss_refine = ohkm_loss(refine_error.pow(2).mean(dim=(-2, -1)), self.top_k)
        loss = self.global_weight * loss_global + self.refine_weight * loss_refine
        return {
            "loss": loss,
            "loss_global": loss_global.detach(),
            "loss_refine": loss_refine.detach(),
        }
