"""Box sources: ground truth, detections (matched to people for training) and DPG's jitter, one
mechanism for training and evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from posesuite.data.boxes import BoxJitter, BoxSource, box_iou
from posesuite.data.datamodule import PoseDataModule, TopDownDataset
from posesuite.data.records import DataError
from posesuite.data.sources.coco import CocoDataset, CocoSplit, read_coco_keypoints
from posesuite.data.transforms import Augmentation, TopDownTransform
from posesuite.skeleton import load_skeleton

SKELETON = load_skeleton("coco17")


def test_jitter_draws_dpg_edge_offsets_and_sub_boxes():
    jitter = BoxJitter()
    rng = np.random.default_rng(0)
    box = np.array([100.0, 50.0, 80.0, 200.0])
    x, y, w, h = box
    edges, sub_boxes = [], 0
    for _ in range(20000):
        x0, y0, bw, bh = jitter(box, rng)
        x1, y1 = x0 + bw, y0 + bh
        inside = x0 >= x and y0 >= y and x1 <= x + w + 1e-9 and y1 <= y + h + 1e-9
        scale = bw / w
        if inside and abs(bh / h - scale) < 1e-9 and 0.85 - 1e-9 <= scale <= 1.0:
            sub_boxes += 1  # a sub-box keeps the aspect ratio and lies inside the box
        else:
            edges.append([(x0 - x) / w, (y0 - y) / h, (x1 - x - w) / w, (y1 - y - h) / h])
    edges = np.array(edges)
    # 20,000 draws: the share's standard error is 0.0025, the means' 0.0005-0.001.
    assert abs(sub_boxes / 20000 - 0.15) < 0.01
    np.testing.assert_allclose(edges.mean(axis=0), jitter.edge_mean, atol=0.004)
    np.testing.assert_allclose(edges.std(axis=0), jitter.edge_std, rtol=0.03)


def test_a_collapsing_jitter_keeps_a_box():
    jitter = BoxJitter(edge_mean=(0.6, 0.6, -0.6, -0.6), edge_std=(0, 0, 0, 0), sub_box_prob=0)
    x0, y0, w, h = jitter(np.array([0.0, 0.0, 10.0, 10.0]), np.random.default_rng(0))
    assert w == h == jitter.min_size and (x0, y0) == (6.0, 6.0)


def test_training_detections_are_matched_to_people(synthetic_coco):
    split = CocoSplit(synthetic_coco.annotations, synthetic_coco.images)
    people = read_coco_keypoints(split.annotations, split.images, 17)
    source = BoxSource("detections", det_file=synthetic_coco.detections, match_iou=0.5)
    matched = source.records(split, 17, training=True)
    assert 0 < len(matched) <= len(people)
    by_annotation = {person.annotation_id: person for person in people}
    assert len({record.annotation_id for record in matched}) == len(matched)  # each person once
    for record in matched:
        person = by_annotation[record.annotation_id]
        np.testing.assert_array_equal(record.keypoints, person.keypoints)
        assert box_iou(record.bbox, person.bbox)[0, 0] >= 0.5
        assert record.box_score < 1.0  # the detection's score, not the ground truth's 1
    evaluation = source.records(split, 17, training=False)
    assert len(evaluation) > len(matched) and not any(r.keypoints.any() for r in evaluation)


def test_jittered_evaluation_boxes_are_fixed_per_record(synthetic_coco):
    records = read_coco_keypoints(synthetic_coco.annotations, synthetic_coco.images, 17)
    dataset = TopDownDataset(
        records, TopDownTransform(SKELETON, (96, 128)), boxes=BoxSource("jitter"), seed=3
    )
    first = [dataset[i]["box"] for i in range(len(records))]
    again = [dataset[i]["box"] for i in range(len(records))]
    np.testing.assert_array_equal(np.stack(first), np.stack(again))
    truth = np.stack([np.r_[r.bbox[:2], r.bbox[:2] + r.bbox[2:]] for r in records])
    assert np.abs(np.stack(first) - truth).max() > 1.0  # the boxes did move


def test_jittered_training_boxes_change_every_draw(synthetic_coco):
    records = read_coco_keypoints(synthetic_coco.annotations, synthetic_coco.images, 17)
    augmentation = Augmentation(scale_factor=0, rotation_prob=0, flip_prob=0, half_body_prob=0)
    transform = TopDownTransform(SKELETON, (96, 128), augmentation=augmentation)
    dataset = TopDownDataset(records, transform, boxes=BoxSource("jitter"))
    boxes = np.stack([dataset[0]["box"] for _ in range(5)])
    assert len({tuple(box) for box in boxes}) == 5


def data_module(coco_files, tmp_path, **options):
    files = {
        "train_annotations": str(coco_files.annotations),
        "train_images": str(coco_files.images),
        "val_annotations": str(coco_files.annotations),
        "val_images": str(coco_files.images),
    }
    return PoseDataModule(
        dataset=lambda root: CocoDataset(root, **files),
        root=str(tmp_path),
        skeleton=SKELETON,
        train_transform=lambda skeleton: TopDownTransform(skeleton, (96, 128)),
        val_transform=lambda skeleton: TopDownTransform(skeleton, (96, 128)),
        num_workers=0,
        **options,
    )


def test_the_data_module_serves_each_split_from_its_box_source(synthetic_coco, tmp_path):
    data = data_module(
        synthetic_coco,
        tmp_path,
        train_det_file=str(synthetic_coco.detections),
        det_file=str(synthetic_coco.detections),
    )
    assert (data.train_box_source, data.box_source) == ("detections", "detections")
    data.setup("fit")
    assert 0 < len(data.train_set) <= 12 < len(data.val_set)
    assert all(record.keypoints.any() for record in data.train_set.records)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"box_source": "proposals"},
            r"data\.box_source must be one of gt, detections, jitter, pgpg",
        ),
        ({"train_box_source": "pgpg"}, r"needs data\.pgpg_file"),
        ({"train_box_source": "detections"}, r"set data\.train_det_file"),
    ],
)
def test_bad_box_settings_name_the_key(synthetic_coco, tmp_path, options, message):
    with pytest.raises(DataError, match=message):
        data_module(synthetic_coco, tmp_path, **options).setup("fit")


def test_detections_need_a_coco_format_split(tmp_path):
    class OtherFormat:  # any records.Split that is not COCO-format, e.g. MPII's
        annotations = tmp_path / "gt.mat"
        images = tmp_path
        detections = None

        def read_people(self, num_keypoints):
            return []

    source = BoxSource("detections", det_file=tmp_path / "det.json")
    with pytest.raises(DataError, match=r"gt\.mat is a OtherFormat: use gt or jitter"):
        source.records(OtherFormat(), 16, training=False)
