"""Per-keypoint diagnostics beside COCO AP: how well each joint is localised.

Each ground-truth person (with labelled keypoints, not crowd) is matched to the prediction of its
image with the highest OKS. For every labelled joint of a matched person, the joint's OKS term
exp(-d^2 / (2 s^2 (2 sigma)^2)) (s^2 = the person's area) measures localisation on the same scale
COCO AP uses; a term above 0.5 counts the joint as correct (a per-joint "PCK at OKS 0.5").
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from pycocotools.coco import COCO


def per_keypoint_oks(
    ground_truth: COCO, results: Sequence[dict], sigmas: Sequence[float], names: Sequence[str]
) -> dict[str, dict[str, float]]:
    """``{joint name: {"mean_oks": ..., "correct": ..., "count": ...}}`` over matched people."""
    sigmas = np.asarray(sigmas, dtype=np.float64)
    variances = (2 * sigmas) ** 2
    by_image: dict[int, list[np.ndarray]] = defaultdict(list)
    for result in results:
        by_image[result["image_id"]].append(
            np.asarray(result["keypoints"], np.float64).reshape(-1, 3)
        )
    terms: list[list[float]] = [[] for _ in sigmas]
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
    return {
        name: {
            "mean_oks": float(np.mean(values)) if values else float("nan"),
            "correct": float(np.mean(np.asarray(values) > 0.5)) if values else float("nan"),
            "count": len(values),
        }
        for name, values in zip(names, terms, strict=True)
    }
