"""MPII PCKh (`posesuite.metrics.pck`): an oracle, a hand-computed example, mmpose's formula on
the real MPII samples, and an oracle network through the LightningModule."""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from oracle import validate_with_oracle
from scipy.io import savemat

from posesuite.codecs.heatmap import HeatmapCodec
from posesuite.data.datamodule import PoseDataModule
from posesuite.data.sources.mpii import MpiiDataset, read_mpii_ground_truth
from posesuite.data.transforms import TopDownTransform
from posesuite.metrics.pck import PCKhMetric
from posesuite.metrics.predictions import People
from posesuite.skeleton import load_skeleton

SKELETON = load_skeleton("mpii16")
STAT_NAMES = ("PCKh", "PCKh@0.1", "Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle")
J = {name: index for index, name in enumerate(SKELETON.keypoints)}


def write_gt_mat(
    path: Path, joints_1based: np.ndarray, labelled: np.ndarray, head_boxes_1based: np.ndarray
) -> Path:
    """A ground-truth file in the layout of MPII's mpii_gt_val.mat (Matlab 1-based)."""
    savemat(
        str(path),
        {
            "pos_gt_src": joints_1based.transpose(1, 2, 0),  # (16, 2, N)
            "jnt_missing": (~labelled).astype(np.float64).T,  # (16, N)
            "headboxes_src": head_boxes_1based.transpose(1, 2, 0),  # (2, 2, N)
        },
    )
    return path


def people(keypoints: np.ndarray, annotation_ids, scores=None) -> People:
    count = len(keypoints)
    points = np.concatenate([keypoints, np.ones((count, keypoints.shape[1], 1))], axis=2)
    return People(
        torch.arange(count),
        torch.tensor(points, dtype=torch.float64),
        torch.tensor(np.ones(count) if scores is None else scores, dtype=torch.float64),
        torch.ones(count),
        torch.zeros(count, 4),
        torch.tensor(annotation_ids, dtype=torch.long),
    )


@pytest.fixture(scope="module")
def small_gt(tmp_path_factory) -> Path:
    """Three people. Head boxes (1-based corners): person 0 (11, 11)-(41, 51), diagonal
    sqrt(30^2 + 40^2) = 50, head size 0.6 x 50 = 30 px (thresholds 15 px at 0.5, 3 px at 0.1);
    person 1 (1, 1)-(25, 33), diagonal 40, head size 24 px (12 px, 2.4 px); person 2 (1, 1)-(31,
    41), head size 30. People 0 and 1 have all 16 joints labelled, person 2 only upper_neck,
    head_top and the wrists."""
    rng = np.random.default_rng(0)
    joints = rng.uniform(50, 400, size=(3, 16, 2)).round()
    labelled = np.ones((3, 16), dtype=bool)
    labelled[2] = False
    labelled[2, [J["upper_neck"], J["head_top"], J["left_wrist"], J["right_wrist"]]] = True
    joints[~labelled] = 0.0
    boxes = np.array([[[11, 11], [41, 51]], [[1, 1], [25, 33]], [[1, 1], [31, 41]]], float)
    return write_gt_mat(tmp_path_factory.mktemp("pckh") / "gt.mat", joints, labelled, boxes)


def test_ground_truth_in_gives_100(small_gt):
    truth = read_mpii_ground_truth(small_gt)
    metric = PCKhMetric(small_gt, SKELETON)
    assert metric.stat_names == STAT_NAMES and metric.primary == "PCKh"
    assert metric.evaluate(people(truth.joints, [0, 1, 2])) == dict.fromkeys(STAT_NAMES, 100.0)


