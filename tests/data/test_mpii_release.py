"""MPII's official annotation file (`posesuite.data.sources.mpii_release`): a tiny RELEASE struct
in the real file's shapes, read into the json form's records (1-based -> 0-based, the reference
boxes, visibility flags, ids), its ground truth with head boxes (PCKh 100 when fed back), the
train/val hold-out, bad files named; and `data=mpii_release`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from scipy.io import loadmat, savemat

import posesuite.config  # noqa: F401  (resolvers)
from posesuite.data.records import DataError
from posesuite.data.sources.mpii import person_box, read_mpii_people
from posesuite.data.sources.mpii_release import (
    RELEASE_NAME,
    HoldOut,
    MpiiReleaseDataset,
    is_held_out,
    is_mpii_release,
    parse_release_reference,
    read_mpii_release,
    read_mpii_release_ground_truth,
    release_reference,
)
from posesuite.metrics.pck import PCKhMetric, evaluate_pckh
from posesuite.paths import CONF_DIR
from posesuite.skeleton import load_skeleton

MPII = load_skeleton("mpii16")
EMPTY = np.zeros((0, 0))  # Matlab's [], as the real file stores a field one element lacks
TRAIN_NAMES = [f"{n:09d}.jpg" for n in range(5, 13)]


def _point(joint: int, x: float, y: float, visible: Any = 1) -> dict[str, Any]:
    return {"id": joint, "x": float(x), "y": float(y), "is_visible": visible}


def _person(center: tuple[float, float], scale: float, points: list[dict] | None) -> dict:
    person = {"x1": center[0] - 10, "y1": center[1] - 40, "x2": center[0] + 10}
    person |= {"y2": center[1] - 15, "scale": scale, "objpos": {"x": center[0], "y": center[1]}}
    if points is not None:
        person["annopoints"] = points
    return person


def _images() -> tuple[list[dict], list[int]]:
    """The tiny release (1-based, as the file): names, people and img_train."""
    one = _person((40, 50), 1.5, [
        _point(0, 30, 90, 1), _point(1, 31, 80, 0), _point(2, 32, 70, "1"),
        _point(3, 33, 71, "0"), _point(8, 35, 45, EMPTY), _point(9, 36, 15, 1),
    ])  # fmt: skip
    images = [
        {"name": "000000011.jpg", "people": [one]},
        {
            "name": "000000022.jpg",
            "people": [
                _person((60, 40), 1.0, [_point(12, 60, 30, 1)]),  # one point: a 1 x 1 struct
                _person((90, 45), 2.0, [_point(6, 90, 60, 0), _point(7, 91, 40, 1)]),
                _person((20, 30), 1.2, None),  # not annotated for pose
            ],
        },
        # A test image: its people have only a position (no head box, no annopoints fields).
        {"name": "000000033.jpg", "people": [{"scale": 2.5, "objpos": {"x": 70.0, "y": 80.0}}]},
        {"name": "000000044.jpg", "people": []},
        {"name": "000000045.jpg", "people": [{"annopoints": [_point(9, 5, 5)], "scale": EMPTY}]},
    ]
    for number, name in enumerate(TRAIN_NAMES):
        images.append(
            {"name": name, "people": [_person((30 + number, 40), 1.1, [_point(9, 30, 9)])]}
        )
    return images, [1, 1, 0, 1, 1] + [1] * len(TRAIN_NAMES)


def _struct_array(items: list[dict]) -> np.ndarray:
    """A 1 x n Matlab struct array holding every item's fields, [] where an item lacks one."""
    fields = list(dict.fromkeys(field for item in items for field in item))
    array = np.empty((1, len(items)), dtype=[(field, object) for field in fields])
    for index, item in enumerate(items):
        for field in fields:
            array[0, index][field] = item.get(field, EMPTY)
    return array


def _person_struct(person: dict) -> dict:
    person = dict(person)
    if "annopoints" in person:
        person["annopoints"] = {"point": _struct_array(person["annopoints"])}
    return person


