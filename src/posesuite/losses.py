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


GLOBAL_RULES = ("official", "masked")


class CPNLoss(nn.Module):
    """CPN's loss: heatmap L2 on every GlobalNet level plus OHKM L2 on the RefineNet output.

    ``loss_global`` is 0.5 x the MSE over levels, keypoints, pixels and batch; ``loss_refine``
    is OHKM (``top_k`` of K per sample) of each keypoint's masked MSE over pixels, where joints
    that are unlabelled or outside the crop (target weight 0) contribute 0. With unit weights the
    total equals the official code's (its global term is the mean over levels halved; its refine
    term has no 0.5).

    ``global_rule`` says which GlobalNet error counts:

    - ``official`` (tf-cpn, the default): the GlobalNet *target* of every joint that is not
      visible (flag v <= 1: occluded, unlabelled, or outside the crop) is zero, and the
      prediction is not masked, so the network learns empty maps there;
    - ``masked``: the error of joints with target weight 0 is masked out, and occluded joints
      (v = 1) keep their Gaussian, as for the RefineNet term.

    Reads ``targets["visibility"]`` (the annotation's 0/1/2 flags) for the official rule, and
    ``targets["keypoint_mask"]`` where present: joints the sample's source does not annotate at
    all are left out of both terms under either rule.
    For the "GlobalNet only" ablation (``CPNHead(use_refine=False)``) set ``refine_weight=0``.
    """

    def __init__(
        self,
        top_k: int = 8,
        global_weight: float = 1.0,
        refine_weight: float = 1.0,
        global_rule: str = "official",
    ) -> None:
        super().__init__()
        if global_rule not in GLOBAL_RULES:
            raise ValueError(
                f"CPNLoss.global_rule must be one of {GLOBAL_RULES}, got {global_rule!r}"
            )
        self.top_k = top_k
        self.global_weight = global_weight
        self.refine_weight = refine_weight
        self.global_rule = global_rule

    def forward(
        self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        mask = targets["target_weight"][..., None, None]
        global_predictions = outputs["global_heatmaps"].float()
        global_targets = targets["global_heatmaps"]  # already zero where the weight is 0
        if self.global_rule == "official":
            visible = (targets["visibility"] > 1).to(global_targets.dtype)[:, None, :, None, None]
            global_error = global_predictions - global_targets * visible
            if "keypoint_mask" in targets:  # a joint the source does not annotate: no target
                global_error = global_error * targets["keypoint_mask"][:, None, :, None, None]
        else:
            global_error = (global_predictions - global_targets) * mask.unsqueeze(1)
        loss_global = 0.5 * global_error.pow(2).mean()
        refine_error = (outputs["heatmaps"].float() - targets["heatmaps"]) * mask
        loss_refine = ohkm_loss(refine_error.pow(2).mean(dim=(-2, -1)), self.top_k)
        loss = self.global_weight * loss_global + self.refine_weight * loss_refine
        return {
            "loss": loss,
            "loss_global": loss_global.detach(),
            "loss_refine": loss_refine.detach(),
        }


class StackedMSELoss(nn.Module):
    """Intermediate supervision (Stacked Hourglass): `KeypointMSELoss` of every stack's maps
    (``outputs["stack_heatmaps"]``, (B, S, K, h, w)) against the same targets, summed over the
    stacks as in the authors' code; ``loss_heatmap`` logs the last stack's term."""

    def __init__(self, joint_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.stack_loss = KeypointMSELoss(joint_weights)

    def forward(
        self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        stacks = outputs["stack_heatmaps"]
        terms = [
            self.stack_loss({"heatmaps": stacks[:, index]}, targets)["loss"]
            for index in range(stacks.shape[1])
        ]
        loss = torch.stack(terms).sum()
        return {"loss": loss, "loss_heatmap": terms[-1].detach()}
