"""An embedded, deterministic synthetic COCO person-keypoints dataset.

The suite's default dataset when no real data is at hand. It is written to disk as a real COCO
person-keypoints dataset (images, ``person_keypoints_{train,val}.json`` and detector-style
``person_detections_{train,val}.json``) and read by the same reader as real COCO. The training
split's detections are what training on detector boxes and PGPG's fit read.

How an image is made:

* Background: a random gradient, low-frequency colour noise, random shapes and lines, and
  limb-like distractor strokes (coloured like skin and clothes).
* 1 to ``max_people`` figures. Each is a small 3D kinematic model (pelvis, spine, neck, head,
  arms, legs, hands, feet) with human limb-length ratios and per-person build variation, posed
  from a family (standing, walking, running, arms raised, pointing/waving, sitting, crouching,
  kneeling, random) with joint-angle limits (elbows and knees only bend one way), seen from any
  yaw (front, side and back views foreshorten shoulder and hip width naturally), with a little
  camera pitch, whole-body lean and a few lying figures; then projected orthographically.
* Stature is log-uniform between 10% and 90% of the image height. Compared with uniform sizes this
  still gives many small people, while compared with real COCO (dominated by tiny people) it is
  weighted towards medium and large ones, which keeps the set learnable from 2000 images.
* Parts are painted far to near, each figure into its own part-rank map. The head is a ray-cast
  ellipsoid with hair on its back and top and a face (eyes, nose, mouth, ears) only where those
  face the camera, and the shirt has a neckline only on the front: these cues tell front from
  back, and left from right then follows from the geometry, as with real people. Left and right
  limbs share their colours on purpose: a shade cue would flip meaning under horizontal-flip
  augmentation. Farther parts are shaded a little darker, and parts carry thin outlines, so an
  arm in front of the torso stays visible. Clothes are solid, striped, checked or noisy.
* Figures are composited in depth order (smaller figures are usually farther away); some images
  get a foreground occluder; then brightness/contrast jitter and, on some images, blur and noise.

Annotations follow COCO: keypoints outside the image are stored as ``0, 0, 0``; a keypoint covered
by a nearer figure or occluder, or hidden by its own figure (a part painted over it, the far
shoulder or hip in a side view, the far eye, an ear facing away), gets ``v=1`` with its true
location; otherwise ``v=2``. Coordinates put pixel centres on integers. ``bbox``, ``area`` and the
RLE ``segmentation`` describe each figure's visible mask. Figures with fewer than
``MIN_VISIBLE_AREA`` visible pixels are not annotated at all (a person almost entirely hidden is
not a labelable person); every other figure is, even when ``num_keypoints`` is 0, as in COCO.

The detections file simulates a detector: jittered true boxes with scores that rise with size,
visibility and box quality; some near-duplicates with lower scores; boxes on part of a person
(upper or lower body, one side: IoU < 0.5 with its box, so box NMS keeps them) with scores close
to the person's, the redundant detections pose NMS exists for; false positives on clutter and at
random; and misses, mostly of small or heavily occluded people.

Every random draw comes from ``numpy.random.default_rng((seed, image index))``, so the same spec
gives byte-identical files. The dataset lives in ``root/<spec digest>/``; generation happens in a
temporary sibling folder that is renamed into place when complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from posesuite.data.sources.coco import CocoSplit
from posesuite.skeleton import load_skeleton

log = logging.getLogger(__name__)

# Part of the cache key: bump whenever the generated data change, so old caches are not reused.
GENERATOR_VERSION = 3
# Figures with fewer visible pixels than this are left unannotated.
MIN_VISIBLE_AREA = 16

STATURE_SAMPLING = ("log_uniform", "uniform")

_EMPTY = 255  # rank / label map value of unpainted pixels
_OCCLUDER = 254  # label map value of foreground occluders
_SHIFT = 4  # cv2 fixed-point bits: draw at 1/16 px so small figures keep sub-pixel geometry
_FIXED = 1 << _SHIFT
_MAT_DESCRIPTION_BYTES = 116  # the text at the start of a MAT-file's 128-byte header


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate; every field is part of the cache key."""

    num_train_images: int = 2000
    num_val_images: int = 200
    image_width: int = 320
    image_height: int = 256
    min_people: int = 1
    max_people: int = 4
    # Person heights as fractions of the image height, drawn uniformly or log-uniformly.
    min_stature: float = 0.1
    max_stature: float = 0.9
    stature_sampling: str = "log_uniform"
    # Body yaw: uniform over the full turn (None), or this standard deviation in degrees around
    # facing the camera (photographs favour frontal views; side and back views stay possible).
    yaw_sd: float | None = None
    train_seed: int = 0
    val_seed: int = 1  # train and val use different seeds
    jpeg_quality: int = 92

    def __post_init__(self) -> None:
        if self.num_train_images < 1 or self.num_val_images < 1:
            raise ValueError("the synthetic dataset needs at least one train and one val image")
        if self.image_width < 32 or self.image_height < 32:
            raise ValueError("synthetic images must be at least 32x32 pixels")
        if not 1 <= self.min_people <= self.max_people:
            raise ValueError("need 1 <= min_people <= max_people")
        if not 0 < self.min_stature <= self.max_stature <= 1.5:
            raise ValueError("need 0 < min_stature <= max_stature <= 1.5 (fractions of height)")
        if self.stature_sampling not in STATURE_SAMPLING:
            raise ValueError(
                f"stature_sampling must be one of {STATURE_SAMPLING}, got {self.stature_sampling!r}"
            )
        if self.yaw_sd is not None and not self.yaw_sd > 0:
            raise ValueError("yaw_sd must be > 0 degrees, or None for any view")
        if self.max_people >= _OCCLUDER:
            raise ValueError(f"max_people must be below {_OCCLUDER}")
        if self.train_seed == self.val_seed:
            raise ValueError("train_seed and val_seed must differ, or val would repeat train")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("jpeg_quality must be in 1..100")

    def digest(self) -> str:
        """Short hash of the spec and the generator version: the cache folder's name."""
        key = json.dumps({"generator_version": GENERATOR_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class SyntheticPaths:
    """Where the files of one generated synthetic dataset are."""

    root: Path
    train_images: Path
    val_images: Path
    train_annotations: Path
    val_annotations: Path
    val_detections: Path
    train_detections: Path

    @classmethod
    def under(cls, root: Path) -> SyntheticPaths:
        annotations = root / "annotations"
        return cls(
            root=root,
            train_images=root / "train",
            val_images=root / "val",
            train_annotations=annotations / "person_keypoints_train.json",
            val_annotations=annotations / "person_keypoints_val.json",
            val_detections=annotations / "person_detections_val.json",
            train_detections=annotations / "person_detections_train.json",
        )

    def annotation_files(self) -> tuple[Path, ...]:
        return (
            self.train_annotations,
            self.val_annotations,
            self.val_detections,
            self.train_detections,
        )


def ensure_synthetic_coco(
    root: str | Path, spec: SyntheticSpec = SyntheticSpec()
) -> SyntheticPaths:
    """Generate the dataset under ``root/<spec digest>/`` unless it is already there
    (`generate_once`)."""
    root = Path(root).expanduser()
    paths = SyntheticPaths.under(root / spec.digest())
    if not paths.root.is_dir():
        generate_once(
            paths.root,
            lambda staging: _generate(SyntheticPaths.under(staging), spec),
            "synthetic COCO keypoints",
        )
    _check_complete(paths)
    return paths


def generate_once(target: Path, write: Callable[[Path], str], what: str) -> None:
    """Make the folder ``target`` with ``write(folder)``, which fills a folder and returns a
    one-line summary.

    Safe against interruption and concurrent callers: data are written to a temporary sibling
    folder that is renamed into place only when complete, and the first complete copy wins.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    os.chmod(staging, 0o755)  # mkdtemp makes it private; the dataset is not
    started = time.perf_counter()
    try:
        summary = write(staging)
        try:
            os.replace(staging, target)
        except OSError:
            if not target.is_dir():
                raise
            log.info("%s at %s was completed by another process", what, target)
        else:
            elapsed = time.perf_counter() - started
            log.info("generated %s at %s: %s in %.1f s", what, target, summary, elapsed)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_mat(path: Path, fields: dict[str, Any]) -> None:
    """A Matlab .mat file (scipy.io.savemat) whose bytes depend on ``fields`` only: savemat
    writes the time of writing into the header's description, which this replaces."""
    from scipy.io import savemat  # only the generators that write .mat files need scipy

    buffer = io.BytesIO()
    savemat(buffer, fields)
    description = b"MATLAB 5.0 MAT-file, written by posesuite's synthetic data generator"
    data = buffer.getvalue()
    path.write_bytes(
        description.ljust(_MAT_DESCRIPTION_BYTES, b" ") + data[_MAT_DESCRIPTION_BYTES:]
    )


def _check_complete(paths: SyntheticPaths) -> None:
    missing = [str(p) for p in paths.annotation_files() if not p.is_file()]
    if missing:
        raise RuntimeError(
            f"synthetic dataset at {paths.root} is incomplete (missing {', '.join(missing)});"
            " delete that folder to regenerate it"
        )


# --------------------------------------------------------------------------------------------
# Writing the dataset


def _generate(paths: SyntheticPaths, spec: SyntheticSpec) -> str:
    """Write the dataset into ``paths``; returns a one-line summary."""
    skeleton = load_skeleton("coco17")
    unknown = set(skeleton.keypoints) - set(_KEYPOINT_OWNERS)
    if unknown:
        raise ValueError(f"the synthetic figure model has no keypoints {sorted(unknown)}")
    categories = [
        {
            "id": 1,
            "name": "person",
            "supercategory": "person",
            "keypoints": list(skeleton.keypoints),
            "skeleton": [[a + 1, b + 1] for a, b in skeleton.limbs],
        }
    ]
    for folder in (paths.train_images, paths.val_images, paths.train_annotations.parent):
        folder.mkdir(parents=True)

    names = skeleton.keypoints
    train = _write_split(
        paths.train_images, spec, spec.train_seed, spec.num_train_images, names, True
    )
    val = _write_split(paths.val_images, spec, spec.val_seed, spec.num_val_images, names, True)
    for split, annotation_file in ((train, paths.train_annotations), (val, paths.val_annotations)):
        dataset = {
            "info": {
                "description": "posesuite synthetic person keypoints",
                "version": str(GENERATOR_VERSION),
                "spec": asdict(spec),
            },
            "licenses": [],
            "images": split.images,
            "annotations": split.annotations,
            "categories": categories,
        }
        _write_json(annotation_file, dataset)
    _write_json(paths.val_detections, val.detections)
    _write_json(paths.train_detections, train.detections)
    return (
        f"{len(train.images)} train images ({len(train.annotations)} people,"
        f" {len(train.detections)} detections),"
        f" {len(val.images)} val images ({len(val.annotations)} people,"
        f" {len(val.detections)} detections)"
    )


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, separators=(",", ":")))