def write_release(path: Path, images: list[dict], img_train: list[int]) -> Path:
    """The release struct as MPII's file has it (savemat writes dicts as 1 x 1 structs)."""
    annolist = _struct_array(
        [
            {
                "image": {"name": image["name"]},
                "annorect": _struct_array([_person_struct(p) for p in image["people"]])
                if image["people"]
                else EMPTY,
                "frame_sec": 12.0,
                "vididx": 3.0,
            }
            for image in images
        ]
    )
    single_person = np.empty((len(images), 1), dtype=object)
    for index, image in enumerate(images):
        single_person[index, 0] = np.array([[1.0]]) if len(image["people"]) == 1 else EMPTY
    release = {
        "annolist": annolist,
        "img_train": np.array([img_train], dtype=np.uint8),
        "single_person": single_person,
        "video_list": np.array([["abc"]], dtype=object),
    }
    savemat(str(path), {"RELEASE": release})
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """data.root laid out as `MpiiReleaseDataset` expects: annotations/<release> and images/."""
    images, train = _images()
    (tmp_path / "annotations").mkdir()
    (tmp_path / "images").mkdir()
    write_release(tmp_path / "annotations" / RELEASE_NAME, images, train)
    for image in images:
        cv2.imwrite(str(tmp_path / "images" / image["name"]), np.zeros((8, 8, 3), np.uint8))
    return tmp_path


def _release(root: Path) -> Path:
    return root / "annotations" / RELEASE_NAME


def test_the_tiny_file_has_the_real_files_shapes(root):
    """Read without squeezing, the struct nests as MPII's file does: annolist (1, N), annorect
    (1, P) or [] (0, 0), annopoints (1, 1), point (1, J), is_visible (1, 1), a string or []."""
    release = loadmat(str(_release(root)))["RELEASE"]
    assert release.shape == (1, 1)
    annolist = release["annolist"][0, 0]
    assert annolist.shape == (1, 13) and release["img_train"][0, 0].shape == (1, 13)
    assert release["single_person"][0, 0].shape == (13, 1)
    assert annolist["annorect"][0, 1].shape == (1, 3) and annolist["annorect"][0, 3].shape == (0, 0)
    assert "annopoints" not in annolist["annorect"][0, 2].dtype.names  # a test image's people
    rect = annolist["annorect"][0, 0][0, 0]
    assert rect["annopoints"].shape == (1, 1) and rect["objpos"].shape == (1, 1)
    points = rect["annopoints"][0, 0]["point"]
    assert points.shape == (1, 6)
    visible = [points[0, j]["is_visible"] for j in range(6)]
    assert visible[0].shape == (1, 1) and visible[2].tolist() == ["1"] and visible[4].size == 0
    assert annolist["annorect"][0, 1][0, 0]["annopoints"][0, 0]["point"].shape == (1, 1)


def test_train_records_are_0_based_with_flags_boxes_and_ids(root):
    images, _ = _images()
    records = read_mpii_release(_release(root), root / "images")
    # People with joints and a position, in file order: the test image's, the unannotated
    # person and the one without a scale give none.
    expected = [images[0]["people"][0], *images[1]["people"][:2]]
    expected += [image["people"][0] for image in images[5:]]
    assert [r.annotation_id for r in records] == list(range(len(expected)))
    assert [r.image_id for r in records[:4]] == [11, 22, 22, 5]
    assert records[0].image_path == str(root / "images" / "000000011.jpg")
    for record, person in zip(records, expected, strict=True):
        center = np.array([person["objpos"]["x"], person["objpos"]["y"]]) - 1
        np.testing.assert_allclose(record.bbox, person_box(center, person["scale"]))
        assert record.area == pytest.approx(record.bbox[2] * record.bbox[3])
        keypoints = record.keypoints[0]
        listed = [point["id"] for point in person["annopoints"]]
        for point in person["annopoints"]:
            np.testing.assert_allclose(keypoints[point["id"], :2], [point["x"] - 1, point["y"] - 1])
        unlisted = np.setdiff1d(np.arange(16), listed)
        assert (keypoints[unlisted] == 0).all()
    # is_visible 1 and '1' -> 2, 0 and '0' -> 1 (occluded), [] -> 2, not listed -> 0.
    assert records[0].keypoints[0, [0, 1, 2, 3, 8, 9, 4], 2].tolist() == [2, 1, 2, 1, 2, 2, 0]
    assert records[2].keypoints[0, [6, 7], 2].tolist() == [1, 2]


