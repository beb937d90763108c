"""Per-keypoint diagnostics beside COCO AP: how well each joint is localised.

Each ground-truth person (with labelled keypoints, not crowd) is matched to the prediction of its
image with the highest OKS. For every labelled joint of a matched person, the joint's OKS term
exp(-d^2 / (2 s^2 (2 sigma)^2)) (s^2 = the person's area) measures localisation on the same scale
COCO AP uses; a term above 0.5 counts the joint as correct (a per-joint "PCK at OKS 0.5").
The terms are also split by the ground truth's visibility flag, since occluded joints (v = 1)
are where top-down models lose most of their AP.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from pycocotools.coco import COCO

# COCO visibility flags of labelled joints.
OCCLUDED, VISIBLE = 1, 2


def per_keypoint_oks(
    ground_truth: COCO, results: Sequence[dict], sigmas: Sequence[float], names: Sequence[str]
) -> dict[str, dict[str, float | None]]:
    """``{joint name: stats}`` over matched people, with "all" standing for every joint.

    stats: ``mean_oks`` and ``correct`` (share of OKS terms > 0.5) over the joint's labelled
    instances (``count``), and ``mean_oks_visible`` / ``count_visible`` (v = 2),
    ``mean_oks_occluded`` / ``count_occluded`` (v = 1); a mean over nothing is None (JSON null).
    """
    sigmas = np.asarray(sigmas, dtype=np.float64)
    variances = (2 * sigmas) ** 2
    by_image: dict[int, list[np.ndarray]] = defaultdict(list)
    for result in results:
        by_image[result["image_id"]].append(
            np.asarray(result["keypoints"], np.float64).reshape(-1, 3)
        )
    # terms[k] and flags[k]: the OKS terms of joint k over matched people and their GT flags
    terms: list[list[float]] = [[] for _ in sigmas]
    flags: list[list[int]] = [[] for _ in sigmas]
    for ann in ground_truth.loadAnns(ground_truth.getAnnIds(iscrowd=False)):
        gt = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
        labelled = gt[:, 2] > 0
        candidates = by_image.get(ann["image_id"])
        if not labelled.any() or not candidates:
            continue
        predictions = np.stack(candidates)[:, :, :2]
        squared = ((predictions - gt[None, :, :2]) ** 2).sum(-1)
        joint_oks = np.exp(-squared / (2 * max(ann["area"], 1e-9) * variances))
        best = joint_oks[:, labelled].mean(axis=1).argmax()
        for k in np.flatnonzero(labelled):
            terms[k].append(joint_oks[best, k])
            flags[k].append(int(gt[k, 2]))
    term_arrays = [np.asarray(t, np.float64) for t in terms]
    flag_arrays = [np.asarray(f, dtype=int) for f in flags]
    stats = {name: _stats(t, f) for name, t, f in zip(names, term_arrays, flag_arrays, strict=True)}
    stats["all"] = _stats(np.concatenate(term_arrays), np.concatenate(flag_arrays))
    return stats


def _stats(terms: np.ndarray, flags: np.ndarray) -> dict[str, float | None]:
    def mean(values: np.ndarray) -> float | None:
        return float(values.mean()) if values.size else None

    visible, occluded = terms[flags == VISIBLE], terms[flags == OCCLUDED]
    return {
        "mean_oks": mean(terms),
        "correct": mean(terms > 0.5),
        "count": int(terms.size),
        "mean_oks_visible": mean(visible),
        "count_visible": int(visible.size),
        "mean_oks_occluded": mean(occluded),
        "count_occluded": int(occluded.size),
    }


def format_table(stats: dict[str, dict[str, float | None]]) -> str:
    """A fixed-width text table of :func:`per_keypoint_oks`'s output, one joint per row."""

    def cell(value: float | None) -> str:
        return f"{value:6.3f}" if value is not None else f"{'-':>6s}"

    columns = ("OKS", ">0.5", "n", "vis", "occl", "n_occl")
    lines = [f"{'joint':16s} " + " ".join(f"{c:>6s}" for c in columns)]
    for name, s in stats.items():
        lines.append(
            f"{name:16s} {cell(s['mean_oks'])} {cell(s['correct'])} {s['count']:6d} "
            f"{cell(s['mean_oks_visible'])} {cell(s['mean_oks_occluded'])} {s['count_occluded']:6d}"
        )
    return "\n".join(lines)