def test_hand_computed_example(small_gt):
    """Predictions in 0-based pixels (the ground truth minus 1, then these offsets):
    person 0: left_wrist off by (9, 12) = 15 px = 0.5 x 30: correct at 0.5 (the benchmark
      counts <=), wrong at 0.1 (> 3 px); head_top off by (0, 3) = 3 px = 0.1 x 30: correct at
      both; right_ankle off by (16, 0) > 15 px: wrong at both.
    person 1: right_elbow off by (0, 13) > 12 px: wrong; pelvis off by 100 px: in no group, so
      in no value. A second prediction of person 1, 50 px off everywhere with a lower score, is
      ignored (each person counts once, by its best-scored prediction).
    person 2: no prediction: its 4 labelled joints are misses.
    Labelled joints of the 14 (all but pelvis, thorax): 14 + 14 + 4 = 32.
    At 0.5: misses right_ankle (p0), right_elbow (p1), 4 of p2 -> 26 / 32 = 81.25.
    At 0.1: also left_wrist (p0) -> 25 / 32 = 78.125.
    Per joint at 0.5: upper_neck, head_top, both wrists 2/3; right_ankle, right_elbow 1/2; the
    rest 2/2. Groups (mean of their joints): Head (2/3 + 2/3) / 2 = 66.67, Shoulder 100,
    Elbow (100 + 50) / 2 = 75, Wrist 66.67, Hip 100, Knee 100, Ankle (100 + 50) / 2 = 75."""
    truth = read_mpii_ground_truth(small_gt)
    predicted = truth.joints[:2].copy()
    predicted[0, J["left_wrist"]] += (9, 12)
    predicted[0, J["head_top"]] += (0, 3)
    predicted[0, J["right_ankle"]] += (16, 0)
    predicted[1, J["right_elbow"]] += (0, 13)
    predicted[1, J["pelvis"]] += (100, 0)
    duplicate = truth.joints[1] + 50.0
    batch = people(np.stack([*predicted, duplicate]), [0, 1, 1], scores=[1.0, 0.9, 0.5])
    metric = PCKhMetric(small_gt, SKELETON)
    values = metric.evaluate(batch)
    expected = {
        "PCKh": 81.25,
        "PCKh@0.1": 78.125,
        "Head": 200 / 3,
        "Shoulder": 100.0,
        "Elbow": 75.0,
        "Wrist": 200 / 3,
        "Hip": 100.0,
        "Knee": 100.0,
        "Ankle": 75.0,
    }
    assert values == pytest.approx(expected, abs=1e-9)
    (report,) = metric.reports(batch)
    assert report.data["joints"]["right_ankle"] == {"labelled": 2, "PCKh": 50.0, "PCKh@0.1": 50.0}
    assert report.data["joints"]["pelvis"]["PCKh"] == 50.0  # reported, but in no value
    assert report.data["mean"] == {"PCKh": 81.25, "PCKh@0.1": 78.125}
    assert "Mean" in report.table and "right_ankle" in report.table


def test_detector_boxes_and_unknown_people_are_errors(small_gt):
    truth = read_mpii_ground_truth(small_gt)
    metric = PCKhMetric(small_gt, SKELETON)
    with pytest.raises(ValueError, match=r"1 of 3 predictions come from detector boxes"):
        metric.evaluate(people(truth.joints, [0, -1, 2]))
    with pytest.raises(ValueError, match=r"annotation id 7 names no person of .*gt\.mat"):
        metric.evaluate(people(truth.joints, [0, 1, 7]))


def test_json_ground_truth_needs_the_explicit_approximation(real_data_dir, caplog):
    gt_file = real_data_dir / "mpii" / "test_mpii.json"
    truth = read_mpii_ground_truth(gt_file)
    batch = people(truth.joints, range(len(truth)))
    with pytest.raises(ValueError, match=r"test_mpii.json: official PCKh needs the annotated head"):
        PCKhMetric(gt_file, SKELETON).evaluate(batch)
    with caplog.at_level(logging.WARNING):
        metric = PCKhMetric(gt_file, SKELETON, head_size="joints")
    assert "not the official MPII protocol" in caplog.text
    assert metric.evaluate(batch)["PCKh"] == 100.0


def real_gt_mat(real_data_dir: Path, out: Path) -> tuple[Path, dict]:
    """The real samples in the mpii_gt_val.mat layout. They carry no head boxes, so each gets a
    square one centred between upper_neck and head_top, of side their distance (an invented box,
    the same for both computations compared)."""
    entries = json.loads((real_data_dir / "mpii" / "test_mpii.json").read_text())
    joints = np.array([e["joints"] for e in entries], dtype=np.float64)  # 1-based
    labelled = np.array([e["joints_vis"] for e in entries]) > 0
    middle = (joints[:, J["upper_neck"]] + joints[:, J["head_top"]]) / 2
    side = np.linalg.norm(joints[:, J["head_top"]] - joints[:, J["upper_neck"]], axis=1)
    half = np.stack([side / 2, side / 2], axis=1)
    boxes = np.stack([middle - half, middle + half], axis=1)
    path = write_gt_mat(out / "mpii_gt_val.mat", joints, labelled, boxes)
    return path, {"joints": joints, "labelled": labelled, "boxes": boxes}


def mmpose_mpii_pckh(pred_0based, gt_1based, mask, head_boxes) -> dict[str, float]:
    """mmpose's MpiiPCKAccuracy.compute_metrics in a few lines (mmpose/evaluation/metrics/
    keypoint_2d_metrics.py with keypoint_pck_accuracy): predictions + 1 against the 1-based
    ground truth, distances / (0.6 x head box diagonal), correct at < thr, per-joint PCKh over
    the masked joints, Mean = sum(PCKh x jnt_ratio) with pelvis and thorax masked out."""
    head_size = 0.6 * np.linalg.norm(head_boxes[:, 1] - head_boxes[:, 0], axis=1)
    distance = np.linalg.norm(pred_0based + 1.0 - gt_1based, axis=2) / head_size[:, None]

    def per_joint(thr):
        return np.array([100 * np.mean(distance[mask[:, k], k] < thr) for k in range(16)])

    count = mask.sum(axis=0).astype(np.float64)
    count[6:8] = 0
    ratio = count / count.sum()
    pckh, low = per_joint(0.5), per_joint(0.1)
    return {
        "Head PCK": pckh[9],
        "Shoulder PCK": 0.5 * (pckh[13] + pckh[12]),
        "Elbow PCK": 0.5 * (pckh[14] + pckh[11]),
        "Wrist PCK": 0.5 * (pckh[15] + pckh[10]),
        "Hip PCK": 0.5 * (pckh[3] + pckh[2]),
        "Knee PCK": 0.5 * (pckh[4] + pckh[1]),
        "Ankle PCK": 0.5 * (pckh[5] + pckh[0]),
        "PCK": float(np.sum(np.where(ratio > 0, pckh, 0) * ratio)),
        "PCK@0.1": float(np.sum(np.where(ratio > 0, low, 0) * ratio)),
        "upper_neck": pckh[8],
    }


