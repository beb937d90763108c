"""Per-keypoint diagnostics beside COCO AP: how well each joint is localised.

Each ground-truth person (with labelled keypoints, not crowd) is matched to the prediction of its
image with the highest OKS. For every labelled joint of a matched person, the joint's OKS term
exp(-d^2 / (2 s^2 (2 sigma)^2)) (s^2 = the person's area) measures localisation on the same scale
COCO AP uses; a term above 0.5 counts the joint as correct (a per-joint "PCK at OKS 0.5").
The terms are also split by the ground truth's visibility flag, since occluded joints (v = 1)
are where top-down models lose most of their AP.

Per person, the mean of those terms is the person's OKS; grouped by COCO's size ranges and by
the share of the person's labelled joints that are occluded, it shows which people the AP is
lost on (a person under OKS 0.5 is a miss at every threshold of COCO AP).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

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
    # terms[k] and flags[k]: the OKS terms of joint k over matched people and their GT flags
    terms: list[list[float]] = [[] for _ in sigmas]
    flags: list[list[int]] = [[] for _ in sigmas]
    for person in _matched_people(ground_truth, results, sigmas):
        for k in np.flatnonzero(person.labelled):
            terms[k].append(person.terms[k])
            flags[k].append(person.flags[k])
    term_arrays = [np.asarray(t, np.float64) for t in terms]
    flag_arrays = [np.asarray(f, dtype=int) for f in flags]
    stats = {name: _stats(t, f) for name, t, f in zip(names, term_arrays, flag_arrays, strict=True)}
    stats["all"] = _stats(np.concatenate(term_arrays), np.concatenate(flag_arrays))
    return stats


# COCO's size ranges (segment area in pixels) and the occluded-share bins of per_person_oks.
AREA_RANGES = {"small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, np.inf)}
OCCLUDED_SHARES = {"<25%": (0.0, 0.25), "25-50%": (0.25, 0.5), ">=50%": (0.5, np.inf)}


def per_person_oks(
    ground_truth: COCO, results: Sequence[dict], sigmas: Sequence[float]
) -> dict[str, dict[str, float | None]]:
    """``{"AREA/OCCLUDED": stats}`` over matched people, for AREA in all, small, medium, large
    (COCO's ranges) and OCCLUDED in all, <25%, 25-50%, >=50% (the share of the person's labelled
    joints with v = 1).

    stats: ``count`` people, their ``mean_oks``, ``below_half`` (share with OKS < 0.5) and
    ``lost_share`` (their sum of 1 - OKS over that of all matched people).
    """
    people = list(_matched_people(ground_truth, results, sigmas))
    oks = np.array([p.terms[p.labelled].mean() for p in people], np.float64)
    area = np.array([p.area for p in people], np.float64)
    occluded = np.array([(p.flags == OCCLUDED).sum() / p.labelled.sum() for p in people])
    total_lost = float((1.0 - oks).sum())
    everyone = {"all": (-np.inf, np.inf)}
    stats: dict[str, dict[str, float | None]] = {}
    for area_name, (area_low, area_high) in {**everyone, **AREA_RANGES}.items():
        for share_name, (share_low, share_high) in {**everyone, **OCCLUDED_SHARES}.items():
            chosen = oks[
                (area >= area_low)
                & (area < area_high)
                & (occluded >= share_low)
                & (occluded < share_high)
            ]
            lost = float((1.0 - chosen).sum())
            stats[f"{area_name}/{share_name}"] = {
                "count": int(chosen.size),
                "mean_oks": float(chosen.mean()) if chosen.size else None,
                "below_half": float((chosen < 0.5).mean()) if chosen.size else None,
                "lost_share": lost / total_lost if total_lost > 0 else None,
            }
    return stats


@dataclass(frozen=True)
class _MatchedPerson:
    """A ground-truth person and the OKS terms of the prediction matched to it."""

    area: float
    flags: np.ndarray  # (K,) GT visibility flags
    terms: np.ndarray  # (K,) OKS terms; meaningful where labelled

    @property
    def labelled(self) -> np.ndarray:
        return self.flags > 0


def _matched_people(
    ground_truth: COCO, results: Sequence[dict], sigmas: Sequence[float]
) -> Iterator[_MatchedPerson]:
    """Every non-crowd person with labelled joints in an image with predictions, matched to the
    prediction of that image with the highest OKS."""
    variances = (2 * np.asarray(sigmas, dtype=np.float64)) ** 2
    by_image: dict[int, list[np.ndarray]] = defaultdict(list)
    for result in results:
        by_image[result["image_id"]].append(
            np.asarray(result["keypoints"], np.float64).reshape(-1, 3)
        )
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
        yield _MatchedPerson(float(ann["area"]), gt[:, 2].astype(int), joint_oks[best])


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

    columns = ("OKS", ">0.5", "n", "vis", "occl", "n_occl")
    lines = [f"{'joint':16s} " + " ".join(f"{c:>6s}" for c in columns)]
    for name, s in stats.items():
        visible, occluded = _cell(s["mean_oks_visible"]), _cell(s["mean_oks_occluded"])
        lines.append(
            f"{name:16s} {_cell(s['mean_oks'])} {_cell(s['correct'])} {s['count']:6d} "
            f"{visible} {occluded} {s['count_occluded']:6d}"
        )
    return "\n".join(lines)


def format_people_table(stats: dict[str, dict[str, float | None]]) -> str:
    """A fixed-width text table of :func:`per_person_oks`'s output, one group per row."""
    lines = [f"{'people (area/occluded)':24s} {'n':>6s} {'OKS':>6s} {'<0.5':>6s} {'lost':>6s}"]
    for name, s in stats.items():
        cells = (s["mean_oks"], s["below_half"], s["lost_share"])
        lines.append(f"{name:24s} {s['count']:6d} " + " ".join(_cell(v) for v in cells))
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return f"{value:6.3f}" if value is not None else f"{'-':>6s}"
