"""The Penn Action reader (`posesuite.data.sources.penn_action`) on tiny hand-written videos:
1-based -> 0-based, training and evaluation clips, the union box, ids, invisible joints, errors
named by file and record, and `data=penn_action` serving clips."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from scipy.io import savemat

import posesuite.config  # noqa: F401  (resolvers)
from posesuite.data.geometry import box_to_center_scale
from posesuite.data.records import DataError
from posesuite.data.sources.penn_action import (
    PennActionDataset,
    clip_starts,
    read_penn_action_ground_truth,
    read_penn_action_video,
)
from posesuite.paths import CONF_DIR

K = 13
WIDTH, HEIGHT = 48, 40


def _labels(frames: int, train: int, seed: int) -> dict[str, np.ndarray]:
    """A video's label fields, 1-based, with some joints invisible and some of those outside
    the frame (`annotated` tells them apart)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(10, 30, (frames, K))
    y = rng.uniform(8, 30, (frames, K))
    visibility = (rng.random((frames, K)) > 0.3).astype(np.uint8)
    outside = (visibility == 0) & (rng.random((frames, K)) > 0.5)
    x[outside] = WIDTH + 3.0  # past the right edge: Penn's x, y run from 1 to W, H
    inside_x = np.where(outside, np.nan, x)
    corners = np.stack([np.nanmin(inside_x, 1), y.min(1), np.nanmax(inside_x, 1), y.max(1)], axis=1)
    corners += np.array([-2, -2, 2, 2])
    return {
        "x": x,
        "y": y,
        "visibility": visibility,
        "bbox": corners,
        "train": np.array([[train]]),
        "nframes": np.array([[frames]]),
        "dimensions": np.array([[HEIGHT, WIDTH, frames]]),
        "action": "baseball_pitch",
        "pose": "front",
    }


def _write_video(root: Path, number: int, labels: dict, write_frames: bool = True) -> Path:
    (root / "labels").mkdir(parents=True, exist_ok=True)
    path = root / "labels" / f"{number:04d}.mat"
    savemat(str(path), labels)
    if write_frames:
        folder = root / "frames" / f"{number:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        image = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)
        for frame in range(1, len(labels["x"]) + 1):
            cv2.imwrite(str(folder / f"{frame:06d}.jpg"), image)
    return path


