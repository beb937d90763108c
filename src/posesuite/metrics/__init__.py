"""Evaluation metrics that wrap the official protocols."""

from posesuite.metrics.coco import (
    COCO_KEYPOINT_STAT_NAMES,
    COCOKeypointAP,
    evaluate_coco_keypoints,
)

__all__ = ["COCO_KEYPOINT_STAT_NAMES", "COCOKeypointAP", "evaluate_coco_keypoints"]