@dataclass
class _Split:
    images: list[dict] = field(default_factory=list)
    annotations: list[dict] = field(default_factory=list)
    detections: list[dict] = field(default_factory=list)


def _write_split(
    image_dir: Path,
    spec: SyntheticSpec,
    seed: int,
    count: int,
    keypoint_names: Sequence[str],
    with_detections: bool = False,
) -> _Split:
    """Render and write one split's images; returns its COCO entries."""
    split = _Split()
    for index in range(count):
        image_id = index + 1
        file_name = f"{image_id:06d}.jpg"
        scene = _render_scene(np.random.default_rng((seed, index)), spec, keypoint_names)
        ok, encoded = cv2.imencode(
            ".jpg", scene.image, [cv2.IMWRITE_JPEG_QUALITY, spec.jpeg_quality]
        )
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for synthetic image {file_name}")
        (image_dir / file_name).write_bytes(encoded.tobytes())
        split.images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "width": spec.image_width,
                "height": spec.image_height,
            }
        )
        for person in scene.people:
            split.annotations.append(
                {
                    "id": len(split.annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "iscrowd": 0,
                    "bbox": person.bbox,
                    "area": person.area,
                    "segmentation": person.segmentation,
                    "keypoints": [
                        value
                        for x, y, v in person.keypoints
                        for value in (round(float(x), 2), round(float(y), 2), int(v))
                    ],
                    "num_keypoints": int((person.keypoints[:, 2] > 0).sum()),
                }
            )
        if with_detections:
            # A stream of its own, so detections never change the images.
            detection_rng = np.random.default_rng((seed, index, 1))
            split.detections.extend(_simulate_detections(detection_rng, image_id, scene, spec))
    return split


# --------------------------------------------------------------------------------------------
# Figure model: proportions, pose, articulation


def _side_owners(side: str) -> dict[str, tuple[str, ...]]:
    return {
        f"{side}_shoulder": ("torso", f"{side}_upper_arm"),
        f"{side}_elbow": (f"{side}_upper_arm", f"{side}_forearm"),
        f"{side}_wrist": (f"{side}_forearm", f"{side}_hand"),
        f"{side}_hip": ("torso", f"{side}_thigh"),
        f"{side}_knee": (f"{side}_thigh", f"{side}_shin"),
        f"{side}_ankle": (f"{side}_shin", f"{side}_foot"),
    }


# The painted parts a keypoint lies on: it is hidden by its own figure when a part painted after
# all of these covers it.
_KEYPOINT_OWNERS: dict[str, tuple[str, ...]] = {
    **{name: ("head",) for name in ("nose", "left_eye", "right_eye", "left_ear", "right_ear")},
    **_side_owners("left"),
    **_side_owners("right"),
    # Trunk and head points of other keypoint sets (Penn Action's head, MPII's pelvis, thorax,
    # upper neck and head top; `_with_neck_and_head_top` adds the last two to a figure).
    "head": ("head",),
    "head_top": ("head",),
    "neck_top": ("neck", "head"),
    "neck_base": ("neck", "torso"),
    "pelvis": ("torso", "left_thigh", "right_thigh"),
}


@dataclass(frozen=True)
class _Build:
    """Body proportions in units of stature (standing height)."""

    torso: float  # hip centre to shoulder centre
    neck: float
    shoulder_half_width: float
    hip_half_width: float
    upper_arm: float
    forearm: float
    hand: float
    thigh: float
    shin: float
    foot: float
    girth: float  # scales limb and torso thickness
    head_radii: tuple[float, float, float]  # lateral, vertical, front-back


def _sample_build(rng: np.random.Generator) -> _Build:
    def vary(value: float, spread: float = 0.04) -> float:
        return value * _clamp(rng.normal(1.0, spread), 1 - 2 * spread, 1 + 2 * spread)

    arm, leg, head = vary(1.0, 0.03), vary(1.0, 0.03), vary(1.0, 0.05)
    return _Build(
        torso=vary(0.295),
        neck=vary(0.05, 0.1),
        shoulder_half_width=vary(0.105, 0.06),
        hip_half_width=vary(0.08, 0.06),
        upper_arm=arm * vary(0.175, 0.02),
        forearm=arm * vary(0.15, 0.02),
        hand=vary(0.06),
        thigh=leg * vary(0.24, 0.02),
        shin=leg * vary(0.235, 0.02),
        foot=vary(0.13),
        girth=float(rng.uniform(0.85, 1.15)),
        head_radii=(head * 0.05, head * 0.066, head * 0.058),
    )


@dataclass(frozen=True)
class _Limb:
    """Angles in degrees: flexion swings the limb forward, abduction outward, rotation turns it
    about its own axis (positive: inward), bend is the elbow or knee angle (one way only)."""

    flexion: float = 0.0
    abduction: float = 0.0
    rotation: float = 0.0
    bend: float = 0.0


# (low, high) per angle.
_ARM_LIMITS = {
    "flexion": (-50, 180),
    "abduction": (-10, 170),
    "rotation": (-90, 80),
    "bend": (0, 150),
}
_LEG_LIMITS = {
    "flexion": (-30, 125),
    "abduction": (-15, 45),
    "rotation": (-30, 35),
    "bend": (0, 150),
}


@dataclass(frozen=True)
class _Pose:
    """Joint angles in degrees; limbs are keyed by side ("left", "right")."""

    arms: dict[str, _Limb]
    legs: dict[str, _Limb]
    torso_pitch: float = 0.0  # forward bend
    torso_roll: float = 0.0
    torso_twist: float = 0.0
    head_yaw: float = 0.0
    head_pitch: float = 0.0  # looking down
    head_roll: float = 0.0


_SIDES = ("left", "right")
_SIDE_SIGN = {"left": 1.0, "right": -1.0}


def _limb(rng: np.random.Generator, **ranges: tuple[float, float]) -> _Limb:
    return _Limb(**{name: float(rng.uniform(*span)) for name, span in ranges.items()})


def _hanging_arm(rng: np.random.Generator) -> _Limb:
    if rng.random() < 0.15:  # hand on hip
        return _limb(rng, flexion=(-15, 10), abduction=(35, 55), rotation=(55, 80), bend=(95, 130))
    return _limb(rng, flexion=(-15, 30), abduction=(4, 25), rotation=(0, 45), bend=(0, 40))


def _standing_leg(rng: np.random.Generator) -> _Limb:
    return _limb(rng, flexion=(-6, 12), abduction=(0, 10), rotation=(-10, 15), bend=(0, 12))


def _gait(rng: np.random.Generator, running: bool) -> _Pose:
    phase = rng.uniform(0, 2 * math.pi)
    swing = rng.uniform(30, 55) if running else rng.uniform(12, 30)
    legs, arms = {}, {}
    for side in _SIDES:
        flexion = _SIDE_SIGN[side] * swing * math.sin(phase)
        if running:
            knee = rng.uniform(50, 110) if flexion > 0 else rng.uniform(15, 100)
            elbow = rng.uniform(70, 110)
        else:
            knee = rng.uniform(5, 40) if flexion > 0 else rng.uniform(0, 15)
            elbow = rng.uniform(5, 40)
        legs[side] = _Limb(flexion, rng.uniform(0, 8), rng.uniform(-5, 10), knee)
        # Arms swing against the legs.
        arms[side] = _Limb(-1.1 * flexion, rng.uniform(5, 20), rng.uniform(10, 45), elbow)
    return _Pose(
        arms,
        legs,
        torso_pitch=rng.uniform(5, 20) if running else rng.uniform(0, 6),
        torso_twist=-0.2 * swing * math.sin(phase),
    )


def _pose_standing(rng: np.random.Generator) -> _Pose:
    return _Pose(
        {side: _hanging_arm(rng) for side in _SIDES}, {side: _standing_leg(rng) for side in _SIDES}
    )


def _pose_walking(rng: np.random.Generator) -> _Pose:
    return _gait(rng, running=False)


def _pose_running(rng: np.random.Generator) -> _Pose:
    return _gait(rng, running=True)


def _pose_arms_raised(rng: np.random.Generator) -> _Pose:
    arms = {}
    for side in _SIDES:
        if rng.random() < 0.3:
            arms[side] = _hanging_arm(rng)
        elif rng.random() < 0.5:  # forward and up
            arms[side] = _limb(
                rng, flexion=(120, 178), abduction=(0, 30), rotation=(-20, 30), bend=(0, 60)
            )
        else:  # sideways and up
            arms[side] = _limb(
                rng, flexion=(-10, 30), abduction=(95, 168), rotation=(-30, 20), bend=(0, 60)
            )
    return _Pose(arms, {side: _standing_leg(rng) for side in _SIDES})


def _pose_gesturing(rng: np.random.Generator) -> _Pose:
    active = _SIDES[int(rng.integers(2))]
    arms = {side: _hanging_arm(rng) for side in _SIDES}
    if rng.random() < 0.5:  # pointing
        arms[active] = _limb(rng, flexion=(50, 100), abduction=(0, 70), bend=(0, 25))
    else:  # waving: upper arm out to the side, forearm turned up
        arms[active] = _limb(
            rng, flexion=(-10, 30), abduction=(70, 110), rotation=(-90, -55), bend=(60, 120)
        )
    return _Pose(arms, {side: _standing_leg(rng) for side in _SIDES})


def _pose_sitting(rng: np.random.Generator) -> _Pose:
    legs = {
        side: _limb(rng, flexion=(70, 100), abduction=(0, 20), rotation=(-10, 15), bend=(65, 110))
        for side in _SIDES
    }
    arms = {
        side: _limb(rng, flexion=(5, 50), abduction=(0, 20), rotation=(10, 60), bend=(30, 95))
        for side in _SIDES
    }
    return _Pose(arms, legs, torso_pitch=rng.uniform(-10, 20))


def _pose_crouching(rng: np.random.Generator) -> _Pose:
    legs = {
        side: _limb(rng, flexion=(90, 125), abduction=(8, 30), rotation=(-5, 20), bend=(105, 145))
        for side in _SIDES
    }
    arms = {
        side: _limb(rng, flexion=(15, 75), abduction=(0, 25), rotation=(0, 50), bend=(15, 95))
        for side in _SIDES
    }
    return _Pose(arms, legs, torso_pitch=rng.uniform(15, 50))


def _pose_kneeling(rng: np.random.Generator) -> _Pose:
    front = _SIDES[int(rng.integers(2))]
    legs = {
        side: _limb(rng, flexion=(70, 100), abduction=(0, 15), bend=(75, 100))
        if side == front
        else _limb(rng, flexion=(-15, 10), abduction=(0, 15), bend=(80, 115))
        for side in _SIDES
    }
    return _Pose({side: _hanging_arm(rng) for side in _SIDES}, legs)


def _pose_anywhere(rng: np.random.Generator) -> _Pose:
    return _Pose(
        {side: _limb(rng, **_ARM_LIMITS) for side in _SIDES},
        {side: _limb(rng, **_LEG_LIMITS) for side in _SIDES},
        torso_pitch=rng.uniform(-15, 45),
    )


_POSE_FAMILIES: tuple[tuple[Callable[[np.random.Generator], _Pose], float], ...] = (
    (_pose_standing, 0.22),
    (_pose_walking, 0.18),
    (_pose_running, 0.10),
    (_pose_arms_raised, 0.10),
    (_pose_gesturing, 0.08),
    (_pose_sitting, 0.10),
    (_pose_crouching, 0.08),
    (_pose_kneeling, 0.05),
    (_pose_anywhere, 0.09),
)


def _sample_pose(rng: np.random.Generator) -> _Pose:
    """A pose from a family, jittered and clipped to the joint limits."""
    weights = np.array([weight for _, weight in _POSE_FAMILIES])
    family = _POSE_FAMILIES[int(rng.choice(len(weights), p=weights / weights.sum()))][0]
    pose = family(rng)

    def jitter(limb: _Limb, limits: dict[str, tuple[float, float]]) -> _Limb:
        return _Limb(
            **{
                name: _clamp(value + rng.normal(0, 4), *limits[name])
                for name, value in asdict(limb).items()
            }
        )

    def around(value: float, spread: float, low: float, high: float) -> float:
        return _clamp(value + rng.normal(0, spread), low, high)

    return _Pose(
        arms={side: jitter(limb, _ARM_LIMITS) for side, limb in pose.arms.items()},
        legs={side: jitter(limb, _LEG_LIMITS) for side, limb in pose.legs.items()},
        torso_pitch=around(pose.torso_pitch, 4, -20, 60),
        torso_roll=around(pose.torso_roll, 5, -25, 25),
        torso_twist=around(pose.torso_twist, 8, -35, 35),
        head_yaw=around(pose.head_yaw, 22, -70, 70),
        head_pitch=around(pose.head_pitch, 10, -30, 40),
        head_roll=around(pose.head_roll, 6, -25, 25),
    )


def _clamp(value: float, low: float, high: float) -> float:
    return float(min(max(value, low), high))


def _rot_x(degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_y(degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_z(degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _unit(vector: Sequence[float]) -> np.ndarray:
    array = np.asarray(vector, dtype=np.float64)
    return array / np.linalg.norm(array)


# Face points in head axes, in units of the head radii (unit vectors lie on the head's surface).
_FACE_POINTS: dict[str, np.ndarray] = {
    "left_eye": _unit([0.38, 0.12, 0.92]),
    "right_eye": _unit([-0.38, 0.12, 0.92]),
    "left_ear": _unit([1.0, -0.05, -0.08]),
    "right_ear": _unit([-1.0, -0.05, -0.08]),
    "nose": np.array([0.0, -0.18, 1.12]),  # the tip stands off the head
    "mouth": _unit([0.0, -0.5, 0.87]),
}
# A face point shows when the camera-facing component of its surface normal exceeds this.
_FACING_THRESHOLD = {"eye": 0.15, "ear": -0.3, "nose": -0.35, "mouth": 0.2}
# Shoulders and hips hide behind the torso once its side turns about 45 degrees away.
_TORSO_SIDE_THRESHOLD = -0.7


@dataclass(frozen=True)
class _Articulation:
    """A posed figure in camera space, in units of stature.

    Camera axes: x to the image right, y up, z towards the camera. Body axes: x to the person's
    left, y up, z forward, so a figure facing the camera has its left side on the image right.
    """

    points: dict[str, np.ndarray]
    pelvis: np.ndarray  # body-to-camera rotations
    chest: np.ndarray
    head: np.ndarray


_DOWN = np.array([0.0, -1.0, 0.0])


def _articulate(build: _Build, pose: _Pose, body: np.ndarray) -> _Articulation:
    pelvis = body
    chest = pelvis @ _rot_x(pose.torso_pitch) @ _rot_z(pose.torso_roll) @ _rot_y(pose.torso_twist)
    head = chest @ _rot_y(pose.head_yaw) @ _rot_x(pose.head_pitch) @ _rot_z(pose.head_roll)
    head_radii = np.array(build.head_radii)
    neck_base = chest @ np.array([0.0, build.torso, 0.0])
    neck_top = neck_base + chest @ np.array([0.0, build.neck, 0.0])
    head_centre = neck_top + head @ np.array([0.0, head_radii[1], 0.12 * head_radii[2]])
    points = {"pelvis": np.zeros(3), "neck_base": neck_base, "head": head_centre}
    for name, local in _FACE_POINTS.items():
        points[name] = head_centre + head @ (local * head_radii)
    for side in _SIDES:
        sign = _SIDE_SIGN[side]
        arm, leg = pose.arms[side], pose.legs[side]
        shoulder = neck_base + chest @ np.array([sign * build.shoulder_half_width, -0.02, -0.01])
        upper_arm = (
            chest
            @ _rot_z(sign * arm.abduction)
            @ _rot_x(-arm.flexion)
            @ _rot_y(-sign * arm.rotation)
        )
        forearm = upper_arm @ _rot_x(-arm.bend)  # elbows bend forward
        elbow = shoulder + upper_arm @ _DOWN * build.upper_arm
        wrist = elbow + forearm @ _DOWN * build.forearm
        hip = pelvis @ np.array([sign * build.hip_half_width, 0.0, 0.0])
        thigh = (
            pelvis
            @ _rot_z(sign * leg.abduction)
            @ _rot_x(-leg.flexion)
            @ _rot_y(-sign * leg.rotation)
        )
        shin = thigh @ _rot_x(leg.bend)  # knees bend backward
        knee = hip + thigh @ _DOWN * build.thigh
        ankle = knee + shin @ _DOWN * build.shin
        toward_toes = shin @ _unit([0.0, -0.2, 1.0])
        points.update(
            {
                f"{side}_shoulder": shoulder,
                f"{side}_elbow": elbow,
                f"{side}_wrist": wrist,
                f"{side}_hand_tip": wrist + forearm @ _DOWN * build.hand,
                f"{side}_hip": hip,
                f"{side}_knee": knee,
                f"{side}_ankle": ankle,
                f"{side}_heel": ankle - toward_toes * 0.2 * build.foot,
                f"{side}_toe": ankle + toward_toes * 0.8 * build.foot,
            }
        )
    return _Articulation(points, pelvis, chest, head)


# --------------------------------------------------------------------------------------------
# Appearance

_SKIN_TONES = np.array(  # BGR
    [
        [196, 224, 255],
        [125, 194, 241],
        [105, 172, 224],
        [66, 134, 198],
        [36, 85, 141],
        [31, 56, 92],
        [148, 205, 255],
        [134, 192, 234],
    ],
    dtype=np.float64,
)
_HAIR_COLOURS = np.array(  # BGR
    [[20, 20, 20], [25, 40, 60], [40, 75, 110], [100, 160, 190], [30, 60, 140], [170, 170, 170]],
    dtype=np.float64,
)
_TEXTURES = ("solid", "stripes", "checks", "noise")
_TEXTURE_WEIGHTS = (0.45, 0.25, 0.15, 0.15)


def _luma(bgr: np.ndarray) -> float:
    return float(0.114 * bgr[0] + 0.587 * bgr[1] + 0.299 * bgr[2])


@dataclass(frozen=True)
class _Texture:
    kind: str
    period: float  # in units of stature
    angle: float  # radians
    contrast: float  # brightness of the pattern's dark half


@dataclass(frozen=True)
class _Outfit:
    skin: np.ndarray
    hair: np.ndarray
    shirt: np.ndarray
    trousers: np.ndarray
    shoes: np.ndarray
    textures: dict[str, _Texture]  # by garment
    long_sleeves: bool
    long_trousers: bool
    hair_back: float  # head-axes normal z below this is hair (back of the head)
    hair_top: float  # head-axes normal y above this is hair (top of the head)


def _sample_outfit(rng: np.random.Generator) -> _Outfit:
    skin = np.clip(_SKIN_TONES[rng.integers(len(_SKIN_TONES))] * rng.uniform(0.9, 1.08), 0, 255)
    hair = _HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))] * rng.uniform(0.8, 1.2)
    if abs(_luma(hair) - _luma(skin)) < 50:  # hair must stand out: it marks the back of the head
        hair = hair * 0.35 if _luma(skin) > 110 else hair * 1.8 + 60
    textures = {
        garment: _Texture(
            kind=_TEXTURES[rng.choice(len(_TEXTURES), p=_TEXTURE_WEIGHTS)],
            period=float(rng.uniform(0.025, 0.08)),
            angle=float(rng.uniform(0, math.pi)),
            contrast=float(rng.uniform(0.45, 0.8)),
        )
        for garment in ("shirt", "trousers")
    }
    return _Outfit(
        skin=skin,
        hair=np.clip(hair, 0, 255),
        shirt=rng.uniform(15, 240, 3),
        trousers=rng.uniform(15, 240, 3),
        shoes=rng.uniform(10, 120, 3),
        textures=textures,
        long_sleeves=bool(rng.random() < 0.5),
        long_trousers=bool(rng.random() < 0.7),
        hair_back=float(rng.uniform(-0.2, 0.15)),
        hair_top=float(rng.uniform(0.4, 0.7)),
    )


def _texture_factor(
    rng: np.random.Generator, texture: _Texture, rows: np.ndarray, cols: np.ndarray, stature: float
) -> np.ndarray:
    """Per-pixel brightness factor of a garment pattern (screen-space)."""
    if texture.kind == "solid":
        return np.ones(rows.shape)
    if texture.kind == "noise":
        return rng.normal(1.0, 0.12, rows.shape)
    period = max(3.0, texture.period * stature)
    along = np.floor((cols * math.cos(texture.angle) + rows * math.sin(texture.angle)) / period)
    if texture.kind == "stripes":
        dark = along % 2 == 1
    else:  # checks
        across = np.floor(
            (rows * math.cos(texture.angle) - cols * math.sin(texture.angle)) / period
        )
        dark = (along + across) % 2 == 1
    return np.where(dark, texture.contrast, 1.0)


# --------------------------------------------------------------------------------------------
# Painting a figure


@dataclass(frozen=True)
class _Figure:
    """A posed figure placed in the image: 2D points in pixels, depths in pixels (+ is near)."""

    articulation: _Articulation
    build: _Build
    outfit: _Outfit
    stature: float  # pixels
    points: dict[str, np.ndarray]
    depths: dict[str, float]


_Painter = Callable[[np.ndarray, int], None]  # paints a value into a single-channel map


@dataclass(frozen=True)
class _Part:
    name: str
    depth: float
    colour: np.ndarray
    garment: str | None  # parts of one garment share a texture
    paint: _Painter


def _fixed(points: np.ndarray) -> Any:
    """Points in cv2 fixed-point (``_SHIFT`` fractional bits)."""
    fixed = np.round(np.asarray(points) * _FIXED).astype(np.int32)
    return (int(fixed[0]), int(fixed[1])) if fixed.ndim == 1 else fixed


def _capsule_painter(
    start: np.ndarray, end: np.ndarray, start_radius: float, end_radius: float
) -> _Painter:
    """A limb: a tapered quad between two round ends."""
    axis = end - start
    length = float(np.hypot(*axis))
    normal = np.array([-axis[1], axis[0]]) / length if length > 1e-6 else np.zeros(2)
    quad = _fixed(
        [
            start + normal * start_radius,
            end + normal * end_radius,
            end - normal * end_radius,
            start - normal * start_radius,
        ]
    )
    ends = [
        (_fixed(start), round(start_radius * _FIXED)),
        (_fixed(end), round(end_radius * _FIXED)),
    ]

    def paint(canvas: np.ndarray, value: int) -> None:
        cv2.fillConvexPoly(canvas, quad, value, cv2.LINE_8, _SHIFT)
        for centre, radius in ends:
            cv2.circle(canvas, centre, radius, value, -1, cv2.LINE_8, _SHIFT)

    return paint


def _polygon_painter(polygon: np.ndarray) -> _Painter:
    fixed = _fixed(polygon)

    def paint(canvas: np.ndarray, value: int) -> None:
        cv2.fillConvexPoly(canvas, fixed, value, cv2.LINE_8, _SHIFT)

    return paint


def _to_image(figure: _Figure, camera_points: np.ndarray) -> np.ndarray:
    """Camera-space points (stature units) to pixels."""
    pelvis = figure.points["pelvis"]
    return pelvis + figure.stature * camera_points[..., :2] * np.array([1.0, -1.0])


def _torso_outline(figure: _Figure) -> np.ndarray:
    """Convex hull of elliptical cross-sections at hip, waist and shoulder level."""
    build, articulation = figure.build, figure.articulation
    angles = np.linspace(0, 2 * math.pi, 12, endpoint=False)
    ring = np.stack([np.cos(angles), np.zeros_like(angles), np.sin(angles)], axis=1)
    pelvis, chest = articulation.pelvis, articulation.chest
    sections = (  # frame, centre, half-width, half-depth
        (pelvis, pelvis @ [0.0, -0.03, 0.0], 1.25 * build.hip_half_width * build.girth, 0.065),
        (
            chest,
            chest @ [0.0, 0.45 * build.torso, 0.0],
            1.1 * build.hip_half_width * build.girth,
            0.06,
        ),
        (
            chest,
            articulation.points["neck_base"] - chest @ [0.0, 0.03, 0.0],
            1.02 * build.shoulder_half_width,
            0.055,
        ),
    )
    outline = np.concatenate(
        [
            centre + (ring * [half_width, 0.0, half_depth * build.girth]) @ frame.T
            for frame, centre, half_width, half_depth in sections
        ]
    )
    hull = cv2.convexHull(_to_image(figure, outline).astype(np.float32))
    return hull[:, 0, :].astype(np.float64)


@dataclass(frozen=True)
class _Head:
    """The head ray-cast as an ellipsoid: its pixels, their colours, and the face points shown."""

    rows: np.ndarray
    cols: np.ndarray
    colours: np.ndarray
    shown: dict[str, bool]  # face point name -> faces the camera
    ear_radius: float  # pixels


def _render_head(figure: _Figure, width: int, height: int) -> _Head:
    rotation, outfit = figure.articulation.head, figure.outfit
    radii = np.array(figure.build.head_radii) * figure.stature
    # Ellipsoid x^T A x = 1 in camera space (pixel units, y up).
    quadric = rotation @ np.diag(1.0 / radii**2) @ rotation.T
    centre_x, centre_y = figure.points["head"]
    reach = float(radii.max()) + 1.0
    x0, x1 = max(0, math.floor(centre_x - reach)), min(width - 1, math.ceil(centre_x + reach))
    y0, y1 = max(0, math.floor(centre_y - reach)), min(height - 1, math.ceil(centre_y + reach))
    rows, cols = np.mgrid[y0 : max(y0, y1 + 1), x0 : max(x0, x1 + 1)]  # empty when off-image
    x, y = cols - centre_x, centre_y - rows
    # Solve for the front-most z on each pixel's viewing ray.
    half_b = quadric[0, 2] * x + quadric[1, 2] * y
    c = quadric[0, 0] * x**2 + 2 * quadric[0, 1] * x * y + quadric[1, 1] * y**2 - 1.0
    discriminant = half_b**2 - quadric[2, 2] * c
    inside = discriminant >= 0
    z = (-half_b[inside] + np.sqrt(discriminant[inside])) / quadric[2, 2]
    surface = np.stack([x[inside], y[inside], z], axis=1)
    normals = surface @ quadric
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    head_normals = normals @ rotation  # in head axes
    hair = (head_normals[:, 2] < outfit.hair_back) | (head_normals[:, 1] > outfit.hair_top)
    base = np.where(hair[:, None], outfit.hair, outfit.skin)
    colours = base * (0.6 + 0.4 * np.clip(normals[:, 2:3], 0.0, 1.0))

    def facing(name: str) -> float:
        local_normal = _unit(_FACE_POINTS[name] / np.array(figure.build.head_radii))
        return float((rotation @ local_normal)[2])

    forward = float(rotation[2, 2])
    shown = {
        "nose": forward > _FACING_THRESHOLD["nose"],
        "mouth": facing("mouth") > _FACING_THRESHOLD["mouth"],
        **{f"{side}_eye": facing(f"{side}_eye") > _FACING_THRESHOLD["eye"] for side in _SIDES},
        **{f"{side}_ear": facing(f"{side}_ear") > _FACING_THRESHOLD["ear"] for side in _SIDES},
    }
    return _Head(
        rows[inside], cols[inside], colours, shown, ear_radius=max(0.6, 0.3 * float(radii[0]))
    )


def _figure_parts(figure: _Figure, head: _Head) -> list[_Part]:
    points, depths, stature = figure.points, figure.depths, figure.stature
    outfit, girth = figure.outfit, figure.build.girth
    torso_depth = 0.5 * (depths["pelvis"] + depths["neck_base"])

    def lit(colour: np.ndarray, depth: float) -> np.ndarray:
        # Farther parts a little darker: separates overlapping limbs of the same colour.
        return colour * _clamp(1.0 + 0.25 * (depth - torso_depth) / (0.1 * stature), 0.7, 1.0)

    def limb(
        name: str,
        start: str,
        end: str,
        radii: tuple[float, float],
        covering: tuple[str | None, np.ndarray],
        depth_bias: float,
    ) -> _Part:
        garment, colour = covering
        depth = 0.5 * (depths[start] + depths[end]) + depth_bias * stature
        start_radius, end_radius = (max(1.0, r * stature * girth) for r in radii)
        painter = _capsule_painter(points[start], points[end], start_radius, end_radius)
        return _Part(name, depth, lit(colour, depth), garment, painter)

    def paint_head(canvas: np.ndarray, value: int) -> None:
        canvas[head.rows, head.cols] = value
        for side in _SIDES:
            if head.shown[f"{side}_ear"]:
                centre, radius = _fixed(points[f"{side}_ear"]), round(head.ear_radius * _FIXED)
                cv2.circle(canvas, centre, radius, value, -1, cv2.LINE_8, _SHIFT)

    # What each part wears: (garment whose texture it shares, colour).
    shirt, trousers, skin = (
        ("shirt", outfit.shirt),
        ("trousers", outfit.trousers),
        (None, outfit.skin),
    )
    parts = [
        # The neck sits behind head and torso: painted first whatever the view.
        limb("neck", "neck_base", "head", (0.032, 0.03), skin, depth_bias=-1.0),
        _Part(
            "torso", torso_depth, outfit.shirt, "shirt", _polygon_painter(_torso_outline(figure))
        ),
        _Part("head", depths["head"], outfit.skin, None, paint_head),
    ]
    covering = {
        "upper_arm": shirt,
        "forearm": shirt if outfit.long_sleeves else skin,
        "hand": skin,
        "thigh": trousers,
        "shin": trousers if outfit.long_trousers else skin,
        "foot": (None, outfit.shoes),
    }
    for side in _SIDES:
        for name, start, end, radii, depth_bias in _LIMB_SHAPES:
            joints = (f"{side}_{start}", f"{side}_{end}")
            parts.append(limb(f"{side}_{name}", *joints, radii, covering[name], depth_bias))
    return sorted(parts, key=lambda part: part.depth)


# Limb, its end points, radii at both ends (units of stature, before girth) and depth bias. The
# bias puts limbs hanging beside the torso in front of its outline's edge.
_LIMB_SHAPES = (
    ("upper_arm", "shoulder", "elbow", (0.036, 0.029), 0.02),
    ("forearm", "elbow", "wrist", (0.029, 0.021), 0.02),
    ("hand", "wrist", "hand_tip", (0.022, 0.018), 0.02),
    ("thigh", "hip", "knee", (0.06, 0.043), 0.01),
    ("shin", "knee", "ankle", (0.043, 0.028), 0.01),
    ("foot", "heel", "toe", (0.024, 0.02), 0.01),
)


@dataclass(frozen=True)
class _PaintedFigure:
    window: tuple[slice, slice]  # the image region the figure covers (rows, cols)
    colours: np.ndarray  # hxwx3 over the window, valid where mask
    mask: np.ndarray  # hxw over the window: the figure's pixels before later figures
    keypoints: np.ndarray  # Kx2 pixels
    self_occluded: np.ndarray  # K bool


def _paint_figure(
    rng: np.random.Generator,
    figure: _Figure,
    keypoint_names: Sequence[str],
    width: int,
    height: int,
) -> _PaintedFigure:
    head = _render_head(figure, width, height)
    parts = _figure_parts(figure, head)
    ranks = np.full((height, width), _EMPTY, dtype=np.uint8)
    for rank, part in enumerate(parts):
        part.paint(ranks, rank)
    rank_of = {part.name: rank for rank, part in enumerate(parts)}

    keypoints = np.array([figure.points[name] for name in keypoint_names])
    self_occluded = np.zeros(len(keypoint_names), dtype=bool)
    for index, name in enumerate(keypoint_names):
        col, row = np.round(keypoints[index]).astype(int)
        if not (0 <= col < width and 0 <= row < height):
            continue
        top = ranks[row, col]
        covered = top != _EMPTY and top > max(rank_of[part] for part in _KEYPOINT_OWNERS[name])
        self_occluded[index] = covered or _turned_away(figure, head, name)

    # Colour only the figure's bounding window: most figures are much smaller than the image.
    covered_rows = np.flatnonzero((ranks != _EMPTY).any(axis=1))
    covered_cols = np.flatnonzero((ranks != _EMPTY).any(axis=0))
    if covered_rows.size == 0:
        empty = (slice(0, 0), slice(0, 0))
        return _PaintedFigure(
            empty, np.zeros((0, 0, 3)), np.zeros((0, 0), bool), keypoints, self_occluded
        )
    top, left = int(covered_rows[0]), int(covered_cols[0])
    window = (slice(top, int(covered_rows[-1]) + 1), slice(left, int(covered_cols[-1]) + 1))
    ranks = ranks[window]
    mask = ranks != _EMPTY
    origin = np.array([left, top], dtype=np.float64)

    palette = np.zeros((256, 3), dtype=np.float32)
    palette[: len(parts)] = [part.colour for part in parts]
    colours = palette[ranks]
    for garment, texture in figure.outfit.textures.items():
        garment_ranks = [rank for rank, part in enumerate(parts) if part.garment == garment]
        rows, cols = np.nonzero(np.isin(ranks, garment_ranks))
        factor = _texture_factor(rng, texture, rows, cols, figure.stature)
        colours[rows, cols] *= factor[:, None].astype(np.float32)
    head_rows, head_cols = head.rows - top, head.cols - left
    head_shown = ranks[head_rows, head_cols] == rank_of["head"]
    colours[head_rows[head_shown], head_cols[head_shown]] = head.colours[head_shown]
    _paint_details(figure, head, colours, ranks, rank_of, origin)
    if figure.stature >= 40:  # thin outlines where parts meet; they would swamp small figures
        edges = np.zeros_like(mask)
        edges[:, 1:] |= ranks[:, 1:] != ranks[:, :-1]
        edges[1:, :] |= ranks[1:, :] != ranks[:-1, :]
        colours[edges & mask] *= 0.6
    return _PaintedFigure(window, colours, mask, keypoints, self_occluded)


def _turned_away(figure: _Figure, head: _Head, name: str) -> bool:
    """Hidden behind the figure's own head or torso volume."""
    if name in head.shown:
        return not head.shown[name]
    side, _, joint = name.partition("_")
    if side in _SIDE_SIGN and joint in ("shoulder", "hip"):
        frame = figure.articulation.chest if joint == "shoulder" else figure.articulation.pelvis
        return _SIDE_SIGN[side] * float(frame[2, 0]) < _TORSO_SIDE_THRESHOLD
    return False


def _paint_details(
    figure: _Figure,
    head: _Head,
    colours: np.ndarray,
    ranks: np.ndarray,
    rank_of: dict[str, int],
    origin: np.ndarray,
) -> None:
    """Face features and the shirt's neckline, drawn only onto their part's visible pixels.

    ``colours`` and ``ranks`` cover a window of the image whose top-left pixel is ``origin``.
    """
    outfit = figure.outfit
    points = {name: point - origin for name, point in figure.points.items()}
    head_size = figure.build.head_radii[0] * figure.stature
    decal = colours.copy()

    def dot(name: str, radius: float, colour: Sequence[float]) -> None:
        centre, radius = _fixed(points[name]), max(8, round(radius * _FIXED))
        cv2.circle(decal, centre, radius, colour, -1, cv2.LINE_8, _SHIFT)

    for side in _SIDES:
        if head.shown[f"{side}_ear"]:
            dot(f"{side}_ear", 0.5 * head.ear_radius, outfit.skin * 0.7)
        if head.shown[f"{side}_eye"]:
            if head_size >= 6:
                dot(f"{side}_eye", 0.26 * head_size, (235, 235, 235))
            dot(f"{side}_eye", 0.15 * head_size, (30, 25, 20))
    if head.shown["nose"]:
        dot("nose", 0.17 * head_size, outfit.skin * 0.65)
    if head.shown["mouth"]:
        lateral = figure.articulation.head[:2, 0] * np.array([1.0, -1.0]) * 0.3 * head_size
        ends = _fixed(points["mouth"] - lateral), _fixed(points["mouth"] + lateral)
        thickness = max(1, round(0.12 * head_size))
        cv2.line(decal, *ends, (60, 50, 150), thickness, cv2.LINE_8, _SHIFT)
    on_head = ranks == rank_of["head"]
    colours[on_head] = decal[on_head]

    chest = figure.articulation.chest
    if chest[2, 2] > 0.25:  # the neckline shows the front of the torso
        neck_base = figure.articulation.points["neck_base"]
        half_width = 0.6 * figure.build.shoulder_half_width
        depth = 0.06 * figure.build.girth
        corners = [
            neck_base + chest @ [half_width, 0.0, depth],
            neck_base + chest @ [-half_width, 0.0, depth],
            neck_base + chest @ [0.0, -0.09, depth],
        ]
        neckline = _to_image(figure, np.array(corners)) - origin
        decal = colours.copy()
        cv2.fillConvexPoly(decal, _fixed(neckline), outfit.skin, cv2.LINE_8, _SHIFT)
        on_torso = ranks == rank_of["torso"]
        colours[on_torso] = decal[on_torso]


# --------------------------------------------------------------------------------------------
# Composing a scene


def _place_figure(
    rng: np.random.Generator,
    stature: float,
    width: int,
    height: int,
    anchors: list[np.ndarray],
    yaw_sd: float | None,
) -> _Figure:
    """Pose a new figure and put it in the image, sometimes next to an earlier one."""
    build, pose, outfit = _sample_build(rng), _sample_pose(rng), _sample_outfit(rng)
    # Any view, or mostly frontal ones: yaw ~ N(0, yaw_sd) wrapped to [-180, 180).
    yaw = rng.uniform(-180, 180) if yaw_sd is None else (rng.normal(0, yaw_sd) + 180) % 360 - 180
    camera_pitch = _clamp(rng.normal(8, 8), -15, 30)
    if rng.random() < 0.05:  # lying
        roll = rng.choice([-1.0, 1.0]) * rng.uniform(70, 110)
    else:  # leaning
        roll = _clamp(rng.normal(0, 7), -20, 20)
    articulation = _articulate(build, pose, _rot_z(roll) @ _rot_x(camera_pitch) @ _rot_y(yaw))
    extent = np.array([(p[0], -p[1]) for p in articulation.points.values()]) * stature
    centre = 0.5 * (extent.min(axis=0) + extent.max(axis=0))
    if anchors and rng.random() < 0.4:  # groups make people overlap
        anchor = anchors[rng.integers(len(anchors))]
        target = anchor + rng.normal(0, 0.25 * stature, 2)
    else:
        target = rng.uniform([0, 0], [width, height])
    target = np.clip(target, [0, 0], [width - 1, height - 1])  # the centre stays in the image
    anchors.append(target)
    return _figure_at(articulation, build, outfit, stature, target - centre)


def _figure_at(
    articulation: _Articulation,
    build: _Build,
    outfit: _Outfit,
    stature: float,
    pelvis: np.ndarray,
) -> _Figure:
    """An articulated figure of ``stature`` pixels drawn with its pelvis at ``pelvis``."""
    points = {
        name: pelvis + stature * np.array([p[0], -p[1]]) for name, p in articulation.points.items()
    }
    depths = {name: stature * float(p[2]) for name, p in articulation.points.items()}
    return _Figure(articulation, build, outfit, stature, points, depths)


def _with_neck_and_head_top(figure: _Figure) -> _Figure:
    """The figure with two more points, ``neck_top`` (where neck meets head) and ``head_top``
    (the top of the head ellipsoid along the head's own up axis). They are kept out of
    `_articulate`, whose points also place the COCO figures."""
    articulation, build = figure.articulation, figure.build
    extra = {
        "neck_top": articulation.points["neck_base"]
        + articulation.chest @ np.array([0.0, build.neck, 0.0]),
        "head_top": articulation.points["head"]
        + articulation.head @ np.array([0.0, build.head_radii[1], 0.0]),
    }
    names = list(extra)
    image = _to_image(figure, np.array([extra[name] for name in names]))
    return replace(
        figure,
        points={**figure.points, **dict(zip(names, image, strict=True))},
        depths={**figure.depths, **{n: figure.stature * float(extra[n][2]) for n in names}},
    )


@dataclass(frozen=True)
class _Person:
    keypoints: np.ndarray  # Kx3, COCO convention
    bbox: list[float]
    area: int
    segmentation: dict[str, Any]
    visible_fraction: float  # visible pixels / pixels before other figures and occluders
    figure: _Figure | None = None


@dataclass(frozen=True)
class _Scene:
    image: np.ndarray
    people: list[_Person]
    clutter: list[np.ndarray]  # [x, y, w, h] of background objects (detector bait)


def _render_scene(
    rng: np.random.Generator,
    spec: SyntheticSpec,
    keypoint_names: Sequence[str],
    extend: Callable[[_Figure], _Figure] | None = None,
) -> _Scene:
    """An image of ``spec``'s people; ``extend`` adds points to each figure (drawing nothing
    from ``rng``), for keypoints of other sets than COCO's."""
    width, height = spec.image_width, spec.image_height
    background, clutter = _render_background(rng, width, height)
    canvas = background.astype(np.float32)  # figures' colours may leave 0..255 until _finish
    count = int(rng.integers(spec.min_people, spec.max_people + 1))
    low, high = spec.min_stature * height, spec.max_stature * height
    if spec.stature_sampling == "log_uniform":
        statures = np.exp(rng.uniform(math.log(low), math.log(high), count))
    else:
        statures = rng.uniform(low, high, count)
    # Farther people tend to look smaller: paint small ones first, with some shuffling.
    order = np.argsort(statures * rng.uniform(0.7, 1.3, count), kind="stable")
    labels = np.full((height, width), _EMPTY, dtype=np.uint8)
    painted, figures, anchors = [], [], []
    for label, index in enumerate(order):
        figure = _place_figure(rng, float(statures[index]), width, height, anchors, spec.yaw_sd)
        if extend is not None:
            figure = extend(figure)
        painting = _paint_figure(rng, figure, keypoint_names, width, height)
        canvas[painting.window][painting.mask] = painting.colours[painting.mask]
        labels[painting.window][painting.mask] = label
        painted.append(painting)
        figures.append(figure)
    if rng.random() < 0.15:
        _paint_occluder(rng, canvas, labels)
    image = _finish(rng, canvas)

    people = []
    for label, painting in enumerate(painted):
        visible = labels == label
        area = int(visible.sum())
        if area < MIN_VISIBLE_AREA:
            continue
        keypoints = np.zeros((len(keypoint_names), 3))
        for index, (x, y) in enumerate(painting.keypoints):
            if not (0 <= x <= width - 1 and 0 <= y <= height - 1):
                continue  # COCO: unlabeled, stored as 0, 0, 0
            cover = labels[round(y), round(x)]
            covered = cover != _EMPTY and cover > label  # a nearer figure or an occluder
            keypoints[index] = (x, y, 1 if covered or painting.self_occluded[index] else 2)
        rle = mask_utils.encode(np.asfortranarray(visible.astype(np.uint8)))
        bbox = [float(v) for v in mask_utils.toBbox(rle)]
        rle["counts"] = rle["counts"].decode("ascii")
        visible_fraction = area / max(1, int(painting.mask.sum()))
        people.append(_Person(keypoints, bbox, area, rle, visible_fraction, figures[label]))
    return _Scene(image, people, clutter)


def _random_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    return tuple(float(v) for v in rng.uniform(0, 255, 3))


def _render_background(
    rng: np.random.Generator, width: int, height: int
) -> tuple[np.ndarray, list]:
    """Gradient, colour noise, shapes and limb-like strokes; returns the image and clutter boxes."""
    # A coarse grid holds a linear gradient plus colour noise; cubic upsampling smooths it.
    grid_rows, grid_cols = int(rng.integers(3, 9)), int(rng.integers(3, 9))
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.add.outer(
        np.linspace(0, math.sin(angle), grid_rows), np.linspace(0, math.cos(angle), grid_cols)
    )
    ramp = (ramp - ramp.min()) / max(1e-6, float(ramp.max() - ramp.min()))
    start, end = rng.uniform(0, 255, (2, 3))
    grid = start + ramp[..., None] * (end - start)
    grid += rng.standard_normal(grid.shape) * rng.uniform(5, 35)
    grid = np.clip(grid, 0, 255).astype(np.uint8)
    canvas = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)

    clutter = []
    size = min(width, height)
    for _ in range(int(rng.integers(4, 16))):
        kind = rng.integers(5)
        colour = _random_colour(rng)
        centre = rng.uniform([0, 0], [width, height])
        half = rng.uniform(0.03, 0.3, 2) * size
        filled = -1 if rng.random() < 0.7 else int(rng.integers(1, 4))
        if kind == 0:
            corner0, corner1 = centre - half, centre + half
            cv2.rectangle(
                canvas, _fixed(corner0), _fixed(corner1), colour, filled, cv2.LINE_AA, _SHIFT
            )
        elif kind == 1:
            cv2.ellipse(
                canvas, (centre, 2 * half, rng.uniform(0, 180)), colour, filled, cv2.LINE_AA
            )
        elif kind == 2:
            polygon = centre + rng.uniform(-1, 1, (int(rng.integers(3, 7)), 2)) * half
            cv2.fillPoly(canvas, [_fixed(polygon)], colour, cv2.LINE_AA, _SHIFT)
        else:
            ends = rng.uniform([0, 0], [width, height], (2, 2))
            cv2.line(
                canvas,
                _fixed(ends[0]),
                _fixed(ends[1]),
                colour,
                int(rng.integers(1, 4)),
                cv2.LINE_AA,
                _SHIFT,
            )
            continue
        clutter.append(np.concatenate([centre - half, 2 * half]))
    # Limb-like strokes in skin and clothing colours teach the network that a limb is not enough.
    for _ in range(int(rng.integers(0, 6))):
        stature = math.exp(rng.uniform(math.log(0.1 * height), math.log(0.9 * height)))
        length = stature * rng.uniform(0.13, 0.25)
        radius = max(1.0, stature * rng.uniform(0.02, 0.05))
        if rng.random() < 0.5:
            colour = _SKIN_TONES[rng.integers(len(_SKIN_TONES))]
        else:
            colour = rng.uniform(15, 240, 3)
        joints = [rng.uniform([0, 0], [width, height])]
        heading = rng.uniform(0, 2 * math.pi)
        for _ in range(int(rng.integers(1, 4))):
            heading += rng.uniform(-1.5, 1.5)
            joints.append(joints[-1] + length * np.array([math.cos(heading), math.sin(heading)]))
            _capsule_painter(joints[-2], joints[-1], radius, 0.8 * radius)(canvas, colour)
        joints = np.array(joints)
        low, high = joints.min(axis=0) - radius, joints.max(axis=0) + radius
        clutter.append(np.concatenate([low, high - low]))
    return canvas, clutter


