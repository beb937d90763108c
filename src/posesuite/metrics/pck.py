"""The PCK-style protocols, each a `PoseMetric`: MPII's PCKh (``metric=pckh``) and PCK@0.2
(``metric=pck``: LSP, Penn Action).

Both count a labelled joint correct when its prediction lies within ``threshold`` x the
person's reference size of the ground truth (``<=``: the benchmarks count a distance equal to
the threshold as correct; mmpose's ports use ``<``, which differs only on exact ties). Per joint,
the value is the share of its labelled instances that are correct; a group (Head, Shoulder,
..., Ankle, from the skeleton's ``groups``) reports the mean of its joints' values; the headline
value and its @0.1 pool every labelled joint of the groups. Every ground-truth person counts
once: a person without a prediction has every labelled joint wrong.

PCKh (the MPII benchmark's Matlab evaluation; mmpose's and HRNet's Python ports compute the
same Mean): threshold 0.5 x head size, head size = 0.6 x the diagonal of the annotated head box
(``headboxes_src`` of ``mpii_gt_val.mat``); the groups leave out pelvis and thorax. Predictions
are matched to ground-truth people by ``annotation_id`` (the person a crop was made from).

PCK (``PCK`` = PCK@0.2, and PCK@0.1): the reference size is the ground truth's torso, the
distance between left shoulder and right hip in that frame (LSP's convention since DeepPose), or
the larger side of the ground-truth person box (Penn Action's, as mmpose's PCKAccuracy with
``norm_item='bbox'``). A person-frame whose reference is degenerate (under 1 px, or a torso joint
unlabelled) is left out and counted in a warning; predictions never stand in for it.
Ground truth is a `KeypointGroundTruth` (`read_keypoint_ground_truth`); predictions are matched
to its entries by (``image_id``, ``annotation_id``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from posesuite.data.ground_truth import KeypointGroundTruth
from posesuite.data.records import DataError
from posesuite.data.sources.lsp import read_lsp_ground_truth, split_image_range
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
PCK_THRESHOLD = 0.2
PCK_LOW_THRESHOLD = 0.1
REFERENCES = ("torso", "bbox")
TORSO_JOINTS = ("left_shoulder", "right_hip")
# Reference sizes below this (px) are degenerate: the person-frame is left out.
MIN_REFERENCE_SIZE = 1.0


@dataclass(frozen=True)
class JointCounts:
    """Per joint (K,): labelled instances over every scored ground-truth person, and how many
    of them the predictions got within each threshold x the person's reference size."""

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
    return _best_per_entry(annotation_ids, keypoints, scores, ground_truth.joints.shape)


