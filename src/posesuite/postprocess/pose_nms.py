"""Parametric pose NMS of RMPE (AlphaPose, ICCV 2017), vectorised over the candidates.

Poses are de-duplicated by pose similarity rather than by box overlap, and each pose that is
eliminated is merged into the pose that eliminated it. With keypoint scores ``s`` (a score of 0
becomes ``zero_score``), ``ref = alpha · max(box w, box h)`` and ``d_jk`` the distance between
keypoint k of candidate j and of the pick, the greedy loop is:

1. pick the remaining candidate with the highest person score (mean keypoint score);
2. for every remaining candidate j, the pick included::

       simi_j    = Σ_k [k in window] tanh(s_pick,k / δ1) tanh(s_j,k / δ1) + μ Σ_k exp(−d_jk / δ2)
       matches_j = #{k : d_jk ≤ min(ref_pick, match_cap_px)}

   j joins the pick's cluster and leaves the pool if ``simi_j > γ`` or
   ``matches_j ≥ match_threshold``; repeat until the pool is empty;
3. per pick: drop it if its own best keypoint score is below ``score_threshold``; merge its cluster
   keypoint by keypoint over the members within ``min(ref_pick, merge_cap_px)`` of the pick's
   keypoint (position ``Σ s·x / Σ s``, score ``Σ s² / Σ s``); drop the result if its best merged
   score is below ``score_threshold`` or ``area_scale`` × the area of its keypoints' box is below
   ``area_threshold``. Dropped picks still suppress their clusters.

The K_sim window is where the public code and the paper differ: ``d_jk ≤ 1 px`` in the public code
(``ksim_window="pixel"``), a box centred on the pick's keypoint with sides 1/10 of the pick's
person box in the paper (``"box_fraction"``). The presets name the two.

Box scores take no part in picking, suppression or merging: the public code orders candidates by
mean keypoint score, and so does this. They are carried to the result (``box_scores`` of each
kept pick) so that the caller can rank people with the project's top-down rescoring
(:func:`posesuite.postprocess.rescoring.rescore`: box score × mean confident keypoint score).

Whole-body skeletons: an optional :class:`PartWeights` gives each keypoint a weight (its share of
``simi``, of the match count and of the person score) and a distance scale (its distances are
divided by it before every comparison, so its K_sim window, δ2 and match and merge radii grow with
it), so that 110 face and hand points need not outvote the body. Nothing is normalised by the
number of candidates: the public whole-body version divides its match count by that number, so
that with many candidates nothing is suppressed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import torch

from posesuite.skeleton import Skeleton

CONFIG_KEY = "model.postprocess.pose_nms"

KsimWindow = Literal["pixel", "box_fraction"]
KSIM_WINDOWS = ("pixel", "box_fraction")


@dataclass(frozen=True)
class PoseNMSParams:
    """Constants of the parametric pose NMS; the defaults are the public 17-keypoint code's.

    Frozen: a sweep builds new instances (``PoseNMSParams.preset(name, gamma=...)``) instead of
    changing shared constants at run time. ``math.inf`` as ``gamma`` or ``match_threshold``
    turns that rule off (the paper's criterion alone is ``match_threshold=math.inf``).
    """

    delta1: float = 1.0  # δ1: temperature of the tanh of keypoint scores in K_sim
    mu: float = 1.7  # μ (the paper's λ): weight of the spatial similarity H_sim
    delta2: float = 2.65  # δ2: distance scale of H_sim = Σ exp(−d / δ2), in pixels
    gamma: float = 22.48  # γ: a candidate with similarity above it joins the pick's cluster
    score_threshold: float = 0.3  # a pose whose best keypoint score is below it is dropped
    match_threshold: float = 5.0  # a candidate with at least this many matching keypoints joins
    alpha: float = 0.1  # reference distance = alpha × the longer side of the pick's box
    ksim_window: KsimWindow = "pixel"  # "pixel": d ≤ ksim_pixels; "box_fraction": paper's box
    ksim_pixels: float = 1.0  # radius of the "pixel" window
    ksim_box_fraction: float = 0.1  # window sides as a fraction of the pick's box sides
    match_cap_px: float = 7.0  # match radius = min(reference distance, match_cap_px)
    merge_cap_px: float = 15.0  # merge radius = min(reference distance, merge_cap_px)
    area_threshold: float = 0.0  # drop a merged pose whose scaled keypoint-box area is below
    # it; 0 in the public code, so its area test never drops anything
    area_scale: float = 2.25  # the keypoint box's sides grown 1.5× before the area test
    zero_score: float = 1e-5  # keypoint scores of exactly 0 become this (Σ s never vanishes)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "ksim_window":
                if value not in KSIM_WINDOWS:
                    raise ValueError(
                        f"{CONFIG_KEY}.ksim_window must be one of {KSIM_WINDOWS}, got {value!r}"
                    )
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
                raise ValueError(f"{CONFIG_KEY}.{field.name} must be a number, got {value!r}")
        positive = (
            "delta1",
            "delta2",
            "alpha",
            "match_threshold",
            "ksim_box_fraction",
            "zero_score",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{CONFIG_KEY}.{name} must be > 0, got {getattr(self, name)!r}")
        non_negative = (
            "mu",
            "score_threshold",
            "ksim_pixels",
            "match_cap_px",
            "merge_cap_px",
            "area_threshold",
            "area_scale",
        )
        for name in non_negative:
            if not getattr(self, name) >= 0:
                raise ValueError(f"{CONFIG_KEY}.{name} must be >= 0, got {getattr(self, name)!r}")

    @classmethod
    def preset(cls, name: str = "alphapose_public", **overrides: Any) -> PoseNMSParams:
        """A named set of constants, with some fields replaced.

        ``alphapose_public``: the public 17-keypoint code (1 px K_sim window).
        ``paper``: the same constants with the paper's K_sim window (1/10 of the person box).
        """
        if name not in PRESETS:
            raise ValueError(f"{CONFIG_KEY}.preset must be one of {sorted(PRESETS)}, got {name!r}")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(
                f"unknown key {CONFIG_KEY}.{unknown[0]}; valid keys: {', '.join(sorted(known))}"
            )
        return cls(**{**PRESETS[name], **overrides})


PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "alphapose_public": MappingProxyType({}),
        "paper": MappingProxyType({"ksim_window": "box_fraction"}),
    }
)


@dataclass(frozen=True)
class PartWeights:
    """Per-keypoint weight and distance scale (see the module docstring); all ones is the
    plain 17-keypoint algorithm."""

    weights: tuple[float, ...]
    scales: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.weights) != len(self.scales):
            raise ValueError(
                f"PartWeights: {len(self.weights)} weights but {len(self.scales)} scales"
            )
        if not all(math.isfinite(w) and w >= 0 for w in self.weights):
            raise ValueError("PartWeights: weights must be finite and >= 0")
        if not any(w > 0 for w in self.weights):
            raise ValueError("PartWeights: at least one weight must be > 0")
        if not all(math.isfinite(s) and s > 0 for s in self.scales):
            raise ValueError("PartWeights: distance scales must be finite and > 0")

    @property
    def num_keypoints(self) -> int:
        return len(self.weights)


def part_weights_from_skeleton(
    skeleton: Skeleton, parts: Mapping[str, Sequence[float]]
) -> PartWeights:
    """Per-keypoint weights and scales from ``{part name: (weight, distance scale)}``.

    The parts are the skeleton's ``parts`` (e.g. body, feet, face, hands). Every keypoint must be
    in exactly one of the parts named, so no keypoint is weighted by accident; give a part weight
    0 to leave it out of the similarity. γ and ``match_threshold`` are compared with weighted
    sums: weight 1 on the body and small weights elsewhere keep the 17-keypoint constants close
    to their meaning; sweep them for a new layout.
    """
    per_keypoint: dict[int, tuple[float, float]] = {}
    for part, entry in parts.items():
        key = f"{CONFIG_KEY}.parts.{part}"
        if part not in skeleton.parts:
            raise ValueError(
                f"{key}: skeleton {skeleton.name!r} has no part {part!r};"
                f" its parts: {sorted(skeleton.parts)}"
            )
        if len(entry) != 2:
            raise ValueError(f"{key} must be (weight, distance scale), got {entry!r}")
        for index in skeleton.parts[part]:
            if index in per_keypoint:
                raise ValueError(
                    f"{key}: keypoint {skeleton.keypoints[index]!r} is in more than one part"
                )
            per_keypoint[index] = (float(entry[0]), float(entry[1]))
    missing = [name for i, name in enumerate(skeleton.keypoints) if i not in per_keypoint]
    if missing:
        raise ValueError(
            f"{CONFIG_KEY}.parts leaves {len(missing)} keypoints of {skeleton.name!r} without a"
            f" part (first: {missing[:3]}); name a part that holds them (weight 0 to ignore them)"
        )
    ordered = [per_keypoint[i] for i in range(skeleton.num_keypoints)]
    return PartWeights(
        weights=tuple(weight for weight, _ in ordered), scales=tuple(scale for _, scale in ordered)
    )


@dataclass(frozen=True)
class PoseNMSResult:
    """The kept poses, in pick order (descending person score)."""

    kept: torch.Tensor  # (M,) int64 indices into the inputs of the kept picks
    clusters: list[torch.Tensor]  # per kept pose, the inputs it suppressed: its pick first
    keypoints: torch.Tensor  # (M, K, 2) merged keypoints
    keypoint_scores: torch.Tensor  # (M, K) merged keypoint scores
    scores: torch.Tensor  # (M,) person scores: (weighted) mean merged keypoint score
    box_scores: torch.Tensor  # (M,) box score of each kept pick, for the caller's rescoring


def parametric_pose_nms(
    boxes: torch.Tensor,
    box_scores: torch.Tensor,
    keypoints: torch.Tensor,
    keypoint_scores: torch.Tensor,
    params: PoseNMSParams,
    part_weights: PartWeights | None = None,
) -> PoseNMSResult:
    """RMPE's parametric pose NMS on one image's candidates (see the module docstring).

    Args:
        boxes: (N, 4) person boxes x1, y1, x2, y2; they set each pick's reference distance
            (and the paper's K_sim window).
        box_scores: (N,) detector scores; not used by the NMS, passed to the result.
        keypoints: (N, K, 2) image-space keypoints.
        keypoint_scores: (N, K) keypoint confidences.
        params: the constants (``PoseNMSParams.preset(...)``).
        part_weights: per-keypoint weights and distance scales; None weights all alike.

    Returns:
        The kept poses with their clusters and merged keypoints. Ties in person score keep the
        input order.
    """
    num, num_keypoints = _check_shapes(boxes, box_scores, keypoints, keypoint_scores)
    dtype, device = keypoints.dtype, keypoints.device
    weights, scales = _weights_and_scales(part_weights, num_keypoints, dtype, device)
    if num == 0:
        return PoseNMSResult(
            kept=torch.empty(0, dtype=torch.long, device=device),
            clusters=[],
            keypoints=keypoints.new_empty(0, num_keypoints, 2),
            keypoint_scores=keypoints.new_empty(0, num_keypoints),
            scores=keypoints.new_empty(0),
            box_scores=box_scores.new_empty(0),
        )
    boxes = boxes.to(dtype)
    scores = keypoint_scores.to(dtype)
    scores = torch.where(scores == 0, torch.full_like(scores, params.zero_score), scores)
    person_scores = (scores * weights).sum(-1) / weights.sum()
    box_sides = boxes[:, 2:] - boxes[:, :2]
    reference = params.alpha * box_sides.amax(-1)
    match_radius = reference.clamp(max=params.match_cap_px)
    merge_radius = reference.clamp(max=params.merge_cap_px)
    tanh_scores = torch.tanh(scores / params.delta1)
    # Coordinates in units of each keypoint's distance scale: one radius then serves every part.
    scaled = keypoints / scales[:, None]

    # The greedy sweep: one iteration per pick, each comparing the pick with the whole pool.
    owner = torch.empty(num, dtype=torch.long, device=device)
    pick_list = []
    remaining = torch.argsort(person_scores, descending=True, stable=True)
    while remaining.numel() > 0:
        pick = remaining[0]
        offsets = scaled[remaining] - scaled[pick]
        distances = torch.linalg.vector_norm(offsets, dim=-1)
        if params.ksim_window == "pixel":
            in_window = distances <= params.ksim_pixels
        else:
            half_sides = params.ksim_box_fraction / 2 * box_sides[pick]
            in_window = (offsets.abs() <= half_sides).all(-1)
        pose_similarity = (in_window * tanh_scores[pick] * tanh_scores[remaining] * weights).sum(-1)
        spatial_similarity = (torch.exp(-distances / params.delta2) * weights).sum(-1)
        similarity = pose_similarity + params.mu * spatial_similarity
        matches = ((distances <= match_radius[pick]) * weights).sum(-1)
        joins = (similarity > params.gamma) | (matches >= params.match_threshold)
        joins[0] = True  # the pick always leaves the pool, in its own cluster
        owner[remaining[joins]] = pick
        pick_list.append(pick)
        remaining = remaining[~joins]
    picks = torch.stack(pick_list)

    # Clusters partition the candidates, so every cluster merges at once: each candidate adds
    # its score-weighted keypoints to its pick's slot where it lies within the merge radius.
    slot_of_pick = torch.empty(num, dtype=torch.long, device=device)
    slot_of_pick[picks] = torch.arange(len(picks), device=device)
    slot = slot_of_pick[owner]
    distances = torch.linalg.vector_norm(scaled - scaled[owner], dim=-1)
    member_scores = scores * (distances <= merge_radius[owner, None])
    score_sum = scores.new_zeros(len(picks), num_keypoints).index_add_(0, slot, member_scores)
    merged_keypoints = (
        keypoints.new_zeros(len(picks), num_keypoints, 2).index_add_(
            0, slot, member_scores[..., None] * keypoints
        )
        / score_sum[..., None]
    )
    merged_scores = (
        scores.new_zeros(len(picks), num_keypoints).index_add_(0, slot, member_scores.square())
        / score_sum
    )

    keep = scores[picks].amax(-1) >= params.score_threshold
    keep &= merged_scores.amax(-1) >= params.score_threshold
    extent = merged_keypoints.amax(1) - merged_keypoints.amin(1)
    keep &= params.area_scale * extent.prod(-1) >= params.area_threshold
    kept_slots = keep.nonzero().squeeze(1)

    # Members grouped by slot, each group its pick first and then the rest in input order.
    is_pick = torch.arange(num, device=device) == owner
    grouped = torch.argsort(2 * slot + (~is_pick).long(), stable=True)
    all_clusters = torch.split(grouped, torch.bincount(slot, minlength=len(picks)).tolist())
    kept_scores = merged_scores[kept_slots]
    return PoseNMSResult(
        kept=picks[kept_slots],
        clusters=[all_clusters[i] for i in kept_slots.tolist()],
        keypoints=merged_keypoints[kept_slots],
        keypoint_scores=kept_scores,
        scores=(kept_scores * weights).sum(-1) / weights.sum(),
        box_scores=box_scores[picks[kept_slots]],
    )


def _check_shapes(
    boxes: torch.Tensor,
    box_scores: torch.Tensor,
    keypoints: torch.Tensor,
    keypoint_scores: torch.Tensor,
) -> tuple[int, int]:
    if keypoints.dim() != 3 or keypoints.shape[-1] != 2:
        raise ValueError(f"keypoints must be (N, K, 2), got {tuple(keypoints.shape)}")
    num, num_keypoints = keypoints.shape[:2]
    expected = {
        "boxes": (boxes, (num, 4)),
        "box_scores": (box_scores, (num,)),
        "keypoint_scores": (keypoint_scores, (num, num_keypoints)),
    }
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(
                f"{name} must be {shape} for keypoints {tuple(keypoints.shape)},"
                f" got {tuple(tensor.shape)}"
            )
    return num, num_keypoints


def _weights_and_scales(
    part_weights: PartWeights | None, num_keypoints: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    if part_weights is None:
        ones = torch.ones(num_keypoints, dtype=dtype, device=device)
        return ones, ones
    if part_weights.num_keypoints != num_keypoints:
        raise ValueError(
            f"part_weights cover {part_weights.num_keypoints} keypoints, the poses have"
            f" {num_keypoints}"
        )
    return (
        torch.tensor(part_weights.weights, dtype=dtype, device=device),
        torch.tensor(part_weights.scales, dtype=dtype, device=device),
    )
