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

How it is computed: the result is, bit for bit, that of testing each pick against the whole
remaining pool in tensor ops, without doing so. A pick's rules can fire on a candidate only if,
for some group of weighted keypoints sharing a distance scale, the boxes of the two candidates'
(scaled) keypoints are within the pick's reach R on both axes, R being the largest of the K_sim
window (``ksim_pixels``, or half the longer side of the paper's window), the match radius (if
the match threshold can be reached at all) and ``δ2 ln(μ Σw / γ)`` (raised a little for
rounding). Beyond it on some axis, every keypoint is farther than R, since an axis gap between
the boxes is at most each keypoint's offset: none is in the window, none matches and
``μ Σ w exp(−d/δ2) < γ``. Only such neighbour pairs are tested, with the loop's tensor
expressions, each pair summed along its own row, so each decision is the one the whole-pool
test gives (see :func:`_greedy_owners`; the tests check this bit for bit on the CPU, in float64
and float32; a GPU's reductions may order a row's sum by the batch's shape, so there a tie
within rounding could go the other way).

Whole-body skeletons: an optional :class:`PartWeights` gives each keypoint a weight (its share of
``simi``, of the match count and of the person score) and a distance scale (its distances are
divided by it before every comparison, so its K_sim window, δ2 and match and merge radii grow with
it), so that 110 face and hand points need not outvote the body. Nothing is normalised by the
number of candidates: the public whole-body version divides its match count by that number, so
that with many candidates nothing is suppressed.
"""

from __future__ import annotations

import dataclasses
import functools
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

    # The greedy loop, over the candidates in pick order (index = rank).
    order = torch.argsort(person_scores, descending=True, stable=True)
    owner_rank = _greedy_owners(
        scaled.index_select(0, order),
        box_sides.index_select(0, order),
        tanh_scores.index_select(0, order),
        match_radius.index_select(0, order),
        weights,
        scales,
        params,
    )
    owner = torch.empty_like(order)
    owner[order] = order[owner_rank]
    picks = order[owner_rank == torch.arange(num, device=device)]

    # Clusters partition the candidates, so every cluster merges at once: each candidate adds
    # its score-weighted keypoints to its pick's slot where it lies within the merge radius.
    slot_of_pick = torch.empty(num, dtype=torch.long, device=device)
    slot_of_pick[picks] = torch.arange(len(picks), device=device)
    slot = slot_of_pick[owner]
    distances = torch.linalg.vector_norm(scaled - scaled.index_select(0, owner), dim=-1)
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


# Pair decisions are batched in blocks of at most this many pair-keypoints, which bounds the
# memory as the full-pool sweep's (pool × K) did.
_PAIR_BLOCK = 1 << 20
# A round's bookkeeping over this many pairs costs about as much as testing one pick alone.
_PAIRS_PER_PICK = 8192
# Past this share of all pairs, listing the neighbour pairs costs more than it saves.
_DENSE_FRACTION = 0.25
# Up to this many pairs, testing them all is cheaper than sorting out the neighbours.
_ALL_PAIRS = 1 << 14


def _greedy_owners(
    scaled: torch.Tensor,
    box_sides: torch.Tensor,
    tanh_scores: torch.Tensor,
    match_radius: torch.Tensor,
    weights: torch.Tensor,
    scales: torch.Tensor,
    params: PoseNMSParams,
) -> torch.Tensor:
    """The pick that takes each candidate (itself for a pick), inputs and output in pick order.

    Equal to the one-pick-at-a-time loop: a candidate belongs to the first pick (in rank order)
    whose rules fire on it, and is a pick if no earlier pick's do. Only neighbours (see
    :func:`_within_reach`) can fire, so only they are tested. First in rounds over the
    neighbour pairs: a candidate is settled once no unsettled candidate ranked before its first
    known taker could still take it, and each round's new picks are tested against their
    unsettled neighbours in one batch (clustered or isolated candidates settle in two or three
    rounds). When a round makes too few picks to pay for its bookkeeping over the pairs left (a
    chain of picks, each a neighbour of the next), the rest goes one pick at a time against
    the pool of unsettled candidates, testing only the pick's neighbours; when the candidates are
    too crowded for the pairs to be worth listing, all of it goes so, testing the whole pool (the
    full-pool sweep).
    """
    num = len(scaled)
    device = scaled.device
    ranks = torch.arange(num, device=device)
    total_weight = float(weights.sum())
    slack = 8 * (scaled.shape[1] + 4096) * torch.finfo(scaled.dtype).eps
    reach = _reach(box_sides, match_radius, total_weight, slack, params)
    boxes = _keypoint_boxes(scaled, weights, scales)
    joins = functools.partial(
        _joins,
        scaled=scaled,
        box_sides=box_sides,
        tanh_scores=tanh_scores,
        match_radius=match_radius,
        weights=weights,
        params=params,
    )
    pending = torch.ones(num, dtype=torch.bool, device=device)
    owner = torch.full((num,), num, device=device)  # num: no pick has taken it yet
    pairs = _neighbour_pairs(boxes, reach)
    crowded = pairs is None  # then nearly every candidate is a neighbour of every other
    while pairs is not None:
        first, second = pairs
        # Every pair left has both ends pending; its second stays open while the first, ranked
        # before the second's first known taker, may become a pick that takes it first.
        blocked = torch.zeros_like(pending)
        blocked[second[first < owner[second]]] = True
        settled = pending & ~blocked
        new_picks = settled & (owner == num)
        owner = torch.where(new_picks, ranks, owner)
        pending &= ~settled
        asked = (new_picks[first] & pending[second] & (first < owner[second])).nonzero()[:, 0]
        if len(asked):
            pick_of, candidate = first[asked], second[asked]
            joined = joins(pick_of, candidate)
            owner.scatter_reduce_(0, candidate[joined], pick_of[joined], reduce="amin")
        live = pending[first] & pending[second]
        pairs = first[live], second[live]
        made = int(new_picks.sum())
        if not bool(pending.any()) or (made - 1) * _PAIRS_PER_PICK <= len(pairs[0]):
            break
    # The rest one pick at a time, in rank order: when a candidate comes up, every pick ranked
    # before it has been tested, so it is a pick unless one of them took it.
    pool = pending.nonzero()[:, 0]
    while len(pool):
        pick, pool = int(pool[0]), pool[1:]
        if int(owner[pick]) < num:
            continue
        owner[pick] = pick
        candidate = pool if crowded else pool[_within_reach(boxes, reach, pick, pool)]
        owner[candidate[joins(pick, candidate)]] = pick
        pool = pool[owner[pool] > pick]  # a taker ranked before the pick is final
    return owner


def _reach(
    box_sides: torch.Tensor,
    match_radius: torch.Tensor,
    total_weight: float,
    slack: float,
    params: PoseNMSParams,
) -> torch.Tensor:
    """Per candidate as the pick: a distance R (in scaled units) such that no rule fires on a
    candidate each of whose weighted keypoints is offset by more than R on some axis.

    Such a candidate has no keypoint in the K_sim window (R covers the pixel radius or the
    paper's half sides), matches none (R covers the match radius, unless the threshold exceeds
    the total weight) and has ``simi = μ Σ w exp(−d / δ2) < μ Σ w exp(−R / δ2) <= γ``
    (:func:`_spatial_reach`). Keypoints of weight 0 add exactly 0 to every sum (or NaN, which
    fires no rule). NaN becomes inf: nothing is pruned for that pick.
    """
    if params.ksim_window == "pixel":
        reach = torch.full_like(match_radius, params.ksim_pixels)
    else:
        reach = params.ksim_box_fraction / 2 * box_sides.amax(-1)
    spatial = _spatial_reach(params, total_weight, slack)
    reach = torch.maximum(reach, torch.full_like(reach, spatial))
    if params.match_threshold <= total_weight * (1 + slack):
        reach = torch.maximum(reach, match_radius)
    # Never below √tiny: the squares of larger gaps are normal numbers, so a rounded distance
    # is never below its larger axis offset.
    reach = reach.clamp(min=torch.finfo(reach.dtype).tiny ** 0.5)
    return torch.where(reach.isnan(), math.inf, reach)


def _spatial_reach(params: PoseNMSParams, total_weight: float, slack: float) -> float:
    """The distance beyond which ``μ Σ_k w_k exp(−d_k / δ2)`` cannot exceed γ: ``δ2 ln(μ Σw / γ)``,
    raised by ``δ2 · slack`` so that the rounding of the exponentials, products and sums (a
    relative ``(K + 4096) · 8 ε`` covers them) cannot carry the rounded sum above γ."""
    if params.gamma == math.inf:
        return 0.0
    if params.gamma <= 0:
        return math.inf
    ratio = params.mu * total_weight / params.gamma
    exponent = math.log(ratio) + slack if ratio > 0 else -math.inf
    return params.delta2 * exponent if exponent > 0 else 0.0


def _keypoint_boxes(
    scaled: torch.Tensor, weights: torch.Tensor, scales: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per group of weighted keypoints with one distance scale, each candidate's box of its
    scaled keypoints, ``(low, high)`` of shape (N, 2); a box with a non-finite value covers the
    plane, so that such a candidate is never pruned."""
    groups: dict[float, list[int]] = {}
    for index, (weight, scale) in enumerate(zip(weights.tolist(), scales.tolist(), strict=True)):
        if weight > 0:
            groups.setdefault(scale, []).append(index)
    boxes = []
    for indices in groups.values():
        points = scaled if len(indices) == len(weights) else scaled[:, indices]
        low, high = torch.aminmax(points, dim=1)
        wild = ~(low.isfinite() & high.isfinite()).all(-1, keepdim=True)
        boxes.append((low.masked_fill(wild, -math.inf), high.masked_fill(wild, math.inf)))
    return boxes


