"""PCK@0.2 (`posesuite.metrics.pck`): hand-computed examples with the torso and the box
reference, the oracle, matching by (image id, annotation id), degenerate references, the
ground-truth dispatch, the metric through torchmetrics, and an oracle network on LSP crops."""

from __future__ import annotations

import dataclasses
import logging
import sys
import types
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from oracle import validate_with_oracle
from scipy.io import savemat

from posesuite.codecs.heatmap import HeatmapCodec
from posesuite.data.datamodule import PoseDataModule
from posesuite.data.ground_truth import KeypointGroundTruth
from posesuite.data.records import DataError
from posesuite.data.sources.lsp import LspDataset
from posesuite.data.transforms import TopDownTransform
from posesuite.metrics.pck import (
    PCKMetric,
    evaluate_pck,
    read_keypoint_ground_truth,
    reference_sizes,
)
from posesuite.skeleton import load_skeleton

SKELETON = load_skeleton("lsp14")
STAT_NAMES = ("PCK", "PCK@0.1", "Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle")
J = {name: index for index, name in enumerate(SKELETON.keypoints)}


def hand_ground_truth() -> KeypointGroundTruth:
    """Four entries (image id = annotation id = 1..4), integer joints so offsets are exact.
    Torsos (left_shoulder - right_hip): entry 1 (10, 10)-(40, 50) = 50 px; entry 2 (100, 100)-
    (100, 130) = 30 px; entry 3 has right_hip unlabelled (degenerate); entry 4 (0, 0)-(12, 16) =
    20 px, with only left_shoulder, right_hip and both wrists labelled. Boxes (for the bbox
    reference): 100 x 40, 20 x 35, 0.5 x 0.5 (degenerate), 50 x 50."""
    rng = np.random.default_rng(0)
    joints = rng.integers(50, 400, size=(4, 14, 2)).astype(np.float64)
    labelled = np.ones((4, 14), dtype=bool)
    joints[0, J["left_shoulder"]], joints[0, J["right_hip"]] = (10, 10), (40, 50)
    joints[1, J["left_shoulder"]], joints[1, J["right_hip"]] = (100, 100), (100, 130)
    labelled[2, J["right_hip"]] = False
    labelled[3] = False
    labelled[3, [J["left_shoulder"], J["right_hip"], J["left_wrist"], J["right_wrist"]]] = True
    joints[3, J["left_shoulder"]], joints[3, J["right_hip"]] = (0, 0), (12, 16)
    joints[~labelled] = 0.0
    boxes = np.array([[0, 0, 100, 40], [5, 5, 20, 35], [0, 0, 0.5, 0.5], [0, 0, 50, 50]], float)
    ids = np.arange(1, 5)
    return KeypointGroundTruth(Path("hand.mat"), ids, ids, joints, labelled, boxes)


def hand_predictions(truth: KeypointGroundTruth):
    """Entry 1: left_wrist off by (6, 8) = 10 px, head_top by (3, 4) = 5 px, right_ankle by
    (0, 10.5). Entry 2: right_elbow off by (0, 7), neck by (0, 3.5); a second prediction of
    entry 2, 50 px off everywhere with a lower score, must be ignored. Entry 3: 100 px off
    (its reference is degenerate: left out whatever it predicts). Entry 4: no prediction."""
    predicted = truth.joints[:3].copy()
    predicted[0, J["left_wrist"]] += (6, 8)
    predicted[0, J["head_top"]] += (3, 4)
    predicted[0, J["right_ankle"]] += (0, 10.5)
    predicted[1, J["right_elbow"]] += (0, 7)
    predicted[1, J["neck"]] += (0, 3.5)
    predicted[2] += 100.0
    keypoints = np.concatenate([predicted, truth.joints[1:2] + 50.0])
    ids = np.array([1, 2, 3, 2])
    return keypoints, ids, ids, np.array([1.0, 0.9, 1.0, 0.5])


def test_hand_computed_torso_example(caplog):
    """Thresholds: entry 1 (torso 50) 10 px at 0.2, 5 px at 0.1; entry 2 (torso 30) 6 px, 3 px.
    entry 1: left_wrist 10 px: correct at 0.2 (<=), wrong at 0.1; head_top 5 px: correct at
      both; right_ankle 10.5 px: wrong at both.
    entry 2: right_elbow 7 px: wrong at both; neck 3.5 px: correct at 0.2, wrong at 0.1.
    entry 3: left out (torso joint unlabelled). entry 4: no prediction: its 4 joints are misses.
    Scored joints: 14 + 14 + 4 = 32.
    At 0.2: misses right_ankle (1), right_elbow (2), 4 of entry 4 -> 26 / 32 = 81.25.
    At 0.1: also left_wrist (1) and neck (2) -> 24 / 32 = 75.
    Per joint at 0.2: left_shoulder, right_hip, both wrists 2/3; right_ankle, right_elbow 1/2;
    the rest 2/2. Groups: Head (100 + 100) / 2 = 100, Shoulder (66.67 + 100) / 2 = 83.33,
    Elbow (100 + 50) / 2 = 75, Wrist 66.67, Hip (100 + 66.67) / 2 = 83.33, Knee 100,
    Ankle (100 + 50) / 2 = 75."""
    truth = hand_ground_truth()
    with caplog.at_level(logging.WARNING):
        values, counts = evaluate_pck(truth, *hand_predictions(truth), SKELETON, "torso")
    expected = {
        "PCK": 81.25,
        "PCK@0.1": 75.0,
        "Head": 100.0,
        "Shoulder": 250 / 3,
        "Elbow": 75.0,
        "Wrist": 200 / 3,
        "Hip": 250 / 3,
        "Knee": 100.0,
        "Ankle": 75.0,
    }
    assert values == pytest.approx(expected, abs=1e-9)
    assert counts.labelled.sum() == 32
    assert "1 of 4 person-frames left out" in caplog.text
    assert "1 of 4 person-frames have no prediction" in caplog.text


