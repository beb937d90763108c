"""Top-down post-processing as one configurable step: person scores, then per-image NMS.

`PostProcess` is what ``model.postprocess`` configures; `PostProcess.bind(skeleton)` resolves
the skeleton's sigmas and parts once and returns a `PersonFilter`, which validation, ``task=eval``
and the cached-prediction sweeps all call on the same `People` tables.

Methods (``model.postprocess.nms``):

- ``oks``: rescore (box score x mean confident keypoint score), then greedy OKS-NMS;
- ``soft_oks``: rescore, then soft OKS-NMS (scores decayed instead of poses removed);
- ``parametric``: RMPE's parametric pose NMS, which also merges each cluster into its pick; the
  merged poses are then rescored with their pick's box score;
- ``none``: rescore only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from posesuite.metrics.predictions import People
from posesuite.postprocess.oks_nms import oks_nms, soft_oks_nms
from posesuite.postprocess.pose_nms import CONFIG_KEY as POSE_NMS_KEY
from posesuite.postprocess.pose_nms import (
    PartWeights,
    PoseNMSParams,
    parametric_pose_nms,
    part_weights_from_skeleton,
)
from posesuite.postprocess.rescoring import rescore
from posesuite.skeleton import Skeleton

NMS_METHODS = ("oks", "soft_oks", "parametric", "none")


@dataclass(frozen=True)
class PostProcess:
    """``model.postprocess``: how decoded poses become the scored people that are evaluated.

    Args:
        nms: ``oks`` | ``soft_oks`` | ``parametric`` | ``none``.
        nms_threshold: ``oks``: a pose with OKS above it to a kept pose is suppressed.
        soft_nms_sigma: ``soft_oks``: width of the Gaussian score decay.
        max_people: ``soft_oks``: people kept per image.
        pose_nms: ``parametric``: ``preset`` (``alphapose_public`` | ``paper``), any
            `PoseNMSParams` field (null keeps the preset's value), and optionally ``parts``:
            ``{part: [weight, distance scale]}`` over the skeleton's parts (whole-body).
        rescore_threshold: keypoint scores must exceed it to enter the person score.
    """

    nms: str = "oks"
    nms_threshold: float = 0.9
    soft_nms_sigma: float = 0.9
    max_people: int = 20
    pose_nms: Mapping[str, Any] = field(default_factory=dict)
    rescore_threshold: float = 0.2

    def __post_init__(self) -> None:
        if self.nms not in NMS_METHODS:
            raise ValueError(
                f"model.postprocess.nms must be one of {NMS_METHODS}, got {self.nms!r}"
            )
        if self.nms == "parametric":
            self.pose_nms_params()  # fail at start-up, not after the first validation epoch

    def pose_nms_params(self) -> PoseNMSParams:
        settings = dict(self.pose_nms)
        preset = settings.pop("preset", "alphapose_public")
        settings.pop("parts", None)
        overrides = {name: value for name, value in settings.items() if value is not None}
        return PoseNMSParams.preset(preset, **overrides)

    def bind(self, sigmas: Sequence[float], skeleton: Skeleton | None = None) -> PersonFilter:
        """The filter for one keypoint set: its OKS sigmas and, when ``pose_nms.parts`` weighs
        whole-body parts, the skeleton that names them."""
        params = part_weights = None
        parts = self.pose_nms.get("parts")
        if self.nms == "parametric":
            params = self.pose_nms_params()
            if parts:
                if skeleton is None:
                    raise ValueError(f"{POSE_NMS_KEY}.parts needs the skeleton that names them")
                part_weights = part_weights_from_skeleton(skeleton, parts)
        elif parts:
            raise ValueError(
                f"{POSE_NMS_KEY}.parts is only read with model.postprocess.nms=parametric"
            )
        return PersonFilter(
            config=self,
            sigmas=tuple(float(s) for s in sigmas),
            pose_nms_params=params,
            part_weights=part_weights,
        )


@dataclass(frozen=True)
class PersonFilter:
    """`PostProcess` bound to a skeleton; call it on a `People` table of any number of images."""

    config: PostProcess
    sigmas: tuple[float, ...]
    pose_nms_params: PoseNMSParams | None = None
    part_weights: PartWeights | None = None

    def __call__(self, people: People) -> People:
        """Per image: rescoring and NMS. Returns the kept people grouped by image (ascending
        image id), each image's people in the method's pick order."""
        if len(people) == 0:
            return people
        people = people.to(torch.float64)
        order = torch.argsort(people.image_ids, stable=True)
        counts = torch.unique_consecutive(people.image_ids[order], return_counts=True)[1]
        kept = [self._one_image(people.select(index)) for index in order.split(counts.tolist())]
        return People.concatenate(kept)

    def _one_image(self, people: People) -> People:
        config = self.config
        keypoint_scores = people.keypoints[..., 2]
        if config.nms == "parametric":
            result = parametric_pose_nms(
                people.boxes,
                people.scores,
                people.keypoints[..., :2],
                keypoint_scores,
                self.pose_nms_params,
                self.part_weights,
            )
            merged = torch.cat([result.keypoints, result.keypoint_scores[..., None]], dim=-1)
            return dataclasses.replace(
                people.select(result.kept),
                keypoints=merged,
                scores=rescore(result.keypoint_scores, result.box_scores, config.rescore_threshold),
            )
        scores = rescore(keypoint_scores, people.scores, config.rescore_threshold)
        sigmas = torch.tensor(self.sigmas, dtype=people.keypoints.dtype)
        if config.nms == "oks":
            keep = oks_nms(people.keypoints, scores, people.areas, sigmas, config.nms_threshold)
        elif config.nms == "soft_oks":
            keep, scores = soft_oks_nms(
                people.keypoints,
                scores,
                people.areas,
                sigmas,
                config.soft_nms_sigma,
                config.max_people,
            )
            return dataclasses.replace(people.select(keep), scores=scores)
        else:
            keep = torch.argsort(scores, descending=True, stable=True)
        return dataclasses.replace(people.select(keep), scores=scores[keep])