def test_ground_truth_is_the_records_people_with_head_boxes(root):
    records = read_mpii_release(_release(root), root / "images")
    truth = read_mpii_release_ground_truth(_release(root))
    assert len(truth) == len(records)
    assert truth.path == release_reference(_release(root), "train")
    for record in records:
        keypoints = record.keypoints[0]
        np.testing.assert_allclose(truth.joints[record.annotation_id], keypoints[:, :2])
        assert (truth.labelled[record.annotation_id] == (keypoints[:, 2] > 0)).all()
    person = _images()[0][0]["people"][0]
    corners = [[person["x1"] - 1, person["y1"] - 1], [person["x2"] - 1, person["y2"] - 1]]
    np.testing.assert_allclose(truth.head_boxes[0], corners)


def test_ground_truth_fed_back_scores_pckh_100(root):
    hold_out = HoldOut(0.5, seed=0)
    records = read_mpii_release(_release(root), root / "images", subset="val", hold_out=hold_out)
    truth = read_mpii_release_ground_truth(_release(root), subset="val", hold_out=hold_out)
    values, counts = evaluate_pckh(
        truth,
        np.stack([r.keypoints[0] for r in records]),
        np.array([r.annotation_id for r in records]),
        np.ones(len(records)),
        MPII,
    )
    assert counts.labelled.sum() > 0
    assert values["PCKh"] == 100.0 and values["Head"] == 100.0, values


def test_test_subset_gives_crops_without_joints_and_no_ground_truth(root):
    (record,) = read_mpii_release(_release(root), root / "images", subset="test")
    assert record.image_id == 33 and record.annotation_id == 0
    assert (record.keypoints == 0).all()
    np.testing.assert_allclose(record.bbox, person_box(np.array([69.0, 79.0]), 2.5))
    with pytest.raises(DataError, match="withholds the test images' joints"):
        read_mpii_release_ground_truth(_release(root), subset="test")


def _names(records) -> list[str]:
    return [Path(r.image_path).name for r in records]


def test_the_seeded_hold_out_is_deterministic_whole_images_and_disjoint(root):
    hold_out = HoldOut(0.5, seed=0)

    def split(subset: str) -> list[str]:
        return _names(read_mpii_release(_release(root), root / "images", 16, subset, hold_out))

    train, val = split("train"), split("val")
    assert train and val and not set(train) & set(val)
    everyone = _names(read_mpii_release(_release(root), root / "images"))
    assert sorted(train + val) == sorted(everyone)
    side = train if "000000022.jpg" in train else val
    assert side.count("000000022.jpg") == 2  # both people of the image, on one side
    assert set(val) == {name for name in everyone if is_held_out(name, 0.5, 0)}
    assert split("val") == val and split("train") == train
    other = HoldOut(0.5, seed=1)
    assert _names(read_mpii_release(_release(root), root / "images", 16, "val", other)) != val


def test_a_val_list_holds_out_the_images_it_names(root):
    listed = root / "val_images.txt"
    listed.write_text("000000022.jpg\n\n000000007.jpg\n")
    hold_out = HoldOut(images=listed)
    val = read_mpii_release(_release(root), root / "images", subset="val", hold_out=hold_out)
    assert _names(val) == ["000000022.jpg", "000000022.jpg", "000000007.jpg"]
    train = read_mpii_release(_release(root), root / "images", subset="train", hold_out=hold_out)
    assert not {"000000022.jpg", "000000007.jpg"} & set(_names(train))
    listed.write_text("000000033.jpg\n")
    with pytest.raises(DataError, match=r"val_images.txt: 1 listed image\(s\) are not training"):
        read_mpii_release(_release(root), root / "images", subset="val", hold_out=hold_out)


def test_the_dataset_splits_and_their_ground_truth_reference(root):
    train, val = MpiiReleaseDataset(str(root), val_fraction=0.5).prepare()
    assert val.annotations == release_reference(_release(root), "val", HoldOut(0.5))
    assert str(val.annotations).endswith("#subset=val&val_fraction=0.5&val_seed=0")
    assert parse_release_reference(val.annotations) == (_release(root), "val", HoldOut(0.5))
    records = val.read_people(16)
    truth = read_mpii_release_ground_truth(val.annotations)
    assert len(truth) == len(records) and truth.path == val.annotations
    assert [r.annotation_id for r in records] == list(range(len(records)))
    assert not set(_names(records)) & set(_names(train.read_people(16)))
    # A val list's path survives pathlib (its slashes are encoded).
    _, listed = MpiiReleaseDataset(str(root), val_images="lists//val.txt").prepare()
    file, subset, hold_out = parse_release_reference(Path(str(listed.annotations)))
    assert (file, subset, hold_out) == (
        _release(root),
        "val",
        HoldOut(images=root / "lists/val.txt"),
    )


