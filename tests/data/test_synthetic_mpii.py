"""The embedded synthetic MPII (`posesuite.data.sources.synthetic_mpii`): MPII's files in their
official layouts, read back by the MPII reader; head boxes, centres and scales as MPII's; a
ground-truth oracle scores PCKh 100; determinism; `data=synthetic_mpii`."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from scipy.io import loadmat

import posesuite.config  # noqa: F401  (resolvers)
from posesuite.data.sources.mpii import (
    MAT_JOINT_NAMES,
    read_mpii_ground_truth,
)
from posesuite.data.sources.synthetic_mpii import (
    SyntheticMpiiDataset,
    SyntheticMpiiSpec,
    ensure_synthetic_mpii,
)
from posesuite.metrics.pck import evaluate_pckh
from posesuite.paths import CONF_DIR
from posesuite.skeleton import load_skeleton

SMALL = SyntheticMpiiSpec(num_train_images=10, num_val_images=12)
MPII = load_skeleton("mpii16")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_synthetic_mpii(tmp_path_factory.mktemp("synthetic_mpii"), SMALL)


def _json(path: Path) -> list[dict]:
    return json.loads(path.read_text())


def test_files_in_mpiis_layouts(small: Path) -> None:
    assert small.name == SMALL.digest()
    names = sorted(p.name for p in (small / "images").iterdir())
    assert names == [f"{i:09d}.jpg" for i in range(1, 23)]
    val = _json(small / "annotations" / "mpii_val.json")
    for entry in (*_json(small / "annotations" / "mpii_train.json"), *val):
        assert set(entry) == {"image", "center", "scale", "joints", "joints_vis"}
        assert np.shape(entry["joints"]) == (16, 2) and len(entry["joints_vis"]) == 16
        missing = np.array(entry["joints_vis"]) == 0
        assert (np.array(entry["joints"])[missing] == -1).all()
    assert {entry["image"] for entry in val} <= set(names[10:])  # val images follow train's
    content = loadmat(str(small / "annotations" / "mpii_gt_val.mat"))
    count = len(val)
    assert content["pos_gt_src"].shape == (16, 2, count)
    assert content["jnt_missing"].shape == (16, count)
    assert content["headboxes_src"].shape == (2, 2, count)
    names = tuple(str(np.ravel(n)[0]) for n in np.ravel(content["dataset_joints"]))
    assert names == MAT_JOINT_NAMES
    # Person n of the .mat is entry n of the val json, both 1-based.
    for n, entry in enumerate(val):
        labelled = np.array(entry["joints_vis"]) == 1
        np.testing.assert_array_equal(content["jnt_missing"][:, n] == 0, labelled)
        np.testing.assert_allclose(
            content["pos_gt_src"][labelled, :, n], np.array(entry["joints"])[labelled]
        )


def test_read_back_by_the_mpii_reader(small: Path) -> None:
    train, val = SyntheticMpiiDataset(small.parent, **asdict(SMALL)).prepare()
    assert val.annotations == small / "annotations" / "mpii_gt_val.mat"
    train_people = train.read_people(16)
    val_people = val.read_people(16)
    assert len(train_people) == len(_json(train.people))
    assert [r.annotation_id for r in val_people] == list(range(len(_json(val.people))))
    # Several people per image, as MPII.
    assert max(Counter(r.image_id for r in (*train_people, *val_people)).values()) >= 2
    truth = read_mpii_ground_truth(val.annotations)
    assert len(truth) == len(val_people)
    for record, joints, labelled in zip(val_people, truth.joints, truth.labelled, strict=True):
        np.testing.assert_array_equal(record.keypoints[0, :, 2] > 0, labelled)
        np.testing.assert_allclose(record.keypoints[0, labelled, :2], joints[labelled], atol=1e-4)


def test_head_boxes_hold_head_top_and_upper_neck(small: Path) -> None:
    truth = read_mpii_ground_truth(small / "annotations" / "mpii_gt_val.mat")
    low, high = truth.head_boxes[:, 0], truth.head_boxes[:, 1]
    for name in ("head_top", "upper_neck"):
        joint = MPII.index(name)
        labelled = truth.labelled[:, joint]
        point = truth.joints[labelled, joint]
        assert labelled.sum() >= len(truth) // 2
        assert (point >= low[labelled] - 1e-6).all() and (point <= high[labelled] + 1e-6).all()
    # Head sizes (0.6 x the box diagonal) of a head: about a tenth of a standing person's
    # height, up to a fifth of a crouching one's.
    _, val = SyntheticMpiiDataset(small.parent, **asdict(SMALL)).prepare()
    scales = np.array([entry["scale"] for entry in _json(val.people)])
    ratio = 0.6 * np.linalg.norm(high - low, axis=1) / (200 * scales)
    assert (ratio > 1 / 15).all() and (ratio < 1 / 3).all()


def test_centre_and_scale_frame_the_person(small: Path) -> None:
    """The reference code's box (centre moved down 15 px per unit of scale, side 200 x scale)
    holds every labelled joint, and a standing person's centre lies on the torso."""
    _, val = SyntheticMpiiDataset(small.parent, **asdict(SMALL)).prepare()
    neck, pelvis = MPII.index("upper_neck"), MPII.index("pelvis")
    wrists = [MPII.index("left_wrist"), MPII.index("right_wrist")]
    standing = 0
    for record, entry in zip(val.read_people(16), _json(val.people), strict=True):
        x, y, w, h = record.bbox
        keypoints = record.keypoints[0]
        points = keypoints[keypoints[:, 2] > 0, :2]
        # Edges in pixel-centre coordinates, less the files' rounding (scale to 4 decimals).
        low, high = np.array([x - 0.5, y - 0.5]) - 0.02, np.array([x + w, y + h]) + 0.02
        assert (points >= low).all() and (points <= high).all()
        ys = keypoints[:, 1]
        labelled = keypoints[[neck, pelvis, *wrists], 2].all()
        if labelled and ys[neck] < min(ys[pelvis], *ys[wrists]):  # upright, hands down
            standing += 1
            height = ys[pelvis] - ys[neck]
            assert ys[neck] < entry["center"][1] - 1 < ys[pelvis] + 0.5 * height
    assert standing >= 3


