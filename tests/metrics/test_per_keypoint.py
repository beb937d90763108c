"""Per-joint and per-person OKS diagnostics: exact terms, matching, the visible / occluded split
and the grouping of people by size and share of occluded joints."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from posesuite.metrics.per_keypoint import (
    format_people_table,
    format_table,
    per_keypoint_oks,
    per_person_oks,
)
from posesuite.skeleton import load_skeleton

SKELETON = load_skeleton("coco17")
SIGMAS = SKELETON.sigmas.tolist()
NAMES = SKELETON.keypoints


def person(
    ann_id: int, image_id: int, offset: float, flags: list[int], area: float = 2500.0
) -> dict:
    """A person whose joint k sits at (offset + 10 k, offset + 5 k) with the given flags."""
    keypoints = []
    for k, flag in enumerate(flags):
        keypoints += [offset + 10 * k, offset + 5 * k, flag] if flag else [0, 0, 0]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "iscrowd": 0,
        "area": area,
        "bbox": [offset, offset, 170, 85],
        "num_keypoints": sum(f > 0 for f in flags),
        "keypoints": keypoints,
    }


# Person 1: all visible; person 2: wrists occluded (v=1), ankles unlabelled; person 3 in an image
# without predictions (not matched, so not counted).
FLAGS_1 = [2] * 17
FLAGS_2 = [2] * 9 + [1, 1] + [2] * 4 + [0, 0]


def write_coco(directory: Path, people: list[dict]) -> COCO:
    content = {
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 480} for i in (1, 2)],
        "annotations": people,
        "categories": [{"id": 1, "name": "person", "keypoints": list(NAMES), "skeleton": []}],
    }
    path = directory / "gt.json"
    path.write_text(json.dumps(content))
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


@pytest.fixture(scope="module")
def ground_truth(tmp_path_factory) -> COCO:
    people = [
        person(1, 1, 0.0, FLAGS_1),
        person(2, 1, 300.0, FLAGS_2),
        person(3, 2, 0.0, FLAGS_1),
    ]
    return write_coco(tmp_path_factory.mktemp("gt"), people)


def as_result(ann: dict) -> dict:
    keypoints = np.asarray(ann["keypoints"], float).reshape(-1, 3)
    keypoints[:, 2] = 1.0
    return {
        "image_id": ann["image_id"],
        "category_id": 1,
        "keypoints": keypoints.ravel().tolist(),
        "score": 1.0,
    }


def image_one_results(ground_truth: COCO) -> list[dict]:
    return [as_result(ann) for ann in ground_truth.loadAnns([1, 2])]


def test_ground_truth_as_results_scores_every_joint_one(ground_truth):
    stats = per_keypoint_oks(ground_truth, image_one_results(ground_truth), SIGMAS, NAMES)
    assert list(stats) == [*NAMES, "all"]
    for name in NAMES:
        assert stats[name]["mean_oks"] == pytest.approx(1.0)
        assert stats[name]["correct"] == 1.0
    assert stats["left_wrist"]["count"] == 2 and stats["left_wrist"]["count_occluded"] == 1
    assert stats["left_ankle"]["count"] == 1 and stats["left_ankle"]["count_occluded"] == 0
    assert stats["left_ankle"]["mean_oks_occluded"] is None
    assert stats["all"]["count"] == 17 + 15  # person 3's image has no predictions
    assert stats["all"]["count_visible"] == 17 + 13
    assert stats["all"]["count_occluded"] == 2


def test_a_displaced_joint_gets_the_oks_term_of_its_distance(ground_truth):
    results = image_one_results(ground_truth)
    wrist = NAMES.index("left_wrist")
    distance = 10.0  # an OKS term of 0.27 at this area: below 0.5
    keypoints = np.asarray(results[1]["keypoints"]).reshape(-1, 3)
    keypoints[wrist, 0] += distance  # the occluded left wrist of person 2
    results[1]["keypoints"] = keypoints.ravel().tolist()

    stats = per_keypoint_oks(ground_truth, results, SIGMAS, NAMES)

    term = math.exp(-(distance**2) / (2 * 2500.0 * (2 * SIGMAS[wrist]) ** 2))
    left_wrist = stats["left_wrist"]
    assert left_wrist["mean_oks_occluded"] == pytest.approx(term)
    assert left_wrist["mean_oks_visible"] == pytest.approx(1.0)
    assert left_wrist["mean_oks"] == pytest.approx((1.0 + term) / 2)
    assert term < 0.5 and left_wrist["correct"] == 0.5
    assert stats["right_wrist"]["mean_oks"] == pytest.approx(1.0)
    assert stats["all"]["mean_oks_occluded"] == pytest.approx((1.0 + term) / 2)


def test_each_person_is_matched_to_its_own_prediction(ground_truth):
    """Predictions come in any order; each person takes the one with the highest OKS."""
    results = image_one_results(ground_truth)[::-1]
    stats = per_keypoint_oks(ground_truth, results, SIGMAS, NAMES)
    assert stats["all"]["mean_oks"] == pytest.approx(1.0)


def test_table_has_a_row_per_joint_and_marks_empty_means(ground_truth):
    stats = per_keypoint_oks(ground_truth, image_one_results(ground_truth), SIGMAS, NAMES)
    lines = format_table(stats).splitlines()
    assert len(lines) == 1 + 17 + 1
    ankle = next(line for line in lines if line.startswith("left_ankle"))
    assert ankle.split()[5] == "-"  # no occluded left ankle


def displaced(result: dict, distance: float) -> dict:
    """The result with every joint moved ``distance`` pixels to the right."""
    keypoints = np.asarray(result["keypoints"], float).reshape(-1, 3)
    keypoints[:, 0] += distance
    return {**result, "keypoints": keypoints.ravel().tolist()}


def test_people_are_grouped_by_size_and_share_of_occluded_joints(tmp_path):
    mostly_occluded = [1] * 9 + [2] * 8  # 9 of 17 labelled joints occluded: >= 50%
    people = [
        person(1, 1, 0.0, FLAGS_1, area=500.0),  # small, nothing occluded
        person(2, 1, 300.0, mostly_occluded, area=500.0),  # small, mostly occluded
        person(3, 2, 0.0, FLAGS_2, area=2500.0),  # medium, 2 of 15 occluded
        person(4, 3, 0.0, FLAGS_1, area=10000.0),  # large
    ]
    gt = write_coco(tmp_path, people)
    results = [as_result(ann) for ann in gt.loadAnns([1, 2, 3, 4])]
    results[1] = displaced(results[1], 20.0)  # person 2 is missed: OKS far below 0.5

    stats = per_person_oks(gt, results, SIGMAS)

    assert len(stats) == 16
    variances = (2 * np.asarray(SIGMAS)) ** 2
    miss = np.exp(-(20.0**2) / (2 * 500.0 * variances)).mean()  # person 2's OKS
    assert miss < 0.5
    assert stats["all/all"]["count"] == 4
    assert stats["all/all"]["mean_oks"] == pytest.approx((3 + miss) / 4)
    assert stats["all/all"]["below_half"] == 0.25
    assert stats["small/all"]["count"] == 2 and stats["medium/all"]["count"] == 1
    assert stats["large/all"]["count"] == 1
    assert stats["small/>=50%"]["count"] == 1
    assert stats["small/>=50%"]["mean_oks"] == pytest.approx(miss)
    assert stats["small/>=50%"]["lost_share"] == pytest.approx(1.0)  # all that is lost
    assert stats["small/<25%"]["lost_share"] == pytest.approx(0.0)
    assert stats["all/<25%"]["count"] == 3  # persons 1, 3 (2/15 occluded) and 4
    assert stats["medium/25-50%"]["count"] == 0 and stats["medium/25-50%"]["mean_oks"] is None
    lines = format_people_table(stats).splitlines()
    assert len(lines) == 1 + 16
    assert next(line for line in lines if line.startswith("medium/25-50%")).split()[2] == "-"
