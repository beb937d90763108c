"""MPII Human Pose reader: the common json form and the ground-truth ``.mat`` of the evaluation.

Two file forms are read:

- the common json form (a list of ``{image, center, scale, joints, joints_vis}``, one entry per
  person; ``scale`` is the person's height / 200 px), which gives the person crops and can serve
  as ground truth (without head boxes);
- the evaluation's ground-truth ``.mat`` (``mpii_gt_val.mat``: ``pos_gt_src`` (16, 2, N),
  ``jnt_missing`` (16, N), ``headboxes_src`` (2, 2, N), optionally ``dataset_joints``), whose
  person n is entry n of the validation json. It holds no image names, so it gives the metric its
  ground truth (with the head boxes PCKh is normalised by), not crops.

Coordinates: both files are in Matlab's 1-based pixel coordinates; everything read here is
converted to posesuite's 0-based convention (pixel centres at integer coordinates) by
subtracting 1, so the top-left pixel's centre is (0, 0).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from posesuite.data.records import DataError, PersonRecord
from posesuite.data.sources.matlab import read_mat

# The benchmark's joint order, as the .mat files name it (`dataset_joints`).
MAT_JOINT_NAMES = (
    "rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thor",
    "neck", "head", "rwri", "relb", "rsho", "lsho", "lelb", "lwri",
)  # fmt: skip
# ``scale`` is in units of 200 px (the person height the annotation tool normalised to).
PIXEL_STD = 200.0
# The reference top-down code (mmpose's MpiiDataset, as HRNet's before it) moves the centre down
# by 15 px per unit of scale "to avoid cropping limbs": MPII's centres sit high on the body.
CENTER_SHIFT = 15.0


@dataclass(frozen=True)
class MpiiGroundTruth:
    """The ground truth of N people in 0-based pixel coordinates, in file order (person n is
    annotation id n). ``head_boxes`` (N, 2, 2) holds each head box's two corners, [corner, xy];
    None where the file has none (the json form)."""

    path: Path
    joints: np.ndarray  # (N, K, 2), zeros where unlabelled
    labelled: np.ndarray  # (N, K) bool
    head_boxes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.joints)


@dataclass(frozen=True)
class _JsonPerson:
    image: str
    center: np.ndarray  # (2,) 0-based
    scale: float
    joints: np.ndarray  # (K, 2) 0-based, zeros where unlabelled
    labelled: np.ndarray  # (K,) bool


def _read_json_people(path: Path, num_keypoints: int) -> list[_JsonPerson]:
    try:
        with path.open() as handle:
            entries = json.load(handle)
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: malformed JSON ({err})") from None
    if not isinstance(entries, list):
        raise DataError(
            f"{path}: expected a list of MPII people ({{image, center, scale, joints, "
            f"joints_vis}}), got a JSON {type(entries).__name__}"
        )
    return [_parse_person(entry, index, path, num_keypoints) for index, entry in enumerate(entries)]


def _parse_person(entry: Any, index: int, path: Path, num_keypoints: int) -> _JsonPerson:
    image = entry.get("image") if isinstance(entry, dict) else None
    where = f"{path}: person #{index} (image {image!r})"
    if not isinstance(image, str) or not image:
        raise DataError(f"{where}: needs an 'image' file name")
    try:
        center = np.asarray(entry["center"], dtype=np.float64)
        scale = float(entry["scale"])
        joints = np.asarray(entry["joints"], dtype=np.float64)
        visible = np.asarray(entry["joints_vis"], dtype=np.float64)
    except KeyError as err:
        raise DataError(f"{where}: missing key {err}") from None
    except (TypeError, ValueError) as err:
        raise DataError(
            f"{where}: center, scale, joints and joints_vis must be numbers ({err})"
        ) from None
    if center.shape != (2,) or not np.isfinite(center).all():
        raise DataError(f"{where}: center must be [x, y], got {entry['center']!r}")
    if not np.isfinite(scale) or scale <= 0:
        raise DataError(f"{where}: scale must be a positive number, got {entry['scale']!r}")
    if joints.shape != (num_keypoints, 2) or visible.shape != (num_keypoints,):
        raise DataError(
            f"{where}: joints {list(joints.shape)} and joints_vis {list(visible.shape)}, "
            f"expected [{num_keypoints}, 2] and [{num_keypoints}]"
        )
    labelled = visible > 0
    if not np.isfinite(joints[labelled]).all():
        raise DataError(f"{where}: a labelled joint has a non-finite coordinate")
    return _JsonPerson(
        image=image,
        center=center - 1.0,
        scale=scale,
        joints=np.where(labelled[:, None], joints - 1.0, 0.0),
        labelled=labelled,
    )


def image_id_of(name: str, where: str) -> int:
    """MPII's image ids: the digits of the file name (``005808361.jpg`` -> 5808361)."""
    digits = re.sub(r"\D", "", Path(name).stem)
    if not digits:
        raise DataError(f"{where}: no digits in the image name {name!r} to take the image id from")
    return int(digits)