def _within_reach(
    boxes: list[tuple[torch.Tensor, torch.Tensor]],
    reach: torch.Tensor,
    first: torch.Tensor | int,
    second: torch.Tensor,
) -> torch.Tensor:
    """Whether, for some group, both axis gaps between the keypoint boxes of ``first`` and
    ``second`` are within the first's reach: else no rule of the first fires on the second.

    The gap on an axis (``low_b − high_a`` or ``low_a − high_b``) is at most each keypoint's
    offset on that axis, and rounding keeps the order, so (rounded) it is at most each
    keypoint's distance too: a candidate outside on some axis for every group has every weighted
    keypoint farther than the reach, which :func:`_reach` shows fires nothing.
    """
    near = torch.zeros(second.shape, dtype=torch.bool, device=second.device)
    for low, high in boxes:
        gaps = torch.maximum(low[second] - high[first], low[first] - high[second])
        near |= (gaps <= reach[first, None]).all(-1)
    return near


def _neighbour_pairs(
    boxes: list[tuple[torch.Tensor, torch.Tensor]], reach: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Every pair ``first < second`` (ranks) that :func:`_within_reach` keeps, sorted; None when
    they are more than ``_DENSE_FRACTION`` of all pairs.

    Up to ``_ALL_PAIRS`` pairs, all are tested. Else the pairs to test come from a sort along
    one axis (the one on which fewer meet) of the boxes widened by their reach: boxes whose
    rounded gap is within ``reach_first`` still meet after widening by ``reach · (1 + 4 ε)``,
    so the sort misses none of them; more than ``_DENSE_FRACTION`` of all pairs from the sort
    gives None.
    """
    num = len(reach)
    if num * (num - 1) // 2 <= _ALL_PAIRS:
        first, second = torch.triu_indices(num, num, 1, device=reach.device)
        near = _within_reach(boxes, reach, first, second).nonzero().squeeze(1)
        if len(near) > _DENSE_FRACTION * len(first):
            return None
        return first[near], second[near]
    pad = reach * (1 + 4 * torch.finfo(reach.dtype).eps)
    skip = torch.arange(1, num + 1, device=reach.device)
    sweeps, listed = [], 0
    for low, high in boxes:
        per_axis = [_sweep(low[:, axis] - pad, high[:, axis] + pad) for axis in (0, 1)]
        counts = [int((stop - skip).sum()) for _, stop in per_axis]
        axis = counts.index(min(counts))
        listed += counts[axis]
        sweeps.append((low, high, axis, *per_axis[axis]))
    if listed > _DENSE_FRACTION * num * (num - 1) / 2:
        return None
    codes = []
    for low, high, axis, by_start, stop in sweeps:
        i, j = _ranges(skip, stop)
        # The other axis first, in sorted order and with the larger reach of the two: cheap,
        # and it keeps every pair that the exact test keeps.
        across = 1 - axis
        low_across, high_across = low[by_start, across], high[by_start, across]
        reach_sorted = reach[by_start]
        gap = torch.maximum(low_across[j] - high_across[i], low_across[i] - high_across[j])
        close = (gap <= torch.maximum(reach_sorted[i], reach_sorted[j])).nonzero().squeeze(1)
        one, other = by_start[i[close]], by_start[j[close]]
        codes.append(torch.minimum(one, other) * num + torch.maximum(one, other))
    code = torch.cat(codes).unique()  # sorted, each pair once
    first, second = code // num, code % num
    near = _within_reach(boxes, reach, first, second)
    return first[near], second[near]


def _sweep(start: torch.Tensor, end: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Intervals ``[start, end]`` sorted by start, and for the i-th the end of the run of later
    ones that begin before it ends: the pairs (i, j), i < j < stop_i, are each pair that meets,
    once."""
    start_sorted, by_start = start.contiguous().sort()
    return by_start, torch.searchsorted(start_sorted, end[by_start].contiguous(), right=True)


def _ranges(starts: torch.Tensor, ends: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(row, position)`` for every position in ``[starts[row], ends[row])``."""
    counts = ends - starts
    rows = torch.repeat_interleave(torch.arange(len(starts), device=starts.device), counts)
    skipped = torch.repeat_interleave(starts - (counts.cumsum(0) - counts), counts)
    return rows, torch.arange(len(rows), device=starts.device) + skipped


def _joins(
    picks: torch.Tensor | int,
    candidates: torch.Tensor,
    scaled: torch.Tensor,
    box_sides: torch.Tensor,
    tanh_scores: torch.Tensor,
    match_radius: torch.Tensor,
    weights: torch.Tensor,
    params: PoseNMSParams,
) -> torch.Tensor:
    """Whether each pick's rules fire on its candidate (the module docstring's step 2); one
    pick (an int) is tested against all the candidates.

    Each pair's terms are elementwise ops summed along its own row, so its decision does not
    depend on which pairs share the batch (which is cut in blocks of ``_PAIR_BLOCK``).
    """
    block = max(1, _PAIR_BLOCK // scaled.shape[1])
    if len(candidates) > block:
        return torch.cat(
            [
                _joins(
                    picks if isinstance(picks, int) else picks[begin : begin + block],
                    candidates[begin : begin + block],
                    scaled,
                    box_sides,
                    tanh_scores,
                    match_radius,
                    weights,
                    params,
                )
                for begin in range(0, len(candidates), block)
            ]
        )
    offsets = _rows(scaled, candidates) - _rows(scaled, picks)
    distances = torch.linalg.vector_norm(offsets, dim=-1)
    if params.ksim_window == "pixel":
        in_window = distances <= params.ksim_pixels
    else:
        half_sides = params.ksim_box_fraction / 2 * _rows(box_sides, picks)
        in_window = (offsets.abs() <= half_sides[..., None, :]).all(-1)
    pose_terms = in_window * _rows(tanh_scores, picks) * _rows(tanh_scores, candidates) * weights
    pose_similarity = pose_terms.sum(-1)
    spatial_similarity = (torch.exp(-distances / params.delta2) * weights).sum(-1)
    similarity = pose_similarity + params.mu * spatial_similarity
    matches = ((distances <= _rows(match_radius, picks)[..., None]) * weights).sum(-1)
    return (similarity > params.gamma) | (matches >= params.match_threshold)


def _rows(tensor: torch.Tensor, index: torch.Tensor | int) -> torch.Tensor:
    """``tensor[index]`` along the first axis (``index_select``: a faster gather, same values)."""
    return tensor[index] if isinstance(index, int) else tensor.index_select(0, index)
