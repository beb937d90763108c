import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from posesuite.data.records import DataError
from posesuite.data.sources.coco import read_coco_keypoints, read_detections


def test_counts_agree_with_pycocotools(real_data_dir):
    ann_file = real_data_dir / "coco" / "test_coco.json"
    records = read_coco_keypoints(ann_file, real_data_dir / "coco", 17)
    coco = COCO(str(ann_file))
    expected = [
        a
        for a in coco.loadAnns(coco.getAnnIds(catIds=[1], iscrowd=False))
        if a["num_keypoints"] > 0
    ]
    assert sorted(r.annotation_id for r in records) == sorted(a["id"] for a in expected)
    by_id = {a["id"]: a for a in expected}
    for record in records:
        ann = by_id[record.annotation_id]
        np.testing.assert_allclose(record.keypoints.ravel(), ann["keypoints"])
        assert record.image_id == ann["image_id"]
        assert record.frames[0].endswith(coco.imgs[ann["image_id"]]["file_name"])


def test_detections_become_box_records(real_data_dir):
    coco_dir = real_data_dir / "coco"
    det_file = coco_dir / "test_coco_det_AP_H_56.json"
    detections = [d for d in json.loads(det_file.read_text()) if d["category_id"] == 1]
    records = read_detections(det_file, coco_dir / "test_coco.json", coco_dir, 17, min_score=0.0)
    assert len(records) == len(detections)
    assert {r.box_score for r in records} == {d["score"] for d in detections}
    assert all(r.keypoints.shape == (1, 17, 3) and not r.keypoints.any() for r in records)


@pytest.fixture
def tiny_dataset(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    coco = {
        "images": [{"id": 7, "file_name": "a.jpg", "width": 100, "height": 80}],
        "annotations": [
            {
                "id": 70,
                "image_id": 7,
                "category_id": 1,
                "iscrowd": 0,
                "bbox": [10, 10, 30, 50],
                "keypoints": [20, 20, 2] * 17,
                "num_keypoints": 17,
                "area": 900,
            },
        ],
        "categories": [{"id": 1, "name": "person"}],
    }
    return tmp_path, coco


def write(path, coco):
    path.write_text(json.dumps(coco))
    return path


def test_wrong_keypoint_count_names_file_and_annotation(tiny_dataset):
    root, coco = tiny_dataset
    coco["annotations"][0]["keypoints"] = [1, 2, 2] * 16
    ann_file = write(root / "ann.json", coco)
    with pytest.raises(
        DataError, match=r"ann\.json: annotation id 70 \(image id 7\): 48 keypoint values"
    ):
        read_coco_keypoints(ann_file, root, 17)


def test_missing_image_names_file_and_image_id(tiny_dataset):
    root, coco = tiny_dataset
    coco["images"][0]["file_name"] = "missing.jpg"
    ann_file = write(root / "ann.json", coco)
    with pytest.raises(DataError, match=r"image id 7: .*missing\.jpg"):
        read_coco_keypoints(ann_file, root, 17)


def test_malformed_json_names_the_file(tmp_path):
    ann_file = tmp_path / "broken.json"
    ann_file.write_text('{"images": [')
    with pytest.raises(DataError, match=r"broken\.json: malformed JSON"):
        read_coco_keypoints(ann_file, tmp_path, 17)


def test_crowd_keypointless_and_degenerate_people_are_skipped(tiny_dataset):
    root, coco = tiny_dataset
    base = coco["annotations"][0]
    coco["annotations"] += [
        {**base, "id": 71, "iscrowd": 1},
        {**base, "id": 72, "keypoints": [0, 0, 0] * 17, "num_keypoints": 0},
        {**base, "id": 73, "bbox": [120, 10, 30, 50]},  # entirely outside the 100 px wide image
    ]
    records = read_coco_keypoints(write(root / "ann.json", coco), root, 17)
    assert [r.annotation_id for r in records] == [70]


def test_boxes_are_clipped_to_the_image(tiny_dataset):
    root, coco = tiny_dataset
    coco["annotations"][0]["bbox"] = [-5, 60, 50, 50]
    (record,) = read_coco_keypoints(write(root / "ann.json", coco), root, 17)
    np.testing.assert_allclose(record.bbox, [0, 60, 45, 20])
