"""MPII's PCKh as a `PoseMetric` (``metric=pckh``), by the benchmark's protocol.

The protocol (the MPII benchmark's Matlab evaluation; mmpose's and HRNet's Python ports compute
the same Mean): a labelled joint is correct when its prediction lies within ``threshold`` x the
person's head size of the ground truth, head size = 0.6 x the diagonal of the annotated head box
(``headboxes_src`` of ``mpii_gt_val.mat``). Per joint, PCKh is the share of its labelled
instances that are correct; a group (Head, Shoulder, ..., Ankle, from the skeleton's ``groups``)
reports the mean of its joints' PCKh; ``PCKh`` (the protocol's Mean) and ``PCKh@0.1`` pool every
labelled joint of the groups (all but pelvis and thorax). Every ground-truth person counts once:
a person without a prediction has every labelled joint wrong.

Predictions are matched to ground-truth people by ``annotation_id`` (the person a crop was made
from); the benchmark counts a distance equal to the threshold as correct (``<=``; mmpose's port
uses ``<``, which differs only on exact ties).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from posesuite.data.sources.mpii import MpiiGroundTruth, read_mpii_ground_truth
from posesuite.metrics.base import PoseMetric, Report
from posesuite.metrics.predictions import People
from posesuite.skeleton import Skeleton

log = logging.getLogger(__name__)

# The benchmark's SC_BIAS: head size = 0.6 x the head box diagonal.
HEAD_BOX_FACTOR = 0.6
PRIMARY_THRESHOLD = 0.5
LOW_THRESHOLD = 0.1
HEAD_SIZES = ("headbox", "joints")


@dataclass(frozen=True)
class JointCounts:
    """Per joint (K,): labelled instances over every ground-truth person, and how many of them
    the predictions got within each threshold x head size."""

    labelled: np.ndarray
    correct: Mapping[float, np.ndarray]


def head_sizes(ground_truth: MpiiGroundTruth, how: str, skeleton: Skeleton) -> np.ndarray:
    """(N,) head size of each ground-truth person; NaN where ``joints`` cannot tell.

    ``headbox`` (official): 0.6 x the head box diagonal. ``joints`` (not the official protocol):
    the distance from upper_neck to head_top, which stands in for it where no head boxes are
    annotated; it is of the same size but not equal, so values are not comparable with
    published PCKh.
    """
    if how == "headbox":
        if ground_truth.head_boxes is None:
            raise ValueError(
                f"{ground_truth.path}: official PCKh needs the annotated head boxes "
                "(headboxes_src of MPII's mpii_gt_val.mat, data.dataset.val_head_boxes), and "
                "this file has none; metric.head_size=joints (posesuite-eval --head-size joints) "
                "approximates them from head_top and upper_neck (not the official protocol)"
            )
        corners = ground_truth.head_boxes
        sizes = HEAD_BOX_FACTOR * np.linalg.norm(corners[:, 1] - corners[:, 0], axis=1)
        if (sizes <= 0).any():
            person = np.flatnonzero(sizes <= 0)[0]
            raise ValueError(f"{ground_truth.path}: person #{person} has an empty head box")
        return sizes
    if how == "joints":
        neck, top = skeleton.index("upper_neck"), skeleton.index("head_top")
        both = ground_truth.labelled[:, neck] & ground_truth.labelled[:, top]
        length = np.linalg.norm(ground_truth.joints[:, top] - ground_truth.joints[:, neck], axis=1)
        return np.where(both & (length > 0), length, np.nan)
    raise ValueError(f"head_size must be one of {', '.join(HEAD_SIZES)}, got {how!r}")


def match_predictions(
    ground_truth: MpiiGroundTruth,
    keypoints: np.ndarray,
    annotation_ids: np.ndarray,
    scores: np.ndarray,
) -> np.ndarray:
    """(N, K, 2) the prediction of each ground-truth person, NaN for people without one.

    Where several predictions name one person (the highest-scored is taken), each person still
    counts once. Predictions of detector boxes (annotation id -1) cannot be scored by PCKh.
    """
    annotation_ids = np.asarray(annotation_ids, dtype=np.int64)
    detected = annotation_ids == -1
    if detected.any():
        raise ValueError(
            f"PCKh scores each ground-truth person of {ground_truth.path} by the crop of its own "
            f"box, but {int(detected.sum())} of {len(annotation_ids)} predictions come from "
            "detector boxes (annotation id -1): evaluate on ground-truth boxes "
            "(data.box_source=gt), or give results records an annotation_id"
        )
    unknown = (annotation_ids < 0) | (annotation_ids >= len(ground_truth))
    if unknown.any():
        raise ValueError(
            f"annotation id {int(annotation_ids[unknown][0])} names no person of "
            f"{ground_truth.path} (people 0-{len(ground_truth) - 1}, in file order)"
        )
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    _, first = np.unique(annotation_ids[order], return_index=True)
    chosen = order[first]
    matched = np.full(ground_truth.joints.shape, np.nan)
    matched[annotation_ids[chosen]] = np.asarray(keypoints, dtype=np.float64)[chosen, :, :2]
    return matched


def joint_counts(
    ground_truth: MpiiGroundTruth,
    matched: np.ndarray,
    sizes: np.ndarray,
    thresholds: Sequence[float] = (PRIMARY_THRESHOLD, LOW_THRESHOLD),
) -> JointCounts:
    """Count labelled and correct joints; people whose head size is NaN are left out."""
    scored = ground_truth.labelled & np.isfinite(sizes)[:, None]
    distance = np.linalg.norm(matched - ground_truth.joints, axis=2) / sizes[:, None]
    # NaN distances (no prediction) compare False: a miss.
    correct = {t: ((distance <= t) & scored).sum(axis=0) for t in thresholds}
    return JointCounts(labelled=scored.sum(axis=0), correct=correct)


def _share(correct: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """100 x correct / labelled, NaN where nothing is labelled."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(labelled > 0, 100.0 * correct / labelled, np.nan)


