"""The LSP reader (`posesuite.data.sources.lsp`): both joints.mat layouts, 1-based -> 0-based,
the occluded flag of the original LSP inverted, image ids, the split ranges and the ground truth
they give the metric, bad files named; and `data=lsp` serving crops."""

from __future__ import annotations

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
from posesuite.data.sources.lsp import (
    BOX_MARGIN,
    LspDataset,
    ground_truth_reference,
    read_lsp_ground_truth,
    read_lsp_joints,
    read_lsp_people,
    split_image_range,
)
from posesuite.paths import CONF_DIR


def write_joints_mat(path: Path, joints_1based: np.ndarray, flag: np.ndarray, layout: str) -> Path:
    """A joints.mat of N people: ``joints_1based`` (N, 14, 2) and the file's own third value
    ``flag`` (N, 14): 1 = occluded in the original layout, 1 = visible in the extended one."""
    points = np.concatenate([joints_1based, flag[..., None]], axis=2)  # (N, 14, 3)
    array = points.transpose(2, 1, 0) if layout == "original" else points.transpose(1, 2, 0)
    savemat(str(path), {"joints": array})
    return path


def write_images(folder: Path, numbers, digits: int, size=(64, 48)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for number in numbers:
        image = np.full((size[1], size[0], 3), 127, np.uint8)
        cv2.imwrite(str(folder / f"im{number:0{digits}d}.jpg"), image)


@pytest.fixture
def lsp_root(tmp_path) -> tuple[Path, np.ndarray, np.ndarray]:
    """Four images in LSP's original layout: integer 1-based joints in [5, 40], the file's
    flag 1 (occluded) on joint 3 of image 2 and on joints 0 and 13 of image 4."""
    rng = np.random.default_rng(0)
    joints = rng.integers(5, 41, size=(4, 14, 2)).astype(np.float64)
    occluded = np.zeros((4, 14))
    occluded[1, 3] = 1
    occluded[3, [0, 13]] = 1
    write_joints_mat(tmp_path / "joints.mat", joints, occluded, "original")
    write_images(tmp_path / "images", range(1, 5), digits=4)
    return tmp_path, joints, occluded


def test_original_layout_is_0_based_with_the_occluded_flag_inverted(lsp_root):
    root, joints, occluded = lsp_root
    content = read_lsp_joints(root / "joints.mat")
    assert content.layout == "original" and len(content) == 4
    np.testing.assert_array_equal(content.joints, joints - 1)
    # The file's 1 means occluded (COCO flag 1), its 0 visible (flag 2).
    np.testing.assert_array_equal(content.flags, np.where(occluded == 1, 1, 2))


def test_extended_layout_reads_its_visible_flag_and_missing_joints(tmp_path):
    """LSP-extended's flag is 1 for visible. Joints without a position (NaN, or at/beyond the
    top-left corner on both axes: (0, 0), (-1, -1)) are unlabelled, with zeros; a position
    outside one edge only (x = -3) is kept."""
    joints = np.full((2, 14, 2), 20.0)
    joints[0, :, 0] = np.arange(14) + 10.0
    visible = np.ones((2, 14))
    visible[0, [1, 2]] = 0
    joints[1, 4] = np.nan
    joints[1, 5] = (0.0, 0.0)
    joints[1, 6] = (-1.0, -1.0)
    joints[1, 7] = (-3.0, 25.0)
    visible[1, [4, 5, 6]] = 0
    path = write_joints_mat(tmp_path / "joints.mat", joints, visible, "extended")
    content = read_lsp_joints(path)
    assert content.layout == "extended"
    np.testing.assert_array_equal(content.joints[0], joints[0] - 1)
    assert content.flags[0].tolist() == [2, 1, 1] + [2] * 11
    assert content.flags[1].tolist() == [2, 2, 2, 2, 0, 0, 0, 2] + [2] * 6
    np.testing.assert_array_equal(content.joints[1, 4:7], 0.0)
    np.testing.assert_array_equal(content.joints[1, 7], (-4.0, 24.0))


def test_the_splits_read_their_own_images(lsp_root):
    """Images 1-2 train, 3-4 val: ids are the image numbers, the box is the joints' tight box
    (edges through the outermost joints) grown by 5% of its longer side each way, centred on
    the joints' middle as box_to_center_scale reads it."""
    root, joints, _ = lsp_root
    train, val = LspDataset(str(root), train_images=(1, 2), val_images=(3, 4)).prepare()
    records = val.read_people(14)
    assert [(r.image_id, r.annotation_id) for r in records] == [(3, 3), (4, 4)]
    assert records[1].frames == (str(root / "images" / "im0004.jpg"),)
    assert [r.image_id for r in train.read_people(14)] == [1, 2]
    record = records[1]
    points = joints[3] - 1
    low, high = points.min(axis=0), points.max(axis=0)
    margin = BOX_MARGIN * (high - low).max()
    np.testing.assert_allclose(
        record.bbox, [*(low + 0.5 - margin), *(high - low + 2 * margin)], atol=1e-12
    )
    center, _ = box_to_center_scale(record.bbox, 1.0, 1.0)
    np.testing.assert_allclose(center, (low + high) / 2, atol=1e-12)
    np.testing.assert_array_equal(record.keypoints[0, :, :2], points)
    assert record.keypoints[0, :, 2].tolist() == [1.0] + [2.0] * 12 + [1.0]
    assert record.area == pytest.approx(record.bbox[2] * record.bbox[3])


def test_the_val_split_gives_the_metric_only_its_range(lsp_root):
    root, joints, _ = lsp_root
    _, val = LspDataset(str(root), train_images=(1, 2), val_images=(3, 4)).prepare()
    assert val.annotations == Path(f"{root / 'joints.mat'}#images=3-4")
    assert split_image_range(val.annotations) == (root / "joints.mat", (3, 4))
    truth = read_lsp_ground_truth(val.annotations, 14)
    assert truth.path == val.annotations
    assert truth.image_ids.tolist() == truth.annotation_ids.tolist() == [3, 4]
    np.testing.assert_array_equal(truth.joints, joints[2:] - 1)
    assert truth.labelled.all()  # occluded joints are labelled: LSP's PCK scores them
    points = joints[3] - 1
    low, high = points.min(axis=0), points.max(axis=0)
    np.testing.assert_allclose(truth.boxes[1], [*(low + 0.5), *(high - low)])  # no margin
    same = read_lsp_ground_truth(root / "joints.mat", 14, images=(3, 4))
    np.testing.assert_array_equal(same.joints, truth.joints)
    assert len(read_lsp_ground_truth(root / "joints.mat", 14)) == 4
    assert ground_truth_reference(root / "joints.mat", None) == root / "joints.mat"


def test_extended_images_have_five_digits(tmp_path):
    joints = np.random.default_rng(1).integers(5, 40, size=(3, 14, 2)).astype(np.float64)
    path = write_joints_mat(tmp_path / "joints.mat", joints, np.ones((3, 14)), "extended")
    write_images(tmp_path / "images", range(1, 4), digits=5)
    records = read_lsp_people(path, tmp_path / "images", 14, images=(2, 3))
    assert [Path(r.image_path).name for r in records] == ["im00002.jpg", "im00003.jpg"]
    assert (records[0].keypoints[0, :, 2] == 2).all()


def test_an_image_without_two_distinct_joints_gives_no_crop(tmp_path, caplog):
    joints = np.full((2, 14, 2), 10.0)
    joints[1] = np.random.default_rng(2).integers(5, 40, size=(14, 2))
    path = write_joints_mat(tmp_path / "joints.mat", joints, np.zeros((2, 14)), "original")
    write_images(tmp_path / "images", (1, 2), digits=4)
    records = read_lsp_people(path, tmp_path / "images", 14)
    assert [r.image_id for r in records] == [2]
    assert "1 image(s) without two distinct labelled joints" in caplog.text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            {"joints": np.zeros((3, 13, 5))},
            r"'joints' has shape \[3, 13, 5\], expected \(3, 14, N\)",
        ),
        ({"joints": np.zeros((14, 2, 5))}, r"'joints' has shape \[14, 2, 5\]"),
        ({"joints": np.zeros((3, 14))}, r"'joints' has shape \[3, 14\]"),
        ({"points": np.zeros((3, 14, 5))}, r"no 'joints' array"),
    ],
)
def test_bad_arrays_are_named(tmp_path, content, message):
    path = tmp_path / "joints.mat"
    savemat(str(path), content)
    with pytest.raises(DataError, match=rf"joints\.mat: {message}"):
        read_lsp_joints(path)