def test_ground_truth_fed_back_scores_pckh_100(small: Path) -> None:
    _, val = SyntheticMpiiDataset(small.parent, **asdict(SMALL)).prepare()
    records = val.read_people(16)
    values, counts = evaluate_pckh(
        read_mpii_ground_truth(val.annotations),
        np.stack([r.keypoints[0] for r in records]),
        np.array([r.annotation_id for r in records]),
        np.ones(len(records)),
        MPII,
    )
    assert counts.labelled.sum() > 0
    assert all(value == 100.0 for value in values.values()), values


def test_same_spec_gives_identical_files(small: Path, tmp_path: Path) -> None:
    again = ensure_synthetic_mpii(tmp_path, SMALL)
    files = sorted(p.relative_to(small) for p in small.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for relative in files:
        assert (small / relative).read_bytes() == (again / relative).read_bytes(), relative


def test_incomplete_folders_and_bad_specs_are_reported(tmp_path: Path) -> None:
    tiny = replace(SMALL, num_train_images=1, num_val_images=1)
    (tmp_path / tiny.digest()).mkdir()
    with pytest.raises(RuntimeError, match="incomplete"):
        ensure_synthetic_mpii(tmp_path, tiny)
    for change in ({"val_seed": 0}, {"min_people": 3, "max_people": 2}, {"num_val_images": 0}):
        with pytest.raises(ValueError):
            replace(SMALL, **change)


def test_data_synthetic_mpii_serves_crops(tmp_path: Path) -> None:
    overrides = [
        "data=synthetic_mpii",
        f"data.root={tmp_path}",
        "data.num_workers=0",
        "data.dataset.num_train_images=2",
        "data.dataset.num_val_images=3",
        "data.val_batch_size=2",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    assert cfg.skeleton.name == "mpii16" and cfg.metric.primary == "PCKh"
    datamodule = instantiate(cfg.data)
    assert datamodule.val_annotations.name == "mpii_gt_val.mat"
    datamodule.setup("fit")
    batch = next(iter(datamodule.val_dataloader()))
    width, height = cfg.model.input_size
    assert batch["image"].shape == (2, 1, 3, height, width)