def pckh_values(counts: JointCounts, groups: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """``PCKh`` and ``PCKh@0.1`` pooled over the groups' joints, then each group's mean PCKh."""
    members = sorted({joint for joints in groups.values() for joint in joints})
    values = {}
    for name, threshold in (("PCKh", PRIMARY_THRESHOLD), ("PCKh@0.1", LOW_THRESHOLD)):
        labelled = counts.labelled[members].sum()
        correct = counts.correct[threshold][members].sum()
        values[name] = float(_share(np.asarray(correct), np.asarray(labelled)))
    per_joint = _share(counts.correct[PRIMARY_THRESHOLD], counts.labelled)
    for name, joints in groups.items():
        values[name] = float(np.mean(per_joint[list(joints)]))
    return values


def evaluate_pckh(
    ground_truth: MpiiGroundTruth,
    keypoints: np.ndarray,
    annotation_ids: np.ndarray,
    scores: np.ndarray,
    skeleton: Skeleton,
    head_size: str = "headbox",
) -> tuple[dict[str, float], JointCounts]:
    """The protocol's values (`pckh_values`) for predictions (M, K, >=2) of ground-truth people,
    and the per-joint counts they come from."""
    if not skeleton.groups:
        raise ValueError(f"skeleton {skeleton.name!r} has no joint groups for PCKh to report")
    if ground_truth.joints.shape[1] != skeleton.num_keypoints:
        raise ValueError(
            f"{ground_truth.path} has {ground_truth.joints.shape[1]} joints per person, "
            f"skeleton {skeleton.name!r} {skeleton.num_keypoints}"
        )
    sizes = head_sizes(ground_truth, head_size, skeleton)
    matched = match_predictions(ground_truth, keypoints, annotation_ids, scores)
    counts = joint_counts(ground_truth, matched, sizes)
    return pckh_values(counts, skeleton.groups), counts


class PCKhMetric(PoseMetric):
    """MPII PCKh (``PCKh``, ``PCKh@0.1``, then one value per skeleton group: ``Head``,
    ``Shoulder``, ``Elbow``, ``Wrist``, ``Hip``, ``Knee``, ``Ankle``), in percent.

    Args:
        ground_truth: the evaluated split's ground truth: MPII's ``mpii_gt_val.mat`` (official,
            with head boxes) or a json-form file (only with ``head_size="joints"``).
        skeleton: the keypoint set, with the ``groups`` to report (``mpii16``).
        primary: the value monitored for checkpoints and returned to sweepers.
        head_size: ``headbox`` (official: 0.6 x the head box diagonal) or ``joints`` (an
            approximation, upper_neck to head_top, for ground truth without head boxes; not the
            official protocol, and logged as such).
        kwargs: passed to ``torchmetrics.Metric``.
    """

    def __init__(
        self,
        ground_truth: str | Path,
        skeleton: Skeleton,
        primary: str = "PCKh",
        head_size: str = "headbox",
        **kwargs: Any,
    ) -> None:
        if head_size not in HEAD_SIZES:
            raise ValueError(f"metric.head_size must be one of {', '.join(HEAD_SIZES)}")
        # The groups come from the skeleton, so the names are the instance's; PoseMetric checks
        # ``primary`` against them in its __init__.
        self.stat_names = ("PCKh", "PCKh@0.1", *skeleton.groups)
        super().__init__(num_keypoints=skeleton.num_keypoints, primary=primary, **kwargs)
        self.ann_file = Path(ground_truth)
        self.skeleton = skeleton
        self.head_size = head_size
        if head_size == "joints":
            log.warning(
                "PCKh with head sizes from head_top - upper_neck (metric.head_size=joints): an "
                "approximation, not the official MPII protocol; not comparable with published PCKh"
            )
        self._ground_truth: MpiiGroundTruth | None = None

    def ground_truth(self) -> MpiiGroundTruth:
        """The ground truth of ``ann_file``, read on first use and kept."""
        if self._ground_truth is None:
            self._ground_truth = read_mpii_ground_truth(self.ann_file, self.num_keypoints)
        return self._ground_truth

    def _evaluate(self, people: People) -> tuple[dict[str, float], JointCounts]:
        return evaluate_pckh(
            self.ground_truth(),
            people.keypoints.double().numpy(),
            people.annotation_ids.numpy(),
            people.scores.double().numpy(),
            self.skeleton,
            self.head_size,
        )

    def evaluate(self, people: People) -> dict[str, float]:
        return self._evaluate(people)[0]

    def reports(self, people: People) -> list[Report]:
        """PCKh@0.5 and @0.1 per joint and per group, with the labelled counts."""
        values, counts = self._evaluate(people)
        joints = {
            name: {
                "labelled": int(counts.labelled[k]),
                "PCKh": float(_share(counts.correct[PRIMARY_THRESHOLD][k], counts.labelled[k])),
                "PCKh@0.1": float(_share(counts.correct[LOW_THRESHOLD][k], counts.labelled[k])),
            }
            for k, name in enumerate(self.skeleton.keypoints)
        }
        groups = {name: values[name] for name in self.skeleton.groups}
        data = {
            "joints": joints,
            "groups": groups,
            "mean": {"PCKh": values["PCKh"], "PCKh@0.1": values["PCKh@0.1"]},
        }
        return [Report("per_joint_pckh", data, format_pckh_table(data), "PCKh per joint")]


def format_pckh_table(data: Mapping[str, Any]) -> str:
    """The per-joint rows, then the groups and the Mean, as aligned text."""
    width = max(len(name) for name in (*data["joints"], *data["groups"], "Mean"))
    lines = [f"{'joint':<{width}}  labelled  PCKh@0.5  PCKh@0.1"]
    for name, row in data["joints"].items():
        lines.append(
            f"{name:<{width}}  {row['labelled']:>8d}  {row['PCKh']:>8.2f}  {row['PCKh@0.1']:>8.2f}"
        )
    for name, value in data["groups"].items():
        lines.append(f"{name:<{width}}  {'':>8}  {value:>8.2f}")
    mean = data["mean"]
    lines.append(f"{'Mean':<{width}}  {'':>8}  {mean['PCKh']:>8.2f}  {mean['PCKh@0.1']:>8.2f}")
    return "\n".join(lines)
