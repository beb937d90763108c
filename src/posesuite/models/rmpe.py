"""RMPE's symmetric STN and parallel SPPE (Fang et al., ICCV 2017) around any single-person pose
estimator of posesuite: one optional stage of the LightningModule, ``module.spatial_transformer``.

The data workers deliver a *loose* crop (the proposal box extended 30% each way: the model
config's ``crop_padding: 1.6``, conf/model/stn/symmetric.yaml) with its affine. On the device:

1. the STN (`posesuite.models.stn.SpatialTransformer`) regresses ``theta`` from the loose crop
   and resamples it into the STN frame, which the SPPE (the family's network) reads;
2. in training, the SDTN takes the SPPE's maps back to the loose crop (resampled through the
   inverse of ``theta``, differentiably), where the family's codec and loss score them against
   the plain ground truth, as in the paper. (Scoring in the STN frame instead, against the truth
   mapped by theta, lets the STN lower the loss by pushing joints out of the frame, where their
   targets vanish: a first version did, its loss fell 30x in 100 steps where the plain
   pipeline's falls by a quarter in 300.)
3. at evaluation, the SPPE's keypoints, decoded by the family's codec in the frame, go back to
   the loose crop through the SDTN exactly (the point map ``A``), then to the image through the
   crop's exact inverse affine;
4. training only, the parallel SPPE: a frozen copy of the SPPE reads the same STN frame and is
   scored against the ground truth *centred* in the frame (the labelled joints' box, grown to the
   frame's aspect ratio and padded by ``centred_padding``, at the frame's centre). Its weights
   never change, so its loss reaches only the STN: it pulls the STN towards frames where the
   person sits centred, at the scale the SPPE knows.

The parallel SPPE's weights come from ``parallel_checkpoint`` (a posesuite checkpoint of the same
SPPE) or are the training SPPE's, copied once at training step ``parallel_from_step``; the copy
is part of the module's state, so a resumed run keeps it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from posesuite.models.backbones import TimmBackbone
from posesuite.models.stn import SpatialTransformer, frame_to_crop_points


def inside_frame(points: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(B, K) True where (B, K, 2) pixel points lie on a (W, H) map (pixel edges at -0.5)."""
    upper = points.new_tensor([size[0] - 0.5, size[1] - 0.5])
    return ((points >= -0.5) & (points <= upper)).all(dim=-1)