@pytest.fixture(scope="module")
def penn_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train videos 1 (7 frames) and 3 (2 frames: shorter than a clip); test videos 2 (7) and
    4 (3)."""
    root = tmp_path_factory.mktemp("penn_action")
    for number, frames, train in ((1, 7, 1), (2, 7, -1), (3, 2, 1), (4, 3, -1)):
        _write_video(root, number, _labels(frames, train, seed=number))
    return root


def annotated(labels: dict) -> np.ndarray:
    """Visible, or at a position inside the frame (every invisible joint the fixture left
    inside)."""
    return (labels["visibility"] == 1) | (labels["x"] <= WIDTH)


def test_labels_are_read_0_based_and_joints_outside_the_frame_unlabelled(penn_root: Path) -> None:
    labels = _labels(7, 1, seed=1)
    video = read_penn_action_video(penn_root / "labels" / "0001.mat")
    assert video.number == 1 and video.training and video.num_frames == 7
    visible, known = labels["visibility"] == 1, annotated(labels)
    assert (known & ~visible).any() and (~known).any()  # the fixture has both kinds
    np.testing.assert_array_equal(video.visible, visible)
    np.testing.assert_array_equal(video.annotated, known)
    # Invisible joints inside the frame keep their position; those outside it have none.
    np.testing.assert_allclose(video.joints[..., 0][known], labels["x"][known] - 1)
    np.testing.assert_allclose(video.joints[..., 1][known], labels["y"][known] - 1)
    assert (video.joints[~known] == 0).all()
    np.testing.assert_allclose(video.boxes, labels["bbox"] - 1)
    assert video.frame_ids.tolist() == [10001 + frame for frame in range(7)]


def test_clip_starts() -> None:
    assert clip_starts(7, 3, stride=2) == [0, 2, 4]
    assert clip_starts(7, 3, stride=1) == [0, 1, 2, 3, 4]
    assert clip_starts(2, 3, stride=1) == clip_starts(2, 3, stride=None) == []
    assert clip_starts(6, 3, stride=None) == [0, 3]
    assert clip_starts(7, 3, stride=None) == [0, 3, 4]  # the last one ends with the video


@pytest.mark.parametrize("frames", range(1, 12))
@pytest.mark.parametrize("length", [1, 3, 5])
def test_evaluation_clips_cover_every_frame(frames: int, length: int) -> None:
    starts = clip_starts(frames, length, stride=None)
    if frames < length:
        assert starts == []
        return
    covered = np.zeros(frames, int)
    for start in starts:
        covered[start : start + length] += 1
    assert (covered >= 1).all() and starts[-1] + length == frames
    # Non-overlapping but for the last clip, which is aligned to the end.
    assert (np.diff(starts[:-1]) == length).all()
    assert covered.sum() - frames < length


def test_training_and_test_clips(penn_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    train, test = PennActionDataset(str(penn_root), clip_length=3, clip_stride=2).prepare()
    with caplog.at_level(logging.INFO, logger="posesuite.data.sources.penn_action"):
        train_records = train.read_people(K)
    # Video 3 (2 frames) is shorter than a clip: left out, said once.
    assert [r.message for r in caplog.records if "left out" in r.message] == [
        f"Penn Action {penn_root}: 1 of 2 train videos are shorter than a clip of 3 frames and "
        "are left out"
    ]
    assert [r.frame_ids for r in train_records] == [
        (10001, 10002, 10003),
        (10003, 10004, 10005),
        (10005, 10006, 10007),
    ]
    test_records = test.read_people(K)
    assert [r.frame_ids for r in test_records] == [
        (20001, 20002, 20003),
        (20004, 20005, 20006),
        (20005, 20006, 20007),  # aligned to the end of the video
        (40001, 40002, 40003),
    ]
    assert [r.annotation_id for r in test_records] == [2, 2, 2, 4]
    record = test_records[2]
    assert record.image_id == 20007 and record.num_frames == 3
    assert record.frames == tuple(
        str(penn_root / "frames" / "0002" / f"{frame:06d}.jpg") for frame in (5, 6, 7)
    )
    labels = _labels(7, -1, seed=2)
    window = slice(4, 7)
    visible = labels["visibility"][window] == 1
    known = annotated(labels)[window]
    np.testing.assert_allclose(record.keypoints[..., 0][known], labels["x"][window][known] - 1)
    # COCO's flags: 2 visible, 1 seen by the annotators' tool but hidden, 0 outside the frame.
    np.testing.assert_array_equal(record.keypoints[..., 2], np.select([visible, known], [2, 1], 0))
    assert (record.keypoints[~known] == 0).all()


def test_a_clip_is_cropped_by_the_union_of_its_frames_boxes(penn_root: Path) -> None:
    _, test = PennActionDataset(str(penn_root), clip_length=3).prepare()
    record = test.read_people(K)[1]  # video 2, frames 4-6
    corners = _labels(7, -1, seed=2)["bbox"][3:6] - 1  # 0-based
    low, high = corners[:, :2].min(0), corners[:, 2:].max(0)
    center, size = box_to_center_scale(record.bbox, record.bbox[2] / record.bbox[3], padding=1)
    np.testing.assert_allclose(center, (low + high) / 2, atol=1e-9)
    np.testing.assert_allclose(size, high - low, atol=1e-9)


@pytest.mark.parametrize("where", ["root", "labels"])
def test_ground_truth_is_every_frame_of_the_test_videos(penn_root: Path, where: str) -> None:
    path = penn_root if where == "root" else penn_root / "labels"
    truth = read_penn_action_ground_truth(path)
    assert truth.path == path and truth.num_keypoints == K
    assert truth.image_ids.tolist() == [20001 + f for f in range(7)] + [40001, 40002, 40003]
    assert truth.annotation_ids.tolist() == [2] * 7 + [4] * 3
    labels = _labels(7, -1, seed=2)
    known = annotated(labels)
    np.testing.assert_array_equal(truth.labelled[:7], known)
    np.testing.assert_allclose(truth.joints[:7, :, 1][known], labels["y"][known] - 1)
    visible_only = read_penn_action_ground_truth(path, scored="visible")
    np.testing.assert_array_equal(visible_only.labelled[:7], labels["visibility"] == 1)
    corners = labels["bbox"]
    expected = np.concatenate([corners[:, :2] - 1, corners[:, 2:] - corners[:, :2]], axis=1)
    np.testing.assert_allclose(truth.boxes[:7], expected)


def _bad(labels: dict, change: str) -> dict:
    labels = dict(labels)
    if change == "no bbox":
        del labels["bbox"]
    elif change == "x shape":
        labels["x"] = labels["x"][:, :12]
    elif change == "bbox rows":
        labels["bbox"] = labels["bbox"][:4]
    elif change == "nframes":
        labels["nframes"] = np.array([[6]])
    elif change == "visibility 2":
        labels["visibility"] = labels["visibility"].copy()
        labels["visibility"][2, 5] = 2
    elif change == "NaN joint":
        labels["visibility"] = np.ones_like(labels["visibility"])
        labels["x"] = labels["x"].copy()
        labels["x"][3, 7] = np.nan
    elif change == "bad box":
        labels["bbox"] = labels["bbox"].copy()
        labels["bbox"][4, 2] = labels["bbox"][4, 0] - 1
    elif change == "train 0":
        labels["train"] = np.array([[0]])
    return labels


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("no bbox", r"0005\.mat \(video 5\): lacks bbox"),
        ("x shape", r"0005\.mat \(video 5\): x \[5, 12\].*expected \[nframes, 13\]"),
        ("bbox rows", r"0005\.mat \(video 5\): bbox \[4, 4\], expected \[5, 4\]"),
        ("nframes", r"0005\.mat \(video 5\): nframes is \[6\], the labels 5"),
        ("visibility 2", r"0005\.mat \(video 5\): frame 3, joint 5: visibility 2, expected 0 or 1"),
        ("NaN joint", r"0005\.mat \(video 5\): frame 4, joint 7: visible, but not at a finite"),
        ("bad box", r"0005\.mat \(video 5\): frame 5: bbox .* is not a box"),
        ("train 0", r"0005\.mat \(video 5\): train is \[0\.0\], expected 1 \(train\) or -1"),
    ],
)
def test_bad_label_files_are_named(tmp_path: Path, change: str, message: str) -> None:
    path = _write_video(tmp_path, 5, _bad(_labels(5, 1, seed=5), change), write_frames=False)
    with pytest.raises(DataError, match=message):
        read_penn_action_video(path)


def test_bad_datasets_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"labels: not found \(Penn Action's layout"):
        PennActionDataset(str(tmp_path)).prepare()
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "first.mat").write_bytes(b"")
    with pytest.raises(DataError, match=r"first\.mat: a label file is named by its video number"):
        read_penn_action_ground_truth(tmp_path)
    (tmp_path / "labels" / "first.mat").unlink()
    (tmp_path / "labels" / "0007.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match=r"0007\.mat: not a readable Matlab \.mat file"):
        read_penn_action_ground_truth(tmp_path)
    _write_video(tmp_path, 7, _labels(4, 1, seed=7), write_frames=False)
    with pytest.raises(DataError, match=r"no test videos \(label files with train = -1\)"):
        read_penn_action_ground_truth(tmp_path)
    train, _ = PennActionDataset(str(tmp_path), clip_length=3).prepare()
    with pytest.raises(
        DataError, match=r"4 frame file\(s\) of labelled frames missing, e\.g\. .*0007/000001\.jpg"
    ):
        train.read_people(K)
    with pytest.raises(DataError, match=r"no train videos of at least 5 frames \(1 train videos\)"):
        PennActionDataset(str(tmp_path), clip_length=5).prepare()[0].read_people(K)
    (tmp_path / "labels" / "7.mat").write_bytes((tmp_path / "labels" / "0007.mat").read_bytes())
    with pytest.raises(DataError, match=r"0007\.mat and .*7\.mat both label video 7"):
        read_penn_action_ground_truth(tmp_path)


def test_data_penn_action_serves_clips(penn_root: Path) -> None:
    """`data=penn_action` selects penn13 and PCK of the box size, and serves clips of T frames
    with one affine each that puts the visible joints of every frame where they are."""
    overrides = [
        "data=penn_action",
        f"data.root={penn_root}",
        "data.num_workers=0",
        "data.val_batch_size=4",
        "data.dataset.clip_length=3",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    assert cfg.skeleton.name == "penn13" and cfg.metric.reference == "bbox"
    datamodule = instantiate(cfg.data)
    assert datamodule.val_annotations == penn_root
    datamodule.setup("fit")
    assert len(datamodule.train_set) == 5 and len(datamodule.val_set) == 4
    batch = next(iter(datamodule.val_dataloader()))
    width, height = cfg.model.input_size
    assert batch["image"].shape == (4, 3, 3, height, width)
    assert batch["image_id"].shape == (4, 3)
    for index in range(4):
        record = datamodule.val_set.records[int(batch["sample_id"][index])]
        assert batch["image_id"][index].tolist() == list(record.frame_ids)
        visible = record.keypoints[..., 2] > 0
        affine = batch["affine"][index].double().numpy()
        expected = record.keypoints[..., :2].astype(np.float64) @ affine[:, :2].T + affine[:, 2]
        np.testing.assert_allclose(
            batch["keypoints"][index].numpy()[visible], expected[visible], atol=1e-3
        )