def person_box(center: np.ndarray, scale: float) -> np.ndarray:
    """The [x, y, w, h] box of a person from MPII's 0-based ``center`` and ``scale``.

    As the reference top-down code (mmpose's MpiiDataset): the centre moves down by 15 px per
    unit of scale and the box is a square of side 200 x scale; the crop's padding (x1.25,
    ``TopDownTransform``) and aspect ratio are applied later, as for every dataset. The box is
    placed so that `posesuite.data.geometry.box_to_center_scale` (centre = x + w / 2 - 0.5)
    gives back that centre exactly; it is not clipped to the image (the reference code
    does not clip it either, and the image size is not in the file).
    """
    side = PIXEL_STD * scale
    cx, cy = center[0], center[1] + CENTER_SHIFT * scale
    return np.array([cx - side / 2 + 0.5, cy - side / 2 + 0.5, side, side], dtype=np.float64)


def read_mpii_people(
    ann_file: str | Path, image_dir: str | Path, num_keypoints: int
) -> list[PersonRecord]:
    """One record per person of a json-form file that has a labelled joint; ``annotation_id`` is
    the person's index in the file (what the ground truth is indexed by), ``keypoints`` flag
    labelled joints 2 and the others 0 (the json does not say which are occluded)."""
    ann_file, image_dir = Path(ann_file), Path(image_dir)
    people = _read_json_people(ann_file, num_keypoints)
    missing = sorted({p.image for p in people if not (image_dir / p.image).is_file()})
    if missing:
        shown = ", ".join(str(image_dir / name) for name in missing[:5])
        raise DataError(f"{ann_file}: {len(missing)} image file(s) missing, e.g. {shown}")
    records = []
    for index, person in enumerate(people):
        if not person.labelled.any():
            continue
        keypoints = np.concatenate(
            [person.joints, np.where(person.labelled, 2.0, 0.0)[:, None]], axis=1
        ).astype(np.float32)
        box = person_box(person.center, person.scale)
        records.append(
            PersonRecord(
                image_id=image_id_of(person.image, f"{ann_file}: person #{index}"),
                frames=(str(image_dir / person.image),),
                bbox=box,
                keypoints=keypoints,
                annotation_id=index,
                area=float(box[2] * box[3]),
            )
        )
    if not records:
        reason = f"{len(people)} people, none with a labelled joint" if people else "no people"
        raise DataError(f"{ann_file}: no usable people: {reason}")
    return records


def read_mpii_ground_truth(path: str | Path, num_keypoints: int = 16) -> MpiiGroundTruth:
    """The ground truth of a json-form file (no head boxes), of the evaluation's ``.mat``, or of
    a split of MPII's official release file (`posesuite.data.sources.mpii_release`)."""
    # Imported here: mpii_release builds on this module.
    from posesuite.data.sources.mpii_release import is_mpii_release, read_mpii_release_ground_truth

    path = Path(path)
    if is_mpii_release(path):  # the release .mat, or a split of it (``...mat#subset=val&...``)
        return read_mpii_release_ground_truth(path, num_keypoints)
    if path.suffix.lower() == ".mat":
        return _read_gt_mat(path, num_keypoints)
    people = _read_json_people(path, num_keypoints)
    if not people:
        raise DataError(f"{path}: no people")
    return MpiiGroundTruth(
        path=path,
        joints=np.stack([p.joints for p in people]),
        labelled=np.stack([p.labelled for p in people]),
    )