def test_bad_files_and_ranges_are_named(lsp_root, tmp_path):
    root, joints, _ = lsp_root
    mat = root / "joints.mat"
    with pytest.raises(DataError, match=r"layout=extended expects .* \(the original layout\)"):
        read_lsp_joints(mat, layout="extended")
    not_mat = tmp_path / "joints.json"
    not_mat.write_text("[]")
    with pytest.raises(DataError, match=r"joints\.json: not a readable Matlab \.mat file"):
        read_lsp_joints(not_mat)
    with pytest.raises(DataError, match=r"file not found: .*absent\.mat"):
        read_lsp_joints(tmp_path / "absent.mat")
    (root / "images" / "im0003.jpg").unlink()
    with pytest.raises(DataError, match=r"joints\.mat: 1 image file\(s\) missing, e\.g\. .*im0003"):
        read_lsp_people(mat, root / "images", 14, images=(3, 4))
    with pytest.raises(DataError, match=r"image range 3-5 is not within the file's images 1-4"):
        read_lsp_ground_truth(mat, 14, images=(3, 5))
    with pytest.raises(DataError, match=r"must read '#images=FIRST-LAST'"):
        read_lsp_ground_truth(f"{mat}#images=3", 14)
    flag = np.zeros((4, 14))
    flag[2, 5] = 0.5
    write_joints_mat(mat, joints, flag, "original")
    with pytest.raises(DataError, match=r"joints\.mat: image 3, joint 5: visibility flag 0\.5"):
        read_lsp_joints(mat)
    with pytest.raises(DataError, match=r"layout must be one of original, extended"):
        LspDataset(str(root), layout="lspet").prepare()