def test_real_mpii_equals_mmpose_formula(real_data_dir, tmp_path):
    """Noisy predictions (per joint 0.04 or 0.3 head sizes per axis, fixed seed) of the 5 real
    people, so that both thresholds matter: our metric
    equals mmpose's computation on every value it reports; our Head is the benchmark's mean of
    upper_neck and head_top, mmpose's Head head_top alone (our per-joint row)."""
    gt_file, raw = real_gt_mat(real_data_dir, tmp_path)
    truth = read_mpii_ground_truth(gt_file)
    np.testing.assert_allclose(truth.joints[truth.labelled], raw["joints"][raw["labelled"]] - 1)
    head = 0.6 * np.linalg.norm(raw["boxes"][:, 1] - raw["boxes"][:, 0], axis=1)
    rng = np.random.default_rng(3)
    spread = rng.choice([0.04, 0.3], size=(len(truth), 16, 1)) * head[:, None, None]
    predicted = truth.joints + rng.normal(size=truth.joints.shape) * spread
    metric = PCKhMetric(gt_file, SKELETON)
    batch = people(predicted, range(len(truth)))
    ours = metric.evaluate(batch)
    joints = metric.reports(batch)[0].data["joints"]
    reference = mmpose_mpii_pckh(predicted, raw["joints"], raw["labelled"], raw["boxes"])
    assert ours["PCKh"] == pytest.approx(reference["PCK"], abs=1e-9)
    assert ours["PCKh@0.1"] == pytest.approx(reference["PCK@0.1"], abs=1e-9)
    for group in ("Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle"):
        assert ours[group] == pytest.approx(reference[f"{group} PCK"], abs=1e-9)
    assert joints["head_top"]["PCKh"] == pytest.approx(reference["Head PCK"], abs=1e-9)
    expected_head = (reference["Head PCK"] + reference["upper_neck"]) / 2
    assert ours["Head"] == pytest.approx(expected_head, abs=1e-9)
    # This draw: of the 66 labelled joints of the 14 (two people lack both ankles), 58 are
    # correct at 0.5 and 37 at 0.1.
    assert ours["PCKh"] == pytest.approx(100 * 58 / 66, abs=1e-9)
    assert ours["PCKh@0.1"] == pytest.approx(100 * 37 / 66, abs=1e-9)
    assert metric.evaluate(people(truth.joints, range(5)))["PCKh"] == 100.0


def test_oracle_heatmaps_through_validation_step_give_pckh_100(real_data_dir, tmp_path):
    """Real MPII crops from `MpiiDataset` -> oracle heatmaps (and the mirrored crop's) ->
    `validation_step` (flip test, decoding, inverse affine) -> post-processing -> PCKh 100."""
    mpii = real_data_dir / "mpii"
    gt_file, _ = real_gt_mat(real_data_dir, tmp_path)
    input_size = (256, 256)
    codec = HeatmapCodec(input_size, (64, 64), sigma=2.0, refine="dark", blur_kernel=1)
    files = partial(
        MpiiDataset,
        train_annotations=str(mpii / "test_mpii.json"),
        train_images=str(mpii),
        val_annotations=str(mpii / "test_mpii.json"),
        val_images=str(mpii),
        val_head_boxes=str(gt_file),
    )
    datamodule = PoseDataModule(
        dataset=files,
        root=str(tmp_path),
        skeleton=SKELETON,
        train_transform=partial(TopDownTransform, input_size=input_size),
        val_transform=partial(TopDownTransform, input_size=input_size),
        val_batch_size=5,
        num_workers=0,
    )
    values, module = validate_with_oracle(datamodule, codec, SKELETON, partial(PCKhMetric))
    assert {name: values[f"val/{name}"] for name in STAT_NAMES} == dict.fromkeys(STAT_NAMES, 100.0)
    raw = module.last_evaluation.raw
    assert sorted(raw.annotation_ids.tolist()) == [0, 1, 2, 3, 4]
    truth = read_mpii_ground_truth(gt_file)
    order = raw.annotation_ids.argsort()
    error = np.abs(raw.keypoints[order, :, :2].double().numpy() - truth.joints)[truth.labelled]
    assert error.max() < 0.1