def _best_per_entry(
    entries: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """(N, K, 2) the highest-scored prediction of each ground-truth entry, NaN where none."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    _, first = np.unique(entries[order], return_index=True)
    chosen = order[first]
    matched = np.full(shape, np.nan)
    matched[entries[chosen]] = np.asarray(keypoints, dtype=np.float64)[chosen, :, :2]
    return matched


def joint_counts(
    ground_truth: MpiiGroundTruth | KeypointGroundTruth,
    matched: np.ndarray,
    sizes: np.ndarray,
    thresholds: Sequence[float] = (PRIMARY_THRESHOLD, LOW_THRESHOLD),
) -> JointCounts:
    """Count labelled and correct joints; people whose reference size is NaN are left out."""
    scored = ground_truth.labelled & np.isfinite(sizes)[:, None]
    distance = np.linalg.norm(matched - ground_truth.joints, axis=2) / sizes[:, None]
    # NaN distances (no prediction) compare False: a miss.
    correct = {t: ((distance <= t) & scored).sum(axis=0) for t in thresholds}
    return JointCounts(labelled=scored.sum(axis=0), correct=correct)


def _share(correct: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """100 x correct / labelled, NaN where nothing is labelled."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(labelled > 0, 100.0 * correct / labelled, np.nan)


def group_values(
    counts: JointCounts,
    groups: Mapping[str, Sequence[int]],
    name: str,
    thresholds: tuple[float, float],
) -> dict[str, float]:
    """``name`` and ``name@low`` pooled over the groups' joints at the two ``thresholds``
    (primary, low), then each group's mean at the primary one."""
    members = sorted({joint for joints in groups.values() for joint in joints})
    primary, low = thresholds
    values = {}
    for value_name, threshold in ((name, primary), (f"{name}@{low:g}", low)):
        labelled = counts.labelled[members].sum()
        correct = counts.correct[threshold][members].sum()
        values[value_name] = float(_share(np.asarray(correct), np.asarray(labelled)))
    per_joint = _share(counts.correct[primary], counts.labelled)
    for group, joints in groups.items():
        values[group] = float(np.mean(per_joint[list(joints)]))
    return values


def pckh_values(counts: JointCounts, groups: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """``PCKh`` and ``PCKh@0.1`` pooled over the groups' joints, then each group's mean PCKh."""
    return group_values(counts, groups, "PCKh", (PRIMARY_THRESHOLD, LOW_THRESHOLD))


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
        data = per_joint_data(
            values, counts, self.skeleton, "PCKh", (PRIMARY_THRESHOLD, LOW_THRESHOLD)
        )
        table = format_pck_table(data, "PCKh", (PRIMARY_THRESHOLD, LOW_THRESHOLD))
        return [Report("per_joint_pckh", data, table, "PCKh per joint")]


def per_joint_data(
    values: Mapping[str, float],
    counts: JointCounts,
    skeleton: Skeleton,
    name: str,
    thresholds: tuple[float, float],
) -> dict[str, Any]:
    """A report's data: per joint the labelled count and its values at both thresholds, the
    groups' values and the pooled Mean (``values`` from `group_values`)."""
    primary, low = thresholds
    low_name = f"{name}@{low:g}"
    joints = {
        joint: {
            "labelled": int(counts.labelled[k]),
            name: float(_share(counts.correct[primary][k], counts.labelled[k])),
            low_name: float(_share(counts.correct[low][k], counts.labelled[k])),
        }
        for k, joint in enumerate(skeleton.keypoints)
    }
    return {
        "joints": joints,
        "groups": {group: values[group] for group in skeleton.groups},
        "mean": {name: values[name], low_name: values[low_name]},
    }


def format_pck_table(data: Mapping[str, Any], name: str, thresholds: tuple[float, float]) -> str:
    """The per-joint rows, then the groups and the Mean, as aligned text."""
    primary, low = thresholds
    low_name = f"{name}@{low:g}"
    headers = (f"{name}@{primary:g}", low_name)
    cell = max(8, *(len(h) for h in headers))
    width = max(len(joint) for joint in (*data["joints"], *data["groups"], "Mean"))
    lines = [f"{'joint':<{width}}  labelled  {headers[0]:>{cell}}  {headers[1]:>{cell}}"]
    for joint, row in data["joints"].items():
        lines.append(
            f"{joint:<{width}}  {row['labelled']:>8d}  {row[name]:>{cell}.2f}  "
            f"{row[low_name]:>{cell}.2f}"
        )
    for group, value in data["groups"].items():
        lines.append(f"{group:<{width}}  {'':>8}  {value:>{cell}.2f}")
    mean = data["mean"]
    lines.append(
        f"{'Mean':<{width}}  {'':>8}  {mean[name]:>{cell}.2f}  {mean[low_name]:>{cell}.2f}"
    )
    return "\n".join(lines)


def read_keypoint_ground_truth(path: str | Path, num_keypoints: int) -> KeypointGroundTruth:
    """The PCK ground truth at ``path``: LSP's joints.mat (``.mat``, optionally restricted to
    ``#images=FIRST-LAST``, as `posesuite.data.sources.lsp.LspSplit.annotations` names it) or a
    Penn Action dataset folder (its root or its ``labels/``: the test videos' frames)."""
    file, images = split_image_range(path)
    if file.suffix.lower() == ".mat":
        return read_lsp_ground_truth(file, num_keypoints, images)
    if images is not None:
        raise DataError(f"{path}: an image range only applies to LSP's joints.mat")
    if file.is_dir():
        # Imported here: only Penn Action ground truth needs its reader.
        from posesuite.data.sources.penn_action import read_penn_action_ground_truth

        return read_penn_action_ground_truth(file, num_keypoints)
    if not file.exists():
        raise DataError(f"file not found: {file}")
    raise DataError(f"{file}: PCK ground truth is LSP's joints.mat or a Penn Action dataset folder")


def reference_sizes(
    ground_truth: KeypointGroundTruth,
    reference: str,
    skeleton: Skeleton,
    torso_joints: Sequence[str] = TORSO_JOINTS,
) -> np.ndarray:
    """(N,) each entry's reference size in pixels, NaN where it is degenerate.

    ``torso``: the ground truth's distance between the two ``torso_joints`` (LSP: left shoulder
    to right hip), NaN where one is unlabelled. ``bbox``: max(w, h) of the ground-truth box.
    Sizes under `MIN_REFERENCE_SIZE` are NaN too.
    """
    if reference == "torso":
        first, second = (skeleton.index(name) for name in torso_joints)
        both = ground_truth.labelled[:, first] & ground_truth.labelled[:, second]
        joints = ground_truth.joints
        sizes = np.where(both, np.linalg.norm(joints[:, second] - joints[:, first], axis=1), np.nan)
    elif reference == "bbox":
        sizes = ground_truth.boxes[:, 2:].max(axis=1)
    else:
        raise ValueError(f"reference must be one of {', '.join(REFERENCES)}, got {reference!r}")
    return np.where(sizes >= MIN_REFERENCE_SIZE, sizes, np.nan)


def match_keypoint_predictions(
    ground_truth: KeypointGroundTruth,
    keypoints: np.ndarray,
    image_ids: np.ndarray,
    annotation_ids: np.ndarray,
    scores: np.ndarray,
) -> np.ndarray:
    """(N, K, 2) the prediction of each ground-truth entry, found by (image id, annotation id);
    NaN for entries without one. Of several predictions of one entry the highest-scored is
    taken, so each entry counts once; a prediction that names no entry is an error."""
    annotation_ids = np.asarray(annotation_ids, dtype=np.int64)
    detected = annotation_ids == -1
    if detected.any():
        raise ValueError(
            f"PCK scores each ground-truth person of {ground_truth.path} by the crop of its own "
            f"box, but {int(detected.sum())} of {len(annotation_ids)} predictions come from "
            "detector boxes (annotation id -1): evaluate on ground-truth boxes "
            "(data.box_source=gt), or give results records an annotation_id"
        )
    index = {
        key: entry
        for entry, key in enumerate(
            zip(ground_truth.image_ids.tolist(), ground_truth.annotation_ids.tolist(), strict=True)
        )
    }
    pairs = zip(np.asarray(image_ids).tolist(), annotation_ids.tolist(), strict=True)
    entries = np.empty(len(annotation_ids), dtype=np.int64)
    for prediction, pair in enumerate(pairs):
        entry = index.get(pair)
        if entry is None:
            raise ValueError(
                f"prediction #{prediction} (image id {pair[0]}, annotation id {pair[1]}) names "
                f"no ground-truth entry of {ground_truth.path}"
            )
        entries[prediction] = entry
    return _best_per_entry(entries, keypoints, scores, ground_truth.joints.shape)


def evaluate_pck(
    ground_truth: KeypointGroundTruth,
    keypoints: np.ndarray,
    image_ids: np.ndarray,
    annotation_ids: np.ndarray,
    scores: np.ndarray,
    skeleton: Skeleton,
    reference: str = "torso",
    torso_joints: Sequence[str] = TORSO_JOINTS,
) -> tuple[dict[str, float], JointCounts]:
    """``PCK`` (@0.2), ``PCK@0.1`` and the groups' PCK (`group_values`) of predictions
    (M, K, >=2) of ground-truth entries, and the per-joint counts they come from."""
    if not skeleton.groups:
        raise ValueError(f"skeleton {skeleton.name!r} has no joint groups for PCK to report")
    if ground_truth.num_keypoints != skeleton.num_keypoints:
        raise ValueError(
            f"{ground_truth.path} has {ground_truth.num_keypoints} joints per person, "
            f"skeleton {skeleton.name!r} {skeleton.num_keypoints}"
        )
    sizes = reference_sizes(ground_truth, reference, skeleton, torso_joints)
    matched = match_keypoint_predictions(ground_truth, keypoints, image_ids, annotation_ids, scores)
    left_out = int(np.isnan(sizes).sum())
    if left_out:
        what = f"torso ({' - '.join(torso_joints)})" if reference == "torso" else "box"
        log.warning(
            "PCK of %s: %d of %d person-frames left out, their ground-truth %s is under %g px "
            "or unlabelled",
            ground_truth.path,
            left_out,
            len(ground_truth),
            what,
            MIN_REFERENCE_SIZE,
        )
    unmatched = int((np.isnan(matched).all(axis=(1, 2)) & ~np.isnan(sizes)).sum())
    if unmatched:
        log.warning(
            "PCK of %s: %d of %d person-frames have no prediction: every labelled joint of "
            "theirs counts as wrong",
            ground_truth.path,
            unmatched,
            len(ground_truth),
        )
    counts = joint_counts(ground_truth, matched, sizes, (PCK_THRESHOLD, PCK_LOW_THRESHOLD))
    values = group_values(counts, skeleton.groups, "PCK", (PCK_THRESHOLD, PCK_LOW_THRESHOLD))
    return values, counts


class PCKMetric(PoseMetric):
    """PCK (``PCK`` at 0.2, ``PCK@0.1``, then one PCK@0.2 per skeleton group, for ``lsp14``:
    ``Head``, ``Shoulder``, ``Elbow``, ``Wrist``, ``Hip``, ``Knee``, ``Ankle``), in percent.

    Args:
        ground_truth: the evaluated split's ground truth (`read_keypoint_ground_truth`): LSP's
            joints.mat with the split's image range (``joints.mat#images=1001-2000``, as
            ``data=lsp`` names it) or a Penn Action folder.
        skeleton: the keypoint set, with the ``groups`` to report.
        primary: the value monitored for checkpoints and returned to sweepers.
        reference: ``torso`` (LSP: the distance between ``torso_joints``) or ``bbox`` (Penn
            Action: the larger side of the ground-truth box).
        torso_joints: the two joints whose distance is the torso size.
        kwargs: passed to ``torchmetrics.Metric``.
    """

    def __init__(
        self,
        ground_truth: str | Path,
        skeleton: Skeleton,
        primary: str = "PCK",
        reference: str = "torso",
        torso_joints: Sequence[str] = TORSO_JOINTS,
        **kwargs: Any,
    ) -> None:
        if reference not in REFERENCES:
            raise ValueError(f"metric.reference must be one of {', '.join(REFERENCES)}")
        torso_joints = tuple(str(name) for name in torso_joints)
        if reference == "torso":
            if len(set(torso_joints)) != 2:
                raise ValueError(
                    f"metric.torso_joints must name two different joints, got {list(torso_joints)}"
                )
            for name in torso_joints:
                skeleton.index(name)  # raises, naming the skeleton and the joint
        # The groups come from the skeleton, so the names are the instance's; PoseMetric checks
        # ``primary`` against them in its __init__.
        self.stat_names = ("PCK", "PCK@0.1", *skeleton.groups)
        super().__init__(num_keypoints=skeleton.num_keypoints, primary=primary, **kwargs)
        self.ann_file = Path(ground_truth)
        self.skeleton = skeleton
        self.reference = reference
        self.torso_joints = torso_joints
        self._ground_truth: KeypointGroundTruth | None = None

    def ground_truth(self) -> KeypointGroundTruth:
        """The ground truth of ``ann_file``, read on first use and kept."""
        if self._ground_truth is None:
            self._ground_truth = read_keypoint_ground_truth(self.ann_file, self.num_keypoints)
        return self._ground_truth

    def _evaluate(self, people: People) -> tuple[dict[str, float], JointCounts]:
        return evaluate_pck(
            self.ground_truth(),
            people.keypoints.double().numpy(),
            people.image_ids.numpy(),
            people.annotation_ids.numpy(),
            people.scores.double().numpy(),
            self.skeleton,
            self.reference,
            self.torso_joints,
        )

    def evaluate(self, people: People) -> dict[str, float]:
        return self._evaluate(people)[0]

    def reports(self, people: People) -> list[Report]:
        """PCK@0.2 and @0.1 per joint and per group, with the labelled counts."""
        values, counts = self._evaluate(people)
        thresholds = (PCK_THRESHOLD, PCK_LOW_THRESHOLD)
        data = per_joint_data(values, counts, self.skeleton, "PCK", thresholds)
        table = format_pck_table(data, "PCK", thresholds)
        return [Report("per_joint_pck", data, table, f"PCK per joint ({self.reference})")]
