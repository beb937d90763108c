"""The embedded synthetic COCO person-keypoints dataset: format, conventions, cache, detections."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from posesuite.data.sources import synthetic
from posesuite.data.sources.synthetic import (
    MIN_VISIBLE_AREA,
    SyntheticPaths,
    SyntheticSpec,
    ensure_synthetic_coco,
)
from posesuite.skeleton import load_skeleton

SMALL = SyntheticSpec(num_train_images=12, num_val_images=6)
TINY = SyntheticSpec(num_train_images=2, num_val_images=1)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> SyntheticPaths:
    return ensure_synthetic_coco(tmp_path_factory.mktemp("synthetic"), SMALL)


@pytest.fixture(scope="module")
def detection_set(tmp_path_factory: pytest.TempPathFactory) -> SyntheticPaths:
    # Enough val images that duplicates, false positives and misses all occur.
    spec = SyntheticSpec(num_train_images=1, num_val_images=40)
    return ensure_synthetic_coco(tmp_path_factory.mktemp("detections"), spec)


def _load(path: Path) -> dict | list:
    return json.loads(path.read_text())


def _splits(paths: SyntheticPaths) -> list[tuple[Path, Path, int]]:
    return [
        (paths.train_annotations, paths.train_images, SMALL.num_train_images),
        (paths.val_annotations, paths.val_images, SMALL.num_val_images),
    ]


def _all_annotations(paths: SyntheticPaths) -> list[dict]:
    return [ann for file, _, _ in _splits(paths) for ann in _load(file)["annotations"]]


def _inside(box: list[float], outer: list[float], tolerance: float = 0.5) -> bool:
    x, y, w, h = box
    ox, oy, ow, oh = outer
    return (
        x >= ox - tolerance
        and y >= oy - tolerance
        and x + w <= ox + ow + tolerance
        and y + h <= oy + oh + tolerance
    )


def _iou(a: list[float], b: list[float]) -> float:
    return float(mask_utils.iou([a], [b], [0])[0, 0])


def test_layout_under_the_spec_digest(small: SyntheticPaths) -> None:
    assert small.root.name == SMALL.digest()
    assert small.train_images == small.root / "train"
    assert small.val_images == small.root / "val"
    assert small.train_annotations == small.root / "annotations/person_keypoints_train.json"
    assert small.val_annotations == small.root / "annotations/person_keypoints_val.json"
    assert small.val_detections == small.root / "annotations/person_detections_val.json"
    assert not [p for p in small.root.parent.iterdir() if p != small.root]  # no staging left


def test_pycocotools_reads_both_splits(small: SyntheticPaths) -> None:
    skeleton = load_skeleton("coco17")
    for annotation_file, image_dir, count in _splits(small):
        data = _load(annotation_file)
        coco = COCO(str(annotation_file))
        assert len(coco.getImgIds()) == len(data["images"]) == count
        assert len(coco.getAnnIds()) == len(data["annotations"]) > 0
        category = coco.loadCats(1)[0]
        assert (category["name"], category["supercategory"]) == ("person", "person")
        assert category["keypoints"] == list(skeleton.keypoints)
        assert category["skeleton"] == [[a + 1, b + 1] for a, b in skeleton.limbs]
        ids = [ann["id"] for ann in data["annotations"]]
        assert len(set(ids)) == len(ids)
        image_ids = {image["id"] for image in data["images"]}
        assert {ann["image_id"] for ann in data["annotations"]} <= image_ids
        for image in data["images"]:
            pixels = cv2.imread(str(image_dir / image["file_name"]))
            assert pixels.shape == (SMALL.image_height, SMALL.image_width, 3)
            assert (image["width"], image["height"]) == (SMALL.image_width, SMALL.image_height)


def test_annotations_follow_coco_conventions(small: SyntheticPaths) -> None:
    width, height = SMALL.image_width, SMALL.image_height
    for ann in _all_annotations(small):
        assert (ann["category_id"], ann["iscrowd"]) == (1, 0)
        keypoints = np.array(ann["keypoints"]).reshape(-1, 3)
        assert keypoints.shape == (17, 3)
        x, y, v = keypoints.T
        assert set(v) <= {0, 1, 2}
        assert np.all(x[v == 0] == 0) and np.all(y[v == 0] == 0)
        labelled = v > 0
        assert np.all((x[labelled] >= 0) & (x[labelled] <= width - 1))
        assert np.all((y[labelled] >= 0) & (y[labelled] <= height - 1))
        assert ann["num_keypoints"] == int(labelled.sum())

        box_x, box_y, box_w, box_h = ann["bbox"]
        assert box_x >= 0 and box_y >= 0 and box_w > 0 and box_h > 0
        assert box_x + box_w <= width and box_y + box_h <= height
        assert MIN_VISIBLE_AREA <= ann["area"] <= box_w * box_h
        rle = ann["segmentation"]
        assert rle["size"] == [height, width]
        assert ann["area"] == int(mask_utils.area(rle))
        assert list(mask_utils.toBbox(rle)) == ann["bbox"]


def test_one_to_four_people_per_image(small: SyntheticPaths) -> None:
    for annotation_file, _, _ in _splits(small):
        data = _load(annotation_file)
        per_image = Counter(ann["image_id"] for ann in data["annotations"])
        counts = [per_image[image["id"]] for image in data["images"]]
        assert min(counts) >= SMALL.min_people and max(counts) <= SMALL.max_people
        assert len(set(counts)) > 1


def test_occlusion_truncation_and_scale_variety(small: SyntheticPaths) -> None:
    annotations = _all_annotations(small)
    flags = np.array([ann["keypoints"][2::3] for ann in annotations])
    assert (flags == 1).mean() > 0.05  # occluded by people, occluders or the figure itself
    assert (flags == 2).mean() > 0.3
    assert (flags == 0).any()  # truncated at the border
    heights = [ann["bbox"][3] for ann in annotations]
    assert max(heights) / min(heights) > 4


def test_front_facing_people_have_their_left_on_the_image_right(small: SyntheticPaths) -> None:
    skeleton = load_skeleton("coco17")
    left, right = skeleton.index("left_eye"), skeleton.index("right_eye")
    facing = [
        np.array(ann["keypoints"]).reshape(-1, 3)
        for ann in _all_annotations(small)
        if ann["keypoints"][3 * left + 2] == 2 and ann["keypoints"][3 * right + 2] == 2
    ]
    assert len(facing) >= 5
    # Head roll and lying figures allow a few exceptions.
    assert np.mean([k[left, 0] > k[right, 0] for k in facing]) >= 0.8


def test_same_spec_gives_identical_files(small: SyntheticPaths, tmp_path: Path) -> None:
    again = ensure_synthetic_coco(tmp_path, SMALL)
    files = sorted(p.relative_to(small.root) for p in small.root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again.root) for p in again.root.rglob("*") if p.is_file())
    for relative in files:
        assert (small.root / relative).read_bytes() == (again.root / relative).read_bytes()


def test_other_seeds_give_other_data(small: SyntheticPaths, tmp_path: Path) -> None:
    other = ensure_synthetic_coco(tmp_path, replace(SMALL, train_seed=7, val_seed=8))
    assert other.root.name != small.root.name
    assert other.train_annotations.read_bytes() != small.train_annotations.read_bytes()
    first = "000001.jpg"
    assert (other.val_images / first).read_bytes() != (small.val_images / first).read_bytes()
    # Train and val come from different seeds, so val does not repeat train.
    assert (small.train_images / first).read_bytes() != (small.val_images / first).read_bytes()


def test_second_call_reuses_the_cache(small: SyntheticPaths) -> None:
    before = {p: p.stat().st_mtime_ns for p in small.root.rglob("*")}
    assert ensure_synthetic_coco(small.root.parent, SMALL) == small
    assert {p: p.stat().st_mtime_ns for p in small.root.rglob("*")} == before


def test_interrupted_generation_is_not_taken_for_a_complete_one(tmp_path: Path) -> None:
    stray = tmp_path / f".{TINY.digest()}.partial-interrupted"
    (stray / "annotations").mkdir(parents=True)
    (stray / "annotations" / "person_keypoints_train.json").write_text('{"images": [')
    paths = ensure_synthetic_coco(tmp_path, TINY)
    assert paths.root == tmp_path / TINY.digest()
    assert len(_load(paths.train_annotations)["images"]) == TINY.num_train_images
    assert all(p.is_file() for p in (paths.val_annotations, paths.val_detections))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([paths.root.name, stray.name])


def test_losing_a_race_keeps_the_winners_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generate = synthetic._generate
    target = SyntheticPaths.under(tmp_path / TINY.digest())

    def slower_than_another_process(paths: SyntheticPaths, spec: SyntheticSpec) -> str:
        summary = generate(paths, spec)
        target.root.mkdir()
        generate(target, spec)  # the other process renames its copy into place first
        (target.root / "winner").touch()
        return summary

    monkeypatch.setattr(synthetic, "_generate", slower_than_another_process)
    paths = ensure_synthetic_coco(tmp_path, TINY)
    assert paths == target and (paths.root / "winner").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [paths.root.name]


def test_incomplete_dataset_folder_is_reported(tmp_path: Path) -> None:
    (tmp_path / TINY.digest()).mkdir()
    with pytest.raises(RuntimeError, match="incomplete"):
        ensure_synthetic_coco(tmp_path, TINY)


@pytest.mark.parametrize(
    "change",
    [
        {"val_seed": 0},
        {"min_people": 3, "max_people": 2},
        {"num_val_images": 0},
        {"min_stature": 0.5, "max_stature": 0.2},
        {"stature_sampling": "gaussian"},
        {"yaw_sd": -10.0},
    ],
)
def test_inconsistent_specs_are_rejected(change: dict) -> None:
    with pytest.raises(ValueError):
        SyntheticSpec(**change)


def test_detections_behave_like_a_real_detector(detection_set: SyntheticPaths) -> None:
    ground_truth = _load(detection_set.val_annotations)
    detections = _load(detection_set.val_detections)
    width, height = ground_truth["images"][0]["width"], ground_truth["images"][0]["height"]
    boxes_by_image: dict[int, list[list[float]]] = {
        image["id"]: [] for image in ground_truth["images"]
    }
    for ann in ground_truth["annotations"]:
        boxes_by_image[ann["image_id"]].append(ann["bbox"])
    for det in detections:
        assert det["image_id"] in boxes_by_image and det["category_id"] == 1
        x, y, w, h = det["bbox"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= width and y + h <= height
        assert 0 < det["score"] <= 1

    def best_match(det: dict) -> tuple[float, int]:
        truths = boxes_by_image[det["image_id"]]
        ious = [_iou(det["bbox"], truth) for truth in truths]
        return (max(ious), int(np.argmax(ious))) if ious else (0.0, -1)

    matches = [best_match(det) for det in detections]
    hits: dict[tuple[int, int], list[list[float]]] = {}
    for det, (iou, index) in zip(detections, matches, strict=True):
        if iou > 0.5:
            hits.setdefault((det["image_id"], index), []).append(det["bbox"])
    duplicate_ious = [
        _iou(first, second)
        for boxes in hits.values()
        for i, first in enumerate(boxes)
        for second in boxes[i + 1 :]
    ]
    assert duplicate_ious and max(duplicate_ious) > 0.7
    # Part-of-a-person boxes: inside one true box, under half its area, so box NMS keeps them.
    parts = [
        det
        for det in detections
        for truth in boxes_by_image[det["image_id"]]
        if _inside(det["bbox"], truth)
        and det["bbox"][2] * det["bbox"][3] < 0.65 * truth[2] * truth[3]
    ]
    assert parts and max(det["score"] for det in parts) > 0.5
    false_positive_scores = [
        det["score"] for det, (iou, _) in zip(detections, matches, strict=True) if iou < 0.1
    ]
    assert false_positive_scores
    missed = [
        (image_id, index)
        for image_id, truths in boxes_by_image.items()
        for index in range(len(truths))
        if (image_id, index) not in hits
    ]
    assert missed
    true_positive_scores = [
        det["score"] for det, (iou, _) in zip(detections, matches, strict=True) if iou > 0.5
    ]
    assert np.mean(true_positive_scores) > np.mean(false_positive_scores)


def _val_annotations(root: Path, **spec: Any) -> list[dict]:
    paths = ensure_synthetic_coco(
        root, SyntheticSpec(num_train_images=1, num_val_images=60, **spec)
    )
    return _load(paths.val_annotations)["annotations"]


def test_stature_range_and_sampling_shape_the_people(tmp_path: Path) -> None:
    log_uniform = [a["bbox"][3] for a in _val_annotations(tmp_path / "a")]
    uniform = [a["bbox"][3] for a in _val_annotations(tmp_path / "b", stature_sampling="uniform")]
    # Uniform sampling puts more people near the middle of the range than log-uniform does.
    assert np.median(uniform) > 1.2 * np.median(log_uniform)
    tall = [a["bbox"][3] for a in _val_annotations(tmp_path / "c", min_stature=0.6)]
    assert np.median(tall) > 1.5 * np.median(log_uniform)


def test_yaw_sd_favours_people_facing_the_camera(tmp_path: Path) -> None:
    skeleton = load_skeleton("coco17")
    eyes = [skeleton.index("left_eye"), skeleton.index("right_eye")]

    def both_eyes_visible(annotations: list[dict]) -> float:
        flags = np.array([a["keypoints"][2::3] for a in annotations])[:, eyes]
        return float((flags == 2).all(axis=1).mean())

    frontal = both_eyes_visible(_val_annotations(tmp_path / "a", yaw_sd=30.0))
    any_view = both_eyes_visible(_val_annotations(tmp_path / "b"))
    assert frontal > any_view + 0.15