def _paint_occluder(rng: np.random.Generator, canvas: np.ndarray, labels: np.ndarray) -> None:
    """A foreground object (post, box, sign) in front of everyone."""
    height, width = labels.shape
    if rng.random() < 0.5:  # a post
        half = np.array([rng.uniform(0.02, 0.06) * width, rng.uniform(0.3, 0.6) * height])
    else:
        half = rng.uniform(0.06, 0.2, 2) * np.array([width, height])
    centre = rng.uniform([0, 0], [width, height])
    corners = (_fixed(centre - half), _fixed(centre + half))
    cv2.rectangle(canvas, *corners, _random_colour(rng), -1, cv2.LINE_8, _SHIFT)
    cv2.rectangle(labels, *corners, _OCCLUDER, -1, cv2.LINE_8, _SHIFT)


def _finish(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    """Camera effects: exposure jitter, and on some images blur and sensor noise."""
    image = canvas  # float32, ours to change in place
    image *= rng.uniform(0.8, 1.2)
    image += rng.uniform(-20, 20)
    if rng.random() < 0.25:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.3))
    if rng.random() < 0.35:
        image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(rng.uniform(2, 8))
    np.clip(image, 0, 255, out=image)
    return np.rint(image, out=image).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Simulated detector


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    low = np.maximum(a[:2], b[:2])
    high = np.minimum(a[:2] + a[2:], b[:2] + b[2:])
    inter = float(np.prod(np.clip(high - low, 0, None)))
    union = float(a[2] * a[3] + b[2] * b[3]) - inter
    return inter / union if union > 0 else 0.0


