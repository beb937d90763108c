"""Object keypoint similarity (OKS) between poses, and greedy (hard or soft) OKS-NMS.

This is the OKS-NMS of the standard top-down pipelines (SimpleBaseline, HRNet, mmpose), which
differs from the OKS that COCOeval scores a prediction with in two ways: neither pose is ground
truth, so the squared scale is the mean of the two areas, and the mean runs over all K keypoints
(keypoint scores and visibility are not used). For poses ``a`` and ``b`` with areas ``A_a``,
``A_b`` and per-keypoint sigmas ``σ_k``::

    e_k = ‖a_k − b_k‖² / (2 · s² · (2σ_k)²),   s² = (A_a + A_b) / 2
    OKS(a, b) = (1/K) Σ_k exp(−e_k)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# Added to the squared scale as pycocotools and HRNet do, so zero-area poses do not divide by 0.
_SCALE_EPSILON = float(np.spacing(1))


def oks_similarity(
    keypoints_a: torch.Tensor,
    keypoints_b: torch.Tensor,
    area_a: torch.Tensor | float,
    areas_b: torch.Tensor | float,
    sigmas: torch.Tensor | Sequence[float] | np.ndarray,
) -> torch.Tensor:
    """OKS between poses, as defined in the module docstring.

    The usual call compares one pose with many: ``keypoints_a`` (K, 2 or 3), ``keypoints_b``
    (M, K, 2 or 3), ``area_a`` a scalar and ``areas_b`` (M,), giving (M,). Leading dimensions
    broadcast in general, e.g. ``a[:, None]`` against ``b[None]`` gives the (N, M) matrix.
    Only x and y are read; a third (score) column is ignored.
    """
    sigmas = torch.as_tensor(sigmas, dtype=keypoints_b.dtype, device=keypoints_b.device)
    area_a = torch.as_tensor(area_a, dtype=keypoints_b.dtype, device=keypoints_b.device)
    areas_b = torch.as_tensor(areas_b, dtype=keypoints_b.dtype, device=keypoints_b.device)
    squared_distances = (keypoints_a[..., :2] - keypoints_b[..., :2]).square().sum(-1)
    squared_scale = (area_a + areas_b) / 2 + _SCALE_EPSILON
    exponent = squared_distances / ((2 * sigmas) ** 2 * 2 * squared_scale[..., None])
    return torch.exp(-exponent).mean(-1)


def oks_nms(
    keypoints: torch.Tensor,
    scores: torch.Tensor,
    areas: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float] | np.ndarray,
    threshold: float = 0.9,
) -> torch.Tensor:
    """Greedy OKS-NMS: keep the best-scoring pose, drop every other pose whose OKS with it is
    above ``threshold``, repeat on what is left. Call it per image: it compares all pairs.

    Args:
        keypoints: (N, K, 3) poses [x, y, score] (or (N, K, 2)).
        scores: (N,) person scores; ties keep the input order.
        areas: (N,) person areas (the squared scale of the OKS).
        sigmas: (K,) per-keypoint OKS sigmas.
        threshold: a pose with OKS ``> threshold`` to a kept pose is suppressed (``<=`` survives).

    Returns:
        int64 indices into the inputs of the kept poses, in descending score order.
    """
    order = torch.argsort(scores, descending=True, stable=True)
    poses, pose_areas = keypoints[order], areas[order]
    # All pairs at once (O(N²·K) memory, small for one image's people); the greedy sweep is
    # sequential, and on a NumPy bool matrix it costs microseconds per pick.
    similarity = oks_similarity(
        poses[:, None], poses[None], pose_areas[:, None], pose_areas[None], sigmas
    )
    suppresses = (similarity > threshold).cpu().numpy()
    kept = []
    remaining = np.arange(len(order))
    while remaining.size > 0:
        pick, remaining = remaining[0], remaining[1:]
        kept.append(pick)
        remaining = remaining[~suppresses[pick, remaining]]
    return order[torch.as_tensor(kept, dtype=torch.long, device=order.device)]


def soft_oks_nms(
    keypoints: torch.Tensor,
    scores: torch.Tensor,
    areas: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float] | np.ndarray,
    decay_sigma: float = 0.9,
    max_detections: int | None = 20,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft OKS-NMS: instead of removing the poses that overlap a pick, lower their scores.

    Repeatedly pick the pose with the highest current score, then multiply the score of every
    pose not yet picked by ``exp(−OKS² / decay_sigma)`` with the pick (Soft-NMS's Gaussian
    penalty with OKS in place of IoU, as the soft variant of the common top-down codebases
    does). A pose far from every pick keeps its score; a near-duplicate is pushed down the
    ranking rather than lost. Call it per image: it compares all pairs.

    Args:
        keypoints: (N, K, 3) poses [x, y, score] (or (N, K, 2)).
        scores: (N,) person scores; ties keep the input order.
        areas: (N,) person areas (the squared scale of the OKS).
        sigmas: (K,) per-keypoint OKS sigmas.
        decay_sigma: the Gaussian's σ; smaller decays near-duplicates harder. 0.9 is the value
            those codebases pass (their OKS-NMS threshold, reused as σ).
        max_detections: stop after this many picks (20 in those codebases); None picks all N.

    Returns:
        (kept, kept_scores): int64 indices into the inputs in pick order, and each kept pose's
        score when it was picked (its input score decayed by every earlier pick).
    """
    if decay_sigma <= 0:
        raise ValueError(f"decay_sigma must be > 0, got {decay_sigma!r}")
    num = scores.shape[0]
    limit = num if max_detections is None else min(max_detections, num)
    similarity = oks_similarity(
        keypoints[:, None], keypoints[None], areas[:, None], areas[None], sigmas
    )
    penalty = torch.exp(-similarity.square() / decay_sigma)
    current = scores.to(penalty.dtype)
    # Picked poses are masked to −inf; argmax takes the first maximum, so ties keep input order.
    available = torch.ones(num, dtype=torch.bool, device=scores.device)
    kept, kept_scores = [], []
    for _ in range(limit):
        pick = int(torch.argmax(current.masked_fill(~available, -torch.inf)))
        kept.append(pick)
        kept_scores.append(current[pick])
        available[pick] = False
        current = current * penalty[pick]
    kept_indices = torch.as_tensor(kept, dtype=torch.long, device=scores.device)
    if not kept_scores:
        return kept_indices, scores.new_empty(0)
    return kept_indices, torch.stack(kept_scores).to(scores.dtype)
