"""Two references for the parametric pose NMS, shared by the tests and the benchmark.

- ``reference_pose_nms``: REFERENCE.md's algorithm ("RMPE / AlphaPose") written out one
  candidate and keypoint at a time in plain Python floats: the loop form.
- ``full_pool_pose_nms``: the earlier vectorised implementation, which tests each pick against
  the whole remaining pool with the same tensor expressions as today's; the pruned
  implementation must give bit-identical results.
"""

from __future__ import annotations

import math

import torch

from posesuite.postprocess.pose_nms import (
    PartWeights,
    PoseNMSParams,
    PoseNMSResult,
    _check_shapes,
    _weights_and_scales,
)


def reference_pose_nms(boxes, keypoints, keypoint_scores, params, weights=None, scales=None):
    """The public 17-keypoint algorithm as REFERENCE.md states it, plus per-keypoint weights
    and distance scales (1 unless given). Returns (pick, cluster, merged xy, merged scores) per
    kept pose, the cluster with the pick first and the rest in input order."""
    num, num_keypoints = len(keypoints), len(keypoints[0])
    weights = weights or [1.0] * num_keypoints
    scales = scales or [1.0] * num_keypoints
    scores = [[params.zero_score if s == 0 else s for s in row] for row in keypoint_scores]
    person = [
        sum(w * s for w, s in zip(weights, row, strict=True)) / sum(weights) for row in scores
    ]
    reference = [params.alpha * max(x2 - x1, y2 - y1) for x1, y1, x2, y2 in boxes]

    def offset(i: int, j: int, k: int) -> tuple[float, float]:
        return (
            (keypoints[j][k][0] - keypoints[i][k][0]) / scales[k],
            (keypoints[j][k][1] - keypoints[i][k][1]) / scales[k],
        )

    picks, clusters = [], []
    remaining = list(range(num))
    while remaining:
        pick = remaining[0]
        for j in remaining:
            if person[j] > person[pick]:
                pick = j
        x1, y1, x2, y2 = boxes[pick]
        cluster = []
        for j in remaining:
            similarity = matches = 0.0
            for k in range(num_keypoints):
                dx, dy = offset(pick, j, k)
                distance = math.sqrt(dx * dx + dy * dy)
                if params.ksim_window == "pixel":
                    in_window = distance <= params.ksim_pixels
                else:
                    in_window = (
                        abs(dx) <= params.ksim_box_fraction * (x2 - x1) / 2
                        and abs(dy) <= params.ksim_box_fraction * (y2 - y1) / 2
                    )
                if in_window:
                    similarity += (
                        weights[k]
                        * math.tanh(scores[pick][k] / params.delta1)
                        * math.tanh(scores[j][k] / params.delta1)
                    )
                similarity += params.mu * weights[k] * math.exp(-distance / params.delta2)
                if distance <= min(reference[pick], params.match_cap_px):
                    matches += weights[k]
            if j == pick or similarity > params.gamma or matches >= params.match_threshold:
                cluster.append(j)
        remaining = [j for j in remaining if j not in cluster]
        picks.append(pick)
        clusters.append(cluster)

    kept = []
    for pick, cluster in zip(picks, clusters, strict=True):
        if max(scores[pick]) < params.score_threshold:
            continue
        radius = min(reference[pick], params.merge_cap_px)
        merged, merged_scores = [], []
        for k in range(num_keypoints):
            total = sum_x = sum_y = sum_squares = 0.0
            for j in cluster:
                dx, dy = offset(pick, j, k)
                if math.sqrt(dx * dx + dy * dy) <= radius:
                    s = scores[j][k]
                    total += s
                    sum_x += s * keypoints[j][k][0]
                    sum_y += s * keypoints[j][k][1]
                    sum_squares += s * s
            merged.append([sum_x / total, sum_y / total])
            merged_scores.append(sum_squares / total)
        if max(merged_scores) < params.score_threshold:
            continue
        xs, ys = [x for x, _ in merged], [y for _, y in merged]
        area = (max(xs) - min(xs)) * (max(ys) - min(ys))
        if params.area_scale * area < params.area_threshold:
            continue
        members = [pick] + [j for j in cluster if j != pick]
        kept.append((pick, members, merged, merged_scores))
    return kept


def full_pool_pose_nms(
    boxes: torch.Tensor,
    box_scores: torch.Tensor,
    keypoints: torch.Tensor,
    keypoint_scores: torch.Tensor,
    params: PoseNMSParams,
    part_weights: PartWeights | None = None,
) -> PoseNMSResult:
    """``parametric_pose_nms`` as it was before the neighbourhood pruning (commit d1c8939):
    each pick tested against the whole remaining pool. Kept as the bitwise oracle."""
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