def centred_keypoints(
    keypoints: torch.Tensor, labelled: torch.Tensor, frame_size: Sequence[int], padding: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, 2) crop keypoints -> the same pose centred in a (W, H) frame: the labelled joints'
    box, grown to the frame's aspect ratio and multiplied by ``padding``, fills the frame (a
    scale and a shift; no rotation). Also (B,) True where at least two joints are labelled (the
    others have no box and get no centred target)."""
    width, height = float(frame_size[0]), float(frame_size[1])
    mask = labelled.bool()[..., None]
    big = torch.finfo(keypoints.dtype).max
    low = torch.where(mask, keypoints, big).amin(dim=1)
    high = torch.where(mask, keypoints, -big).amax(dim=1)
    has_box = labelled.bool().sum(dim=1) >= 2
    low = torch.where(has_box[:, None], low, torch.zeros_like(low))
    high = torch.where(has_box[:, None], high, torch.ones_like(high))
    centre = 0.5 * (low + high)
    extent = (high - low).clamp_min(1e-3)
    # The box grown along one axis to the frame's aspect ratio, then padded: one scale for both.
    box_height = torch.maximum(extent[:, 1], extent[:, 0] * height / width) * padding
    scale = (height / box_height)[:, None, None]
    frame_centre = keypoints.new_tensor([width / 2 - 0.5, height / 2 - 0.5])
    return (keypoints - centre[:, None]) * scale + frame_centre, has_box


class SymmetricSTN(nn.Module):
    """The STN, the SDTN and the parallel SPPE of RMPE, for `PoseEstimationModule`.

    Args:
        localisation: the STN's localisation network (default: timm ResNet-18's C5).
        parallel: train with the parallel SPPE (training only; False turns it off).
        parallel_weight: its loss's weight beside the SPPE's.
        parallel_from_step: the training step at which the SPPE's weights are copied into the
            parallel SPPE and its loss starts (ignored with ``parallel_checkpoint``).
        parallel_checkpoint: a posesuite checkpoint whose network weights are the parallel
            SPPE's from the start (the same SPPE config).
        centred_padding: the centred target's padding around the labelled joints' box.
        lr_scale: the STN's learning rate over the network's (the optimizer's lr).
        crop_padding: the loose crop's padding around the proposal box (1.6: 30% each way),
            which the data config reads (``conf/_topdown.yaml``); kept here so that one config
            entry adds the STN and its loose crops.
    """

    def __init__(
        self,
        localisation: TimmBackbone | None = None,
        parallel: bool = True,
        parallel_weight: float = 1.0,
        parallel_from_step: int = 1000,
        parallel_checkpoint: str | None = None,
        centred_padding: float = 1.25,
        crop_padding: float = 1.6,
        lr_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.stn = SpatialTransformer(localisation)
        self.parallel = parallel
        self.parallel_weight = parallel_weight
        self.parallel_from_step = int(parallel_from_step)
        self.parallel_checkpoint = parallel_checkpoint
        self.centred_padding = centred_padding
        self.crop_padding = crop_padding
        self.lr_scale = lr_scale
        self.parallel_sppe: nn.Module | None = None
        # Whether the parallel SPPE holds its weights yet (kept in checkpoints: a resumed run
        # does not copy again).
        self.register_buffer("parallel_ready", torch.tensor(False))

    # --- set-up ------------------------------------------------------------------------------
    def bind(self, sppe: nn.Module) -> None:
        """Make the frozen parallel copy of the module's SPPE (called once by the module)."""
        if not self.parallel:
            return
        self.parallel_sppe = copy.deepcopy(sppe)
        self.parallel_sppe.requires_grad_(False)
        self.parallel_sppe.eval()
        if self.parallel_checkpoint:
            self.parallel_sppe.load_state_dict(network_state(self.parallel_checkpoint))
            self.parallel_ready.fill_(True)

    def train(self, mode: bool = True) -> SymmetricSTN:
        super().train(mode)
        if self.parallel_sppe is not None:  # frozen: its batch-norm statistics never move
            self.parallel_sppe.eval()
        return self

    def refresh_parallel(self, sppe: nn.Module, step: int) -> None:
        """At ``parallel_from_step``, copy the training SPPE's weights into the parallel SPPE."""
        if self.parallel_sppe is None or bool(self.parallel_ready):
            return
        if step >= self.parallel_from_step:
            self.parallel_sppe.load_state_dict(sppe.state_dict())
            self.parallel_ready.fill_(True)

    @property
    def parallel_active(self) -> bool:
        return self.parallel_sppe is not None and bool(self.parallel_ready) and self.training

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.stn.parameters() if p.requires_grad]

    # --- forward and geometry ----------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised loose crops (N, 3, H, W) -> (the STN frames, theta (N, 2, 3))."""
        return self.stn(images)

    @staticmethod
    def size_of(images: torch.Tensor) -> tuple[int, int]:
        return images.shape[-1], images.shape[-2]

    def to_crop_maps(
        self, outputs: Mapping[str, torch.Tensor], theta: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The SDTN on maps: every spatial output ((N, ..., h, w), e.g. heatmaps, stacked or
        per-level ones) of the STN frame resampled into the loose crop's frame through the
        inverse of ``theta`` (zeros where the crop lies outside the frame); other entries are
        kept. Normalised coordinates do not depend on the map's resolution (align_corners=False),
        so one inverse serves every map size."""
        bottom = theta.new_tensor([0.0, 0.0, 1.0]).expand(theta.shape[0], 1, 3)
        inverse = torch.linalg.inv(torch.cat([theta.float(), bottom], dim=1))[:, :2]
        maps = {}
        for key, value in outputs.items():
            if key in ("theta", "stn_images") or value.ndim < 4:
                maps[key] = value
                continue
            flat = value.reshape(value.shape[0], -1, *value.shape[-2:])
            grid = F.affine_grid(inverse.to(flat.dtype), list(flat.shape), align_corners=False)
            resampled = F.grid_sample(flat, grid, "bilinear", "zeros", align_corners=False)
            maps[key] = resampled.reshape(value.shape)
        return maps

    def to_crop(
        self, points: torch.Tensor, theta: torch.Tensor, size: Sequence[int]
    ) -> torch.Tensor:
        """The SDTN: (N, K, 2) keypoints of the STN frame -> the loose crop's pixels."""
        return frame_to_crop_points(points, theta, size, size)

    def centred(self, frames: Mapping[str, Any], size: Sequence[int]) -> dict[str, Any]:
        """The batch with its ground truth centred in the frame: the parallel SPPE's targets."""
        labelled = frames["visibility"] > 0
        points, has_box = centred_keypoints(
            frames["keypoints"].float(), labelled, size, self.centred_padding
        )
        weight = labelled & inside_frame(points, size) & has_box[:, None]
        return {**frames, "keypoints": points, "keypoint_weight": weight.float()}

    def parallel_outputs(self, frame_images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The frozen parallel SPPE on the STN frames (gradients flow to the frames only)."""
        return self.parallel_sppe(frame_images)


def network_state(path: str) -> dict[str, torch.Tensor]:
    """The ``network.`` weights of a posesuite checkpoint, keyed as the network's own."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state = checkpoint.get("state_dict", checkpoint)
    weights = {k[len("network.") :]: v for k, v in state.items() if k.startswith("network.")}
    if not weights:
        raise ValueError(
            f"model.module.spatial_transformer.parallel_checkpoint={path} holds no network "
            f"weights (no 'network.' entries in its state_dict): give a posesuite checkpoint"
        )
    return weights
