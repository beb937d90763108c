"""COCO keypoint AP as a torchmetrics Metric (``metric=coco_ap``).

`COCOKeypointAP` gathers image-space predictions across DDP ranks, each sample once (see
`posesuite.metrics.base.PoseMetric`), and scores post-processed people with
`posesuite.metrics.coco_eval.evaluate_coco_keypoints`, the function behind ``posesuite-eval``,
using the skeleton's OKS sigmas. Its reports are the per-joint and per-person OKS tables of
`posesuite.metrics.per_keypoint`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pycocotools.coco import COCO

from posesuite.metrics.base import PoseMetric, Report
from posesuite.metrics.coco_eval import (
    COCO_KEYPOINT_STAT_NAMES,
    evaluate_coco_keypoints,
    load_coco_ground_truth,
)
from posesuite.metrics.per_keypoint import (
    format_people_table,
    format_table,
    per_keypoint_oks,
    per_person_oks,
)
from posesuite.metrics.predictions import People, coco_results
from posesuite.skeleton import Skeleton


class COCOKeypointAP(PoseMetric):
    """COCO keypoint AP/AR (``AP, AP50, AP75, AP_M, AP_L, AR, AR50, AR75, AR_M, AR_L``).

    Args:
        ground_truth: the COCO annotation file of the evaluated split (read on first use, once).
        skeleton: the keypoint set; its OKS sigmas score the predictions.
        primary: the value monitored for checkpoints and returned to sweepers.
        kwargs: passed to ``torchmetrics.Metric``.

    Feed it with ``update`` (not by calling the metric: ``forward`` would run the whole COCO
    evaluation on each batch).
    """

    stat_names = COCO_KEYPOINT_STAT_NAMES

    def __init__(
        self,
        ground_truth: str | Path,
        skeleton: Skeleton,
        primary: str = "AP",
        **kwargs: Any,
    ) -> None:
        super().__init__(num_keypoints=skeleton.num_keypoints, primary=primary, **kwargs)
        self.ann_file = Path(ground_truth)
        self.skeleton = skeleton
        self.sigmas = tuple(float(sigma) for sigma in skeleton.sigmas)
        self._ground_truth: COCO | None = None

    def ground_truth(self) -> COCO:
        """The ground truth of ``ann_file``, read on first use and kept."""
        if self._ground_truth is None:
            self._ground_truth = load_coco_ground_truth(self.ann_file)
        return self._ground_truth

    def evaluate(self, people: People) -> dict[str, float]:
        return evaluate_coco_keypoints(self.ground_truth(), coco_results(people), self.sigmas)

    def reports(self, people: People) -> list[Report]:
        """Per-joint OKS terms (visible and occluded apart) and people's OKS by size and share
        of occluded joints, over the ground truth matched to ``people``."""
        results = coco_results(people)
        joints = per_keypoint_oks(
            self.ground_truth(), results, self.sigmas, self.skeleton.keypoints
        )
        persons = per_person_oks(self.ground_truth(), results, self.sigmas)
        return [
            Report(
                "per_keypoint",
                joints,
                format_table(joints),
                "per-joint OKS terms (vis: v=2, occl: v=1)",
            ),
            Report(
                "per_person",
                persons,
                format_people_table(persons),
                "OKS per person by size and share of occluded joints",
            ),
        ]