def _read_gt_mat(path: Path, num_keypoints: int) -> MpiiGroundTruth:
    content = read_mat(path)
    missing = [k for k in ("pos_gt_src", "jnt_missing", "headboxes_src") if k not in content]
    if missing:
        raise DataError(
            f"{path}: lacks {', '.join(missing)} (the layout of MPII's mpii_gt_val.mat: "
            "pos_gt_src (16, 2, N), jnt_missing (16, N), headboxes_src (2, 2, N))"
        )
    joints = np.asarray(content["pos_gt_src"], dtype=np.float64)
    missing_flags = np.asarray(content["jnt_missing"])
    head_boxes = np.asarray(content["headboxes_src"], dtype=np.float64)
    count = joints.shape[-1] if joints.ndim == 3 else -1
    if (
        joints.shape != (num_keypoints, 2, count)
        or missing_flags.shape != (num_keypoints, count)
        or head_boxes.shape != (2, 2, count)
    ):
        raise DataError(
            f"{path}: pos_gt_src {list(joints.shape)}, jnt_missing {list(missing_flags.shape)}, "
            f"headboxes_src {list(head_boxes.shape)}: expected [{num_keypoints}, 2, N], "
            f"[{num_keypoints}, N] and [2, 2, N]"
        )
    if "dataset_joints" in content and num_keypoints == len(MAT_JOINT_NAMES):
        names = tuple(str(np.ravel(n)[0]) for n in np.ravel(content["dataset_joints"]))
        if names != MAT_JOINT_NAMES:
            raise DataError(
                f"{path}: dataset_joints {list(names)} is not MPII's joint order "
                f"{list(MAT_JOINT_NAMES)}"
            )
    joints = joints.transpose(2, 0, 1)  # (N, K, 2)
    labelled = missing_flags.T == 0
    head_boxes = head_boxes.transpose(2, 0, 1) - 1.0  # (N, corner, xy)
    bad_joint = labelled & ~np.isfinite(joints).all(axis=2)
    if bad_joint.any():
        person, joint = np.argwhere(bad_joint)[0]
        raise DataError(f"{path}: person #{person}: labelled joint {joint} is not finite")
    bad_box = ~np.isfinite(head_boxes).all(axis=(1, 2))
    if bad_box.any():
        raise DataError(f"{path}: person #{np.flatnonzero(bad_box)[0]}: head box is not finite")
    return MpiiGroundTruth(
        path=path,
        joints=np.where(labelled[..., None], joints - 1.0, 0.0),
        labelled=labelled,
        head_boxes=head_boxes,
    )


@dataclass(frozen=True)
class MpiiSplit:
    """One split of MPII (`posesuite.data.records.Split`): crops from the json-form ``people``
    file; the metric's ground truth (``annotations``) is the ``head_boxes`` .mat when given
    (the official PCKh needs its head boxes), else the json file itself."""

    people: Path
    images: Path
    head_boxes: Path | None = None
    detections: Path | None = None

    @property
    def annotations(self) -> Path:
        return self.head_boxes if self.head_boxes is not None else self.people

    def read_people(self, num_keypoints: int) -> list[PersonRecord]:
        return read_mpii_people(self.people, self.images, num_keypoints)


@dataclass(frozen=True)
class MpiiDataset:
    """MPII laid out as the reference top-down code has it (``data=mpii data.root=/path``):
    ``annotations/mpii_{train,val}.json``, ``annotations/mpii_gt_val.mat``, ``images/``.

    Paths are relative to ``root`` unless absolute; ``val_head_boxes`` None evaluates against
    the val json, which has no head boxes (only ``metric.head_size=joints`` can score it).
    """

    root: str
    train_annotations: str = "annotations/mpii_train.json"
    train_images: str = "images"
    val_annotations: str = "annotations/mpii_val.json"
    val_images: str = "images"
    val_head_boxes: str | None = "annotations/mpii_gt_val.mat"

    def prepare(self) -> tuple[MpiiSplit, MpiiSplit]:
        root = Path(self.root).expanduser()

        def path(p: str) -> Path:
            return Path(p) if Path(p).is_absolute() else root / p

        return (
            MpiiSplit(path(self.train_annotations), path(self.train_images)),
            MpiiSplit(
                path(self.val_annotations),
                path(self.val_images),
                None if self.val_head_boxes is None else path(self.val_head_boxes),
            ),
        )