def test_data_lsp_serves_crops_and_selects_its_protocol(lsp_root):
    """`data=lsp` selects skeleton=lsp14 and metric=pck (torso); the val crops hold the joints
    where the affine puts them, and the metric's ground truth is the val range."""
    root, _, _ = lsp_root
    overrides = [
        "data=lsp",
        f"data.root={root}",
        "data.dataset.train_images=[1,2]",
        "data.dataset.val_images=[3,4]",
        "data.num_workers=0",
        "data.val_batch_size=2",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    assert cfg.skeleton.name == "lsp14" and cfg.metric.reference == "torso"
    assert cfg.metric.primary == "PCK" and cfg.optimized_metric == "val/PCK"
    datamodule = instantiate(cfg.data)
    assert datamodule.val_annotations == Path(f"{root / 'joints.mat'}#images=3-4")
    metric = instantiate(cfg.metric)(
        ground_truth=datamodule.val_annotations, skeleton=datamodule.skeleton
    )
    assert metric.ground_truth().image_ids.tolist() == [3, 4]
    datamodule.setup("fit")
    assert len(datamodule.train_set) == len(datamodule.val_set) == 2
    batch = next(iter(datamodule.val_dataloader()))
    assert sorted(batch["annotation_id"].tolist()) == [3, 4]
    records = datamodule.val_set.records
    for index in range(2):
        record = records[int(batch["sample_id"][index])]
        affine = batch["affine"][index].double().numpy()
        expected = record.keypoints[0, :, :2].astype(np.float64) @ affine[:, :2].T + affine[:, 2]
        np.testing.assert_allclose(batch["keypoints"][index, 0].numpy(), expected, atol=1e-3)