def test_hand_computed_bbox_example():
    """Thresholds max(w, h): entry 1 (100) 20 px at 0.2, 10 px at 0.1; entry 2 (35) 7 px,
    3.5 px; entry 3's box (0.5 px) is degenerate: left out.
    entry 1: left_wrist 10 px and head_top 5 px correct at both; right_ankle 10.5 px correct at
      0.2 only. entry 2: right_elbow 7 px correct at 0.2 only; neck 3.5 px correct at both.
    At 0.2: only entry 4's 4 joints miss -> 28 / 32 = 87.5.
    At 0.1: also right_ankle (1) and right_elbow (2) -> 26 / 32 = 81.25.
    Per joint at 0.2: left_shoulder, right_hip, both wrists 2/3, the rest 100: Shoulder and Hip
    (66.67 + 100) / 2 = 83.33, Wrist 66.67, the other groups 100."""
    truth = hand_ground_truth()
    values, _ = evaluate_pck(truth, *hand_predictions(truth), SKELETON, "bbox")
    expected = {
        "PCK": 87.5,
        "PCK@0.1": 81.25,
        "Head": 100.0,
        "Shoulder": 250 / 3,
        "Elbow": 100.0,
        "Wrist": 200 / 3,
        "Hip": 250 / 3,
        "Knee": 100.0,
        "Ankle": 100.0,
    }
    assert values == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("reference", ["torso", "bbox"])
def test_ground_truth_in_gives_100(reference):
    truth = hand_ground_truth()
    ids = truth.image_ids
    values, _ = evaluate_pck(truth, truth.joints, ids, ids, np.ones(4), SKELETON, reference)
    assert values == dict.fromkeys(STAT_NAMES, 100.0)


def test_degenerate_references_are_nan_never_predictions():
    truth = hand_ground_truth()
    torso = reference_sizes(truth, "torso", SKELETON)
    np.testing.assert_allclose(torso, [50.0, 30.0, np.nan, 20.0])
    np.testing.assert_allclose(reference_sizes(truth, "bbox", SKELETON), [100, 35, np.nan, 50])
    moved = truth.joints.copy()
    moved[:, J["right_hip"]] = moved[:, J["left_shoulder"]] + 0.5
    close = dataclasses.replace(truth, joints=moved, labelled=np.ones_like(truth.labelled))
    assert np.isnan(reference_sizes(close, "torso", SKELETON)).all()  # 0.71 px < 1 px
    other = reference_sizes(truth, "torso", SKELETON, ("left_shoulder", "left_hip"))
    assert np.isnan(other[3]) and np.isfinite(other[:2]).all()


def test_unknown_pairs_and_detector_boxes_are_errors():
    truth = hand_ground_truth()
    keypoints = truth.joints[:2]
    with pytest.raises(
        ValueError,
        match=r"prediction #1 \(image id 2, annotation id 9\) names no "
        r"ground-truth entry of hand\.mat",
    ):
        evaluate_pck(truth, keypoints, [1, 2], [1, 9], [1, 1], SKELETON)
    with pytest.raises(ValueError, match=r"1 of 2 predictions come from detector boxes"):
        evaluate_pck(truth, keypoints, [1, 2], [1, -1], [1, 1], SKELETON)


def write_lsp(root: Path, count: int, seed: int = 0) -> np.ndarray:
    """``count`` images of LSP in the original layout under ``root``, every joint visible; the
    0-based joints."""
    joints = np.random.default_rng(seed).uniform(20, 100, size=(count, 14, 2))
    flag = np.zeros((count, 14, 1))
    savemat(str(root / "joints.mat"), {"joints": np.concatenate([joints + 1, flag], 2).T})
    return joints


