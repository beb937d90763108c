"""The MPII reader (`posesuite.data.sources.mpii`): json and .mat forms, 1-based -> 0-based,
the reference code's boxes, bad files named; and `data=mpii` serving real crops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from scipy.io import savemat

import posesuite.config  # noqa: F401  (resolvers)
from posesuite.data.geometry import box_to_center_scale
from posesuite.data.records import DataError
from posesuite.data.sources.mpii import MAT_JOINT_NAMES, read_mpii_ground_truth, read_mpii_people
from posesuite.paths import CONF_DIR


@pytest.fixture(scope="module")
def mpii_dir(real_data_dir) -> Path:
    return real_data_dir / "mpii"


def test_json_people_are_0_based_with_the_reference_boxes(mpii_dir):
    entries = json.loads((mpii_dir / "test_mpii.json").read_text())
    records = read_mpii_people(mpii_dir / "test_mpii.json", mpii_dir, 16)
    assert [r.annotation_id for r in records] == [0, 1, 2, 3, 4]
    assert records[0].image_id == 5808361 and records[0].image_path.endswith("005808361.jpg")
    for entry, record in zip(entries, records, strict=True):
        labelled = np.array(entry["joints_vis"]) > 0
        keypoints = record.keypoints[0]
        np.testing.assert_allclose(keypoints[labelled, :2], np.array(entry["joints"])[labelled] - 1)
        assert (keypoints[labelled, 2] == 2).all() and (keypoints[~labelled] == 0).all()
        # Centre: the 1-based centre - 1, moved down 15 px per unit of scale; side 200 x scale.
        center, size = box_to_center_scale(record.bbox, 1.0, padding=1.0)
        scale = entry["scale"]
        expected = [entry["center"][0] - 1, entry["center"][1] - 1 + 15 * scale]
        np.testing.assert_allclose(center, expected, atol=1e-9)
        np.testing.assert_allclose(size, [200 * scale, 200 * scale], atol=1e-9)


def test_gt_mat_is_read_0_based(tmp_path):
    joints = np.arange(16 * 2 * 2, dtype=np.float64).reshape(2, 16, 2) + 10  # 1-based
    missing = np.zeros((2, 16))
    missing[1, 3] = 1
    boxes = np.array([[[1, 2], [21, 32]], [[5, 5], [15, 25]]], dtype=np.float64)
    names = np.array([[np.array([name]) for name in MAT_JOINT_NAMES]], dtype=object)
    path = tmp_path / "mpii_gt_val.mat"
    savemat(
        str(path),
        {
            "pos_gt_src": joints.transpose(1, 2, 0),
            "jnt_missing": missing.T,
            "headboxes_src": boxes.transpose(1, 2, 0),
            "dataset_joints": names,
        },
    )
    truth = read_mpii_ground_truth(path)
    assert len(truth) == 2 and truth.labelled.sum() == 31 and not truth.labelled[1, 3]
    np.testing.assert_allclose(truth.joints[0], joints[0] - 1)
    np.testing.assert_allclose(truth.joints[1, 3], [0, 0])
    np.testing.assert_allclose(truth.head_boxes, boxes - 1)


def test_bad_mat_files_are_named(tmp_path):
    path = tmp_path / "gt.mat"
    savemat(str(path), {"pos_gt_src": np.zeros((16, 2, 3)), "jnt_missing": np.zeros((16, 3))})
    with pytest.raises(DataError, match=r"gt\.mat: lacks headboxes_src"):
        read_mpii_ground_truth(path)
    savemat(
        str(path),
        {
            "pos_gt_src": np.zeros((16, 2, 3)),
            "jnt_missing": np.zeros((16, 4)),
            "headboxes_src": np.zeros((2, 2, 3)),
        },
    )
    with pytest.raises(DataError, match=r"gt\.mat: pos_gt_src \[16, 2, 3\], jnt_missing \[16, 4\]"):
        read_mpii_ground_truth(path)
    path.write_bytes(b"not a mat file at all")
    with pytest.raises(DataError, match=r"gt\.mat: not a readable Matlab \.mat file"):
        read_mpii_ground_truth(path)
    with pytest.raises(DataError, match=r"file not found: .*absent\.mat"):
        read_mpii_ground_truth(tmp_path / "absent.mat")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"scale": -1}, r"person #1 \(image '052475643.jpg'\): scale must be a positive number"),
        ({"joints": [[0, 0]] * 15}, r"person #1 \(image '052475643.jpg'\): joints \[15, 2\]"),
        ({"center": None}, r"person #1 \(image '052475643.jpg'\): center"),
        ({"image": "missing.jpg"}, r"1 image file\(s\) missing, e.g. .*missing.jpg"),
        ({"image": "image.jpg"}, r"person #1: no digits in the image name 'image.jpg'"),
    ],
)
def test_bad_json_records_are_named(mpii_dir, tmp_path, change, message):
    entries = json.loads((mpii_dir / "test_mpii.json").read_text())
    entries[1].update(change)
    path = tmp_path / "mpii.json"
    path.write_text(json.dumps(entries))
    if change.get("image") == "image.jpg":
        (tmp_path / "image.jpg").symlink_to(mpii_dir / "052475643.jpg")
        for entry in entries:
            if entry is not entries[1]:
                (tmp_path / entry["image"]).symlink_to(mpii_dir / entry["image"])
        mpii_dir = tmp_path
    with pytest.raises(DataError, match=message):
        read_mpii_people(path, mpii_dir, 16)
    with pytest.raises(DataError, match=r"mpii.json: expected a list of MPII people"):
        path.write_text("{}")
        read_mpii_people(path, mpii_dir, 16)


def test_data_mpii_serves_real_crops(mpii_dir, tmp_path):
    """`data=mpii skeleton=mpii16 metric=pckh` on a data.root laid out as the reference code's,
    with links to the real samples: the val crops hold the labelled joints where the affine
    puts them."""
    (tmp_path / "annotations").mkdir()
    (tmp_path / "images").mkdir()
    for name in ("mpii_train.json", "mpii_val.json"):
        (tmp_path / "annotations" / name).symlink_to(mpii_dir / "test_mpii.json")
    for image in mpii_dir.glob("*.jpg"):
        (tmp_path / "images" / image.name).symlink_to(image)
    overrides = [
        "data=mpii",
        "skeleton=mpii16",
        "metric=pckh",
        f"data.root={tmp_path}",
        "data.num_workers=0",
        "data.val_batch_size=5",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    assert cfg.metric.primary == "PCKh" and cfg.optimized_metric == "val/PCKh"
    datamodule = instantiate(cfg.data)
    assert datamodule.val_annotations == tmp_path / "annotations" / "mpii_gt_val.mat"
    datamodule.setup("fit")
    assert len(datamodule.train_set) == len(datamodule.val_set) == 5
    batch = next(iter(datamodule.val_dataloader()))
    width, height = cfg.model.input_size
    assert batch["image"].shape == (5, 1, 3, height, width)
    assert sorted(batch["annotation_id"].tolist()) == [0, 1, 2, 3, 4]
    records = datamodule.val_set.records
    for index in range(5):
        record = records[int(batch["sample_id"][index])]
        labelled = record.keypoints[0, :, 2] > 0
        affine = batch["affine"][index].double().numpy()  # one affine for the clip
        points = record.keypoints[0, labelled, :2].astype(np.float64)
        expected = points @ affine[:, :2].T + affine[:, 2]
        np.testing.assert_allclose(
            batch["keypoints"][index, 0, labelled].numpy(), expected, atol=1e-3
        )