def test_the_release_is_told_from_other_ground_truth(root, tmp_path):
    assert is_mpii_release(_release(root)) and is_mpii_release(f"{_release(root)}#subset=val")
    savemat(str(tmp_path / "mpii_gt_val.mat"), {"pos_gt_src": np.zeros((16, 2, 1))})
    assert not is_mpii_release(tmp_path / "mpii_gt_val.mat")
    (tmp_path / "mpii_val.json").write_text("[]")
    assert not is_mpii_release(tmp_path / "mpii_val.json")
    (tmp_path / "broken.mat").write_bytes(b"not a mat file")
    assert not is_mpii_release(tmp_path / "broken.mat")


def _set(image: int, person: int, key: str, value: Any) -> Callable[[list[dict]], None]:
    def change(images: list[dict]) -> None:
        images[image]["people"][person][key] = value

    return change


def _set_point(point: int, key: str, value: Any) -> Callable[[list[dict]], None]:
    def change(images: list[dict]) -> None:
        images[0]["people"][0]["annopoints"][point][key] = value

    return change


PERSON_0 = r"annolist\[0\] \(000000011\.jpg\), annorect\[0\]"
JOINT_0, JOINT_3 = PERSON_0 + ", joint id 0", PERSON_0 + ", joint id 3"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set_point(3, "x", np.array([[1.0, 2.0]])), JOINT_3 + ": x must be one number, got 2"),
        (_set_point(3, "y", EMPTY), JOINT_3 + ": needs a finite x and y"),
        (_set_point(0, "id", 16), PERSON_0 + ": joint id 16 is not one of MPII's 0-15"),
        (_set_point(0, "is_visible", "2"), JOINT_0 + ": is_visible must be 0, 1 or empty, got 2"),
        (_set_point(1, "id", 0), JOINT_0 + ": annotated twice"),
        (_set(0, 0, "scale", 0.0), PERSON_0 + r": objpos \(40, 50\) must be finite and scale \(0"),
        (_set(0, 0, "objpos", 5.0), PERSON_0 + ": objpos must be a struct with x and y"),
        (_set(0, 0, "scale", "big"), PERSON_0 + ": scale must be a number, got 'big'"),
        (lambda images: images[1].update(name=""), r"annolist\[1\]: needs image.name"),
    ],
)
def test_bad_people_are_named(root, tmp_path, change, message):
    images, train = _images()
    change(images)
    path = write_release(tmp_path / "bad.mat", images, train)
    with pytest.raises(DataError, match=message):
        read_mpii_release(path, root / "images")


def test_bad_files_are_named(root, tmp_path):
    images, train = _images()
    with pytest.raises(DataError, match=r"file not found: .*absent\.mat"):
        read_mpii_release(tmp_path / "absent.mat", root / "images")
    (tmp_path / "text.mat").write_text("not a mat file")
    with pytest.raises(DataError, match=r"text\.mat: not a readable Matlab \.mat file"):
        read_mpii_release(tmp_path / "text.mat", root / "images")
    savemat(str(tmp_path / "other.mat"), {"joints": np.zeros((3, 14, 2))})
    with pytest.raises(DataError, match=r"other\.mat: no RELEASE struct .* the file holds joints"):
        read_mpii_release(tmp_path / "other.mat", root / "images")
    path = write_release(tmp_path / "short.mat", images, train[:-1])
    with pytest.raises(DataError, match=r"annolist has 13 images and img_train 12 flags"):
        read_mpii_release(path, root / "images")
    path = write_release(tmp_path / "flag.mat", images, [2, *train[1:]])
    with pytest.raises(DataError, match=r"annolist\[0\]: img_train is 2, not 1 \(train\)"):
        read_mpii_release(path, root / "images")
    with pytest.raises(DataError, match=r"subset must be one of train, val, test, got 'dev'"):
        read_mpii_release(_release(root), root / "images", subset="dev")
    with pytest.raises(DataError, match=r"subset val is held out of the training images"):
        read_mpii_release(_release(root), root / "images", subset="val")
    with pytest.raises(DataError, match=r"annotates MPII's 16 joints .*, not 17"):
        read_mpii_release(_release(root), root / "images", 17)
    with pytest.raises(DataError, match=r"a split of the release reads '#subset=SUBSET'"):
        read_mpii_release_ground_truth(f"{_release(root)}#subset=val&fraction=0.1")
    with pytest.raises(DataError, match=r"val fraction must lie in \(0, 1\), got 1.5"):
        HoldOut(1.5)