def test_metric_through_update_and_compute(tmp_path):
    """The val range 3-4 as the split names it: predictions of images 3 and 4 (image 4 sent
    twice, as DDP's padding repeats a sample) -> 100; the whole file scored instead leaves
    images 1-2 without predictions: 28 of 56 joints -> 50."""
    joints = write_lsp(tmp_path, 4)
    _, val = LspDataset(str(tmp_path), train_images=(1, 2), val_images=(3, 4)).prepare()
    metric = PCKMetric(val.annotations, SKELETON)
    assert metric.stat_names == STAT_NAMES and metric.primary == "PCK"
    for sample_ids, images in (([0, 1], [3, 4]), ([1], [4])):
        keypoints = torch.tensor(joints[np.array(images) - 1])
        metric.update(
            torch.tensor(sample_ids),
            torch.tensor(images),
            torch.cat([keypoints, torch.ones(len(images), 14, 1)], 2),
            torch.ones(len(images)),
            torch.ones(len(images)),
            torch.zeros(len(images), 4),
            torch.tensor(images),
        )
    computed = metric.compute()
    assert {name: float(value) for name, value in computed.items()} == dict.fromkeys(
        STAT_NAMES, 100.0
    )
    whole = PCKMetric(tmp_path / "joints.mat", SKELETON, reference="bbox")
    assert whole.evaluate(metric.people())["PCK"] == 50.0
    (report,) = metric.reports(metric.people())
    assert report.name == "per_joint_pck"
    assert report.data["joints"]["neck"] == {"labelled": 2, "PCK": 100.0, "PCK@0.1": 100.0}
    assert report.data["mean"] == {"PCK": 100.0, "PCK@0.1": 100.0}
    assert "PCK@0.2" in report.table and "Mean" in report.table


def test_metric_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"metric.reference must be one of torso, bbox"):
        PCKMetric(tmp_path / "joints.mat", SKELETON, reference="head")
    with pytest.raises(ValueError, match=r"skeleton 'lsp14' has no keypoint 'pelvis'"):
        PCKMetric(tmp_path / "joints.mat", SKELETON, torso_joints=["pelvis", "neck"])
    with pytest.raises(ValueError, match=r"two different joints"):
        PCKMetric(tmp_path / "joints.mat", SKELETON, torso_joints=["neck", "neck"])
    with pytest.raises(ValueError, match=r"metric.primary='PCKh'"):
        PCKMetric(tmp_path / "joints.mat", SKELETON, primary="PCKh")


def test_ground_truth_dispatch(tmp_path, monkeypatch):
    """A .mat is LSP's joints.mat (with its range); a folder is Penn Action's, read by
    `posesuite.data.sources.penn_action` (a stand-in here); anything else is an error."""
    write_lsp(tmp_path, 3)
    truth = read_keypoint_ground_truth(f"{tmp_path / 'joints.mat'}#images=2-3", 14)
    assert truth.image_ids.tolist() == [2, 3]
    calls = []
    fake = types.ModuleType("posesuite.data.sources.penn_action")
    fake.read_penn_action_ground_truth = lambda path, k: calls.append((path, k)) or truth
    monkeypatch.setitem(sys.modules, "posesuite.data.sources.penn_action", fake)
    assert read_keypoint_ground_truth(tmp_path, 14) is truth and calls == [(tmp_path, 14)]
    with pytest.raises(DataError, match=r"an image range only applies to LSP's joints\.mat"):
        read_keypoint_ground_truth(f"{tmp_path}#images=1-2", 14)
    (tmp_path / "gt.json").write_text("{}")
    with pytest.raises(DataError, match=r"gt\.json: PCK ground truth is LSP's joints\.mat or"):
        read_keypoint_ground_truth(tmp_path / "gt.json", 14)
    with pytest.raises(DataError, match=r"file not found: .*absent\.json"):
        read_keypoint_ground_truth(tmp_path / "absent.json", 14)


def test_oracle_heatmaps_through_validation_step_give_pck_100(tmp_path):
    """LSP crops from `LspDataset` (val images 4-6 of 6) -> oracle heatmaps -> `validation_step`
    (flip test, decoding, inverse affine) -> PCK 100 on exactly the val range."""
    import cv2

    joints = write_lsp(tmp_path, 6, seed=3)
    (tmp_path / "images").mkdir()
    rng = np.random.default_rng(4)
    for number in range(1, 7):
        # Noise: the oracle network tells its crops (and their mirror images) apart by content.
        image = rng.integers(0, 256, size=(120, 120, 3), dtype=np.uint8)
        cv2.imwrite(str(tmp_path / "images" / f"im{number:04d}.jpg"), image)
    input_size = (128, 128)
    codec = HeatmapCodec(input_size, (64, 64), sigma=2.0, refine="dark", blur_kernel=1)
    datamodule = PoseDataModule(
        dataset=partial(LspDataset, train_images=(1, 3), val_images=(4, 6)),
        root=str(tmp_path),
        skeleton=SKELETON,
        train_transform=partial(TopDownTransform, input_size=input_size),
        val_transform=partial(TopDownTransform, input_size=input_size),
        val_batch_size=3,
        num_workers=0,
    )
    values, module = validate_with_oracle(datamodule, codec, SKELETON, partial(PCKMetric))
    assert {name: values[f"val/{name}"] for name in STAT_NAMES} == dict.fromkeys(STAT_NAMES, 100.0)
    raw = module.last_evaluation.raw
    assert sorted(raw.annotation_ids.tolist()) == sorted(raw.image_ids.tolist()) == [4, 5, 6]
    order = raw.annotation_ids.argsort()
    error = np.abs(raw.keypoints[order, :, :2].double().numpy() - joints[3:])
    assert error.max() < 0.1
