"""An embedded, deterministic synthetic MPII Human Pose dataset (``data=synthetic_mpii``).

Written as the real benchmark's files are, in the layout `posesuite.data.sources.mpii`'s
`MpiiDataset` reads (and then read by it):

* ``annotations/mpii_train.json`` and ``mpii_val.json``, the common json form: one entry per
  person, ``{image, center, scale, joints (16, 2), joints_vis (16)}`` in Matlab's 1-based pixel
  coordinates, ``scale`` = the person's height / 200 px; unlabelled joints are ``[-1, -1]`` with
  ``joints_vis`` 0;
* ``annotations/mpii_gt_val.mat``, the evaluation's ground truth for the val people in the val
  json's order: ``pos_gt_src`` (16, 2, N), ``jnt_missing`` (16, N), ``headboxes_src`` (2, 2, N:
  the head box's corners), ``dataset_joints``, 1-based;
* ``images/``: both splits' images in one folder, with MPII's 9-digit names (train first).

Scenes are the synthetic COCO generator's (`posesuite.data.sources.synthetic`): backgrounds,
1 to ``max_people`` figures, each its own json entry, foreground occluders, camera effects.
MPII's 16 joints come from the same figure model: the limb joints as COCO's, ``pelvis`` the
midpoint of the hips, ``thorax`` the base of the neck (the top of the sternum), ``upper_neck``
where the neck meets the head, ``head_top`` the top of the head ellipsoid. A joint is labelled
when it is in the image: MPII annotates occluded joints where they are, not those out of frame.
A figure is annotated when at least ``MIN_LABELLED_JOINTS`` of its joints are labelled and
``MIN_VISIBLE_FRACTION`` of its pixels are in sight (MPII annotates the people one can make out).

The head box is the head's projected extent (the bounding box of the ellipsoid's outline),
grown to reach the upper neck, as MPII's boxes span the head from its top to the neck. A
person's height is the larger side of the box around its joints and head box (so a lying
person's crop holds it too); ``center`` is that box's middle raised by 15 px per unit of
scale, so that the reference top-down code's 15 px shift down (`mpii.person_box`) brings the
crop back onto the middle of the person. For a standing person the centre then sits on the
torso, as MPII's do.

Every random draw comes from ``numpy.random.default_rng((seed, image index))``, so the same
spec gives byte-identical files. The dataset lives in ``root/<spec digest>/``, generated
atomically (`posesuite.data.sources.synthetic.generate_once`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from posesuite.data.sources.mpii import (
    CENTER_SHIFT,
    MAT_JOINT_NAMES,
    PIXEL_STD,
    MpiiDataset,
    MpiiSplit,
)
from posesuite.data.sources.synthetic import (
    GENERATOR_VERSION,
    SyntheticSpec,
    _Figure,
    _render_scene,
    _with_neck_and_head_top,
    generate_once,
    write_mat,
)
from posesuite.skeleton import load_skeleton

# Part of the cache key: bump whenever the generated data change, so old caches are not reused.
MPII_VERSION = 1
MIN_LABELLED_JOINTS = 4
MIN_VISIBLE_FRACTION = 0.25
# The figure model's names of the points MPII names otherwise.
_FIGURE_POINTS = {"thorax": "neck_base", "upper_neck": "neck_top"}


@dataclass(frozen=True)
class SyntheticMpiiSpec:
    """What to generate; every field is part of the cache key (see `SyntheticSpec` for the
    scene fields, which it checks)."""

    num_train_images: int = 500
    num_val_images: int = 100
    image_width: int = 320
    image_height: int = 256
    min_people: int = 1
    max_people: int = 3
    # Person heights as fractions of the image height, drawn uniformly.
    min_stature: float = 0.3
    max_stature: float = 0.9
    # Body yaw ~ N(0, yaw_sd) degrees, or any view (None): as data=synthetic, mostly frontal
    # views, since from behind a figure's left and right are ambiguous at these sizes.
    yaw_sd: float | None = 40.0
    train_seed: int = 0
    val_seed: int = 1
    jpeg_quality: int = 92

    def __post_init__(self) -> None:
        self.scene()

    def scene(self) -> SyntheticSpec:
        """The synthetic COCO scene spec the images are drawn from."""
        return SyntheticSpec(**asdict(self), stature_sampling="uniform")

    def digest(self) -> str:
        """Short hash of the spec and the generator versions: the cache folder's name."""
        versions = {"generator_version": GENERATOR_VERSION, "mpii_version": MPII_VERSION}
        key = json.dumps({**versions, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:12]


def ensure_synthetic_mpii(root: str | Path, spec: SyntheticMpiiSpec = SyntheticMpiiSpec()) -> Path:
    """The dataset's folder, ``root/<spec digest>/``, generated unless it is already there."""
    folder = Path(root).expanduser() / spec.digest()
    if not folder.is_dir():
        generate_once(folder, lambda staging: _generate(staging, spec), "synthetic MPII")
    dataset = MpiiDataset(str(folder))
    train, val = dataset.prepare()
    missing = [str(p) for p in (train.people, val.people, val.head_boxes) if not p.is_file()]
    if missing:
        raise RuntimeError(
            f"synthetic MPII at {folder} is incomplete (missing {', '.join(missing)});"
            " delete that folder to regenerate it"
        )
    return folder


@dataclass(frozen=True)
class _Annotation:
    image: str
    joints: np.ndarray  # (16, 2) 0-based
    labelled: np.ndarray  # (16,) bool
    head_box: np.ndarray  # (2, 2) corners, 0-based
    center: np.ndarray  # (2,) 0-based
    scale: float


def _generate(folder: Path, spec: SyntheticMpiiSpec) -> str:
    """Write the dataset into ``folder``; returns a one-line summary."""
    names = load_skeleton("mpii16").keypoints
    points = [_FIGURE_POINTS.get(name, name) for name in names]
    (folder / "annotations").mkdir(parents=True)
    (folder / "images").mkdir()
    scene_spec = spec.scene()
    splits = {}
    image_id = 0
    for split, seed, count in (
        ("train", spec.train_seed, spec.num_train_images),
        ("val", spec.val_seed, spec.num_val_images),
    ):
        people = []
        for index in range(count):
            image_id += 1
            name = f"{image_id:09d}.jpg"
            rng = np.random.default_rng((seed, index))
            scene = _render_scene(rng, scene_spec, points, extend=_with_neck_and_head_top)
            ok, encoded = cv2.imencode(
                ".jpg", scene.image, [cv2.IMWRITE_JPEG_QUALITY, spec.jpeg_quality]
            )
            if not ok:
                raise RuntimeError(f"JPEG encoding failed for synthetic image {name}")
            (folder / "images" / name).write_bytes(encoded.tobytes())
            for person in scene.people:
                labelled = person.keypoints[:, 2] > 0
                if labelled.sum() >= MIN_LABELLED_JOINTS and (
                    person.visible_fraction >= MIN_VISIBLE_FRACTION
                ):
                    people.append(_annotate(name, person.keypoints, person.figure, points))
        if not people:
            raise ValueError(
                f"none of the {count} synthetic MPII {split} images has an annotated person: "
                "ask for more images"
            )
        splits[split] = people
        _write_json(folder / "annotations" / f"mpii_{split}.json", people)
    _write_gt_mat(folder / "annotations" / "mpii_gt_val.mat", splits["val"])
    return (
        f"{spec.num_train_images} train images ({len(splits['train'])} people),"
        f" {spec.num_val_images} val images ({len(splits['val'])} people)"
    )


def _annotate(image: str, keypoints: np.ndarray, figure: _Figure, points: list[str]) -> _Annotation:
    """A person's entry; ``points`` name its joints' figure points, in the skeleton's order."""
    head_box = _head_box(figure)
    # Every joint where it is, in the frame or not: the person's extent.
    extent = np.concatenate([[figure.points[point] for point in points], head_box])
    low, high = extent.min(axis=0), extent.max(axis=0)
    scale = round(float(np.max(high - low)) / PIXEL_STD, 4)
    center = (low + high) / 2 - [0.0, CENTER_SHIFT * scale]
    return _Annotation(image, keypoints[:, :2], keypoints[:, 2] > 0, head_box, center, scale)


def _one_based(pixels: np.ndarray) -> np.ndarray:
    """Matlab's 1-based coordinates, to 0.01 px, the same values in the json and the .mat."""
    return np.round(pixels + 1.0, 2)


def _head_box(figure: _Figure) -> np.ndarray:
    """(2, 2) corners around the head's outline and the upper neck, in pixels."""
    rotation = figure.articulation.head
    radii = np.array(figure.build.head_radii) * figure.stature
    # The outline of the ellipsoid R diag(r^2) R^T reaches sqrt(sum_j R_ij^2 r_j^2) along axis i.
    half = np.sqrt((rotation[:2] ** 2) @ radii**2)
    centre, neck = figure.points["head"], figure.points["neck_top"]
    return np.stack([np.minimum(centre - half, neck), np.maximum(centre + half, neck)])


def _write_json(path: Path, people: list[_Annotation]) -> None:
    entries = [
        {
            "image": person.image,
            "center": _one_based(person.center).tolist(),
            "scale": person.scale,
            "joints": np.where(person.labelled[:, None], _one_based(person.joints), -1.0).tolist(),
            "joints_vis": person.labelled.astype(int).tolist(),
        }
        for person in people
    ]
    path.write_text(json.dumps(entries, separators=(",", ":")))


def _write_gt_mat(path: Path, people: list[_Annotation]) -> None:
    joints = np.stack([np.where(p.labelled[:, None], _one_based(p.joints), 0.0) for p in people])
    write_mat(
        path,
        {
            "pos_gt_src": joints.transpose(1, 2, 0),  # (16, 2, N)
            "jnt_missing": np.stack([~p.labelled for p in people]).T.astype(np.uint8),
            "headboxes_src": np.stack([_one_based(p.head_box) for p in people]).transpose(1, 2, 0),
            "dataset_joints": np.array([[np.array([n]) for n in MAT_JOINT_NAMES]], dtype=object),
        },
    )


class SyntheticMpiiDataset:
    """``data=synthetic_mpii``: the dataset description the datamodule asks to ``prepare()``.

    ``root`` is the cache folder (``data.root``); the other arguments are `SyntheticMpiiSpec`'s.
    """

    def __init__(self, root: str | Path, **spec: Any) -> None:
        self.root = Path(root)
        self.spec = SyntheticMpiiSpec(**spec)

    def prepare(self) -> tuple[MpiiSplit, MpiiSplit]:
        return MpiiDataset(str(ensure_synthetic_mpii(self.root, self.spec))).prepare()