def test_missing_images_and_head_boxes_are_named(root, tmp_path):
    (root / "images" / "000000022.jpg").unlink()
    with pytest.raises(DataError, match=r"1 image file\(s\) missing, e.g. .*000000022\.jpg"):
        read_mpii_release(_release(root), root / "images")
    images, train = _images()
    del images[0]["people"][0]["x1"]
    path = write_release(tmp_path / "headless.mat", images, train)
    with pytest.raises(DataError, match=PERSON_0 + r": PCKh needs the head box"):
        read_mpii_release_ground_truth(path)


def test_real_people_read_as_the_json_form_reads_them(real_data_dir, tmp_path):
    """The json form's entries written as a release (objpos = center, scale, the labelled joints
    as visible points) give the json reader's records."""
    mpii_dir = real_data_dir / "mpii"
    entries = json.loads((mpii_dir / "test_mpii.json").read_text())
    images = []
    for entry in entries:
        points = [
            _point(joint, x, y)
            for joint, ((x, y), labelled) in enumerate(
                zip(entry["joints"], entry["joints_vis"], strict=True)
            )
            if labelled
        ]
        center = (entry["center"][0], entry["center"][1])
        images.append({"name": entry["image"], "people": [_person(center, entry["scale"], points)]})
    path = write_release(tmp_path / RELEASE_NAME, images, [1] * len(images))
    records = read_mpii_release(path, mpii_dir)
    expected = read_mpii_people(mpii_dir / "test_mpii.json", mpii_dir, 16)
    for record, json_record in zip(records, expected, strict=True):
        assert (record.image_id, record.annotation_id) == (
            json_record.image_id,
            json_record.annotation_id,
        )
        assert record.image_path == json_record.image_path
        np.testing.assert_allclose(record.bbox, json_record.bbox)
        np.testing.assert_array_equal(record.keypoints, json_record.keypoints)


def test_data_mpii_release_serves_the_held_out_split(root):
    overrides = [
        "data=mpii_release",
        "skeleton=mpii16",
        "metric=pckh",
        f"data.root={root}",
        "data.dataset.val_fraction=0.5",
        "data.num_workers=0",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    assert cfg.metric.primary == "PCKh" and cfg.skeleton.name == "mpii16"
    datamodule = instantiate(cfg.data)
    assert datamodule.val_annotations == release_reference(_release(root), "val", HoldOut(0.5))
    datamodule.setup("fit")
    train, val = datamodule.train_set.records, datamodule.val_set.records
    assert len(train) + len(val) == len(read_mpii_release(_release(root), root / "images"))
    assert sorted(r.annotation_id for r in val) == list(range(len(val)))


def test_the_pckh_metric_reads_the_val_splits_ground_truth(root):
    """The metric gets the split's reference as the module gives it (``val_annotations``) and
    reads exactly the val people, through `read_mpii_ground_truth`'s dispatch."""
    _, val = MpiiReleaseDataset(str(root), val_fraction=0.5).prepare()
    metric = PCKhMetric(ground_truth=val.annotations, skeleton=load_skeleton("mpii16"))
    truth = metric.ground_truth()
    records = val.read_people(16)
    assert len(truth) == len(records) > 0
    assert sorted(r.annotation_id for r in records) == list(range(len(truth)))
    np.testing.assert_allclose(
        truth.joints[[r.annotation_id for r in records]],
        np.stack([np.where(r.keypoints[0, :, 2:] > 0, r.keypoints[0, :, :2], 0) for r in records]),
    )