def _jitter_box(
    rng: np.random.Generator, box: np.ndarray, spread: float, width: int, height: int
) -> np.ndarray:
    """Move each side by a normal fraction of the box size; keep it in the image."""
    x0, y0, w, h = box
    corners = np.array([x0, y0, x0 + w, y0 + h]) + rng.normal(0, spread, 4) * [w, h, w, h]
    corners = np.clip(corners, 0, [width, height, width, height])
    corners[2:] = np.maximum(corners[2:], corners[:2] + 2)
    return np.array([*corners[:2], *(corners[2:] - corners[:2])])


def _part_box(rng: np.random.Generator, box: np.ndarray) -> np.ndarray:
    """A box on 35-60% of a person's box (upper body, a side): the redundant detections of
    one person that survive box NMS and that pose NMS exists to remove."""
    x0, y0, w, h = box
    fraction = rng.uniform(0.35, 0.6)
    if rng.random() < 0.6:  # upper or lower part
        part_h = h * fraction
        top = y0 if rng.random() < 0.7 else y0 + h - part_h
        return np.array([x0, top, w, part_h])
    part_w = w * fraction
    left = x0 if rng.random() < 0.5 else x0 + w - part_w
    return np.array([left, y0, part_w, h])


def _simulate_detections(
    rng: np.random.Generator, image_id: int, scene: _Scene, spec: SyntheticSpec
) -> list[dict]:
    """COCO results for one image from an imperfect person detector."""
    width, height = spec.image_width, spec.image_height
    found: list[tuple[np.ndarray, float]] = []
    for person in scene.people:
        truth = np.array(person.bbox)
        visible = person.visible_fraction
        # Small and heavily occluded people are missed most.
        miss = 0.02 + 0.5 * math.exp(-truth[3] / 18) + 0.45 * (1 - visible) ** 2
        if rng.random() < miss:
            continue
        spread = 0.03 + 0.06 * (1 - visible)
        if rng.random() < 0.2:  # a poorly localised box
            spread += 0.08
        box = _jitter_box(rng, truth, spread, width, height)
        score = (
            0.25
            + 0.45 * (1 - math.exp(-truth[3] / 50))
            + 0.2 * visible
            + 0.8 * (_box_iou(box, truth) - 0.85)
            + rng.normal(0, 0.05)
        )
        score = _clamp(score, 0.05, 0.99)
        found.append((box, score))
        if rng.random() < 0.18:  # a duplicate that box NMS should have removed
            found.append(
                (_jitter_box(rng, truth, 0.06, width, height), score * rng.uniform(0.3, 0.7))
            )
        if rng.random() < 0.3:  # a box on part of the person that box NMS keeps (IoU < 0.5)
            found.append((_part_box(rng, truth), score * rng.uniform(0.6, 1.0)))
    for _ in range(int(rng.poisson(0.8))):
        if scene.clutter and rng.random() < 0.6:
            bait = scene.clutter[rng.integers(len(scene.clutter))]
            box = _jitter_box(rng, bait, 0.1, width, height)
        else:
            box_height = rng.uniform(0.08, 0.6) * height
            box_width = box_height * rng.uniform(0.3, 0.9)
            corner = rng.uniform([0, 0], [max(1, width - box_width), max(1, height - box_height)])
            box = _jitter_box(rng, np.array([*corner, box_width, box_height]), 0.0, width, height)
        score = rng.uniform(0.3, 0.65) if rng.random() < 0.1 else rng.uniform(0.02, 0.4)
        found.append((box, float(score)))
    found.sort(key=lambda item: -item[1])
    return [
        {
            "image_id": image_id,
            "category_id": 1,
            "bbox": [round(float(v), 2) for v in box],
            "score": round(score, 4),
        }
        for box, score in found
    ]


class SyntheticCocoDataset:
    """``data=synthetic``: the dataset description the datamodule asks to ``prepare()``.

    ``root`` is the cache folder (``data.root``); the other arguments are `SyntheticSpec`'s.
    """

    def __init__(self, root: str | Path, **spec: Any) -> None:
        self.root = Path(root)
        self.spec = SyntheticSpec(**spec)

    def prepare(self) -> tuple[CocoSplit, CocoSplit]:
        paths = ensure_synthetic_coco(self.root, self.spec)
        return (
            CocoSplit(paths.train_annotations, paths.train_images, paths.train_detections),
            CocoSplit(paths.val_annotations, paths.val_images, paths.val_detections),
        )
