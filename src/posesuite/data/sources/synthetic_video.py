"""An embedded, deterministic synthetic video dataset in Penn Action's layout
(``data=synthetic_video``).

Each video shows one person, with Penn Action's 13 joints annotated in every frame, in front of
a background that stays the same through the video (seen by a slowly panning camera in some
videos). The person moves coherently from frame to frame, in one of three motions:

* walking: the gait phase advances every frame (legs swing, knees bend on the forward swing,
  arms swing against the legs) and the figure travels the way it faces, as far as its steps
  carry it;
* waving: one upper arm held out to the side, its forearm swinging from side to side;
* turning: the body's yaw changes steadily, so the views pass from front to side to back.

In most videos an occluder (a post or a panel) moves across the figure: a joint it covers is
hidden for one to a few frames and seen in the frames around them, which is what a model that
remembers earlier frames can use. The figure model, its painting and the backgrounds are the
synthetic COCO generator's (`posesuite.data.sources.synthetic`).

Labels, as Penn Action's: the head joint is the centre of the head (Penn Action's head point sits
on the middle of the head, not at its top). A joint is visible (``visibility`` 1) unless it is
outside the image, covered by the occluder, or hidden by the figure itself (a part painted over
it, the far shoulder or hip in a side view); ``x`` and ``y`` hold every joint's true position,
visible or not, as Penn Action stores positions for its invisible joints. ``bbox`` is the
figure's painted extent in the frame, occluded parts included. The files are Penn Action's
(`posesuite.data.sources.penn_action`): ``frames/NNNN/%06d.jpg`` and ``labels/NNNN.mat`` with
``x``, ``y``, ``visibility``, ``bbox``, ``train`` (1 for the train videos, numbered first; -1 for
the val videos), ``nframes``, ``dimensions``, ``action`` (the motion) and ``pose`` (the first
frame's view: front, side or back), in Matlab's 1-based coordinates; they are read back by
`PennActionDataset`.

Every random draw comes from ``numpy.random.default_rng((seed, video index))``, so the same spec
gives byte-identical files. The dataset lives in ``root/<spec digest>/``, generated atomically
(`posesuite.data.sources.synthetic.generate_once`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from posesuite.data.sources.penn_action import FRAME_ID_BASE, PennActionDataset, PennActionSplit
from posesuite.data.sources.synthetic import (
    _SHIFT,
    _SIDES,
    GENERATOR_VERSION,
    _articulate,
    _Articulation,
    _clamp,
    _figure_at,
    _fixed,
    _hanging_arm,
    _Limb,
    _paint_figure,
    _Pose,
    _random_colour,
    _render_background,
    _rot_x,
    _rot_y,
    _rot_z,
    _sample_build,
    _sample_outfit,
    _standing_leg,
    generate_once,
    write_mat,
)
from posesuite.skeleton import load_skeleton

# Part of the cache key: bump whenever the generated data change, so old caches are not reused.
VIDEO_VERSION = 1
MOTIONS = ("walking", "waving", "turning")
# Videos are numbered with 4 digits, as Penn Action's.
MAX_VIDEOS = 9999


@dataclass(frozen=True)
class SyntheticVideoSpec:
    """What to generate; every field is part of the cache key."""

    num_train_videos: int = 300
    num_val_videos: int = 60
    min_frames: int = 5
    max_frames: int = 10
    image_width: int = 160
    image_height: int = 160
    # Person heights as fractions of the image height (Penn Action's people fill the frame).
    min_stature: float = 0.5
    max_stature: float = 0.85
    occlusion_prob: float = 0.75  # share of videos with a moving occluder
    pan_prob: float = 0.3  # share of videos whose camera pans
    train_seed: int = 0
    val_seed: int = 1  # train and val use different seeds
    jpeg_quality: int = 92

    def __post_init__(self) -> None:
        if self.num_train_videos < 1 or self.num_val_videos < 1:
            raise ValueError("the synthetic video needs at least one train and one val video")
        if self.num_train_videos + self.num_val_videos > MAX_VIDEOS:
            raise ValueError(f"at most {MAX_VIDEOS} videos (4-digit video numbers)")
        if not 1 <= self.min_frames <= self.max_frames < FRAME_ID_BASE:
            raise ValueError(f"need 1 <= min_frames <= max_frames < {FRAME_ID_BASE}")
        if self.image_width < 32 or self.image_height < 32:
            raise ValueError("synthetic frames must be at least 32x32 pixels")
        if not 0 < self.min_stature <= self.max_stature <= 1.0:
            raise ValueError("need 0 < min_stature <= max_stature <= 1 (fractions of height)")
        if not (0 <= self.occlusion_prob <= 1 and 0 <= self.pan_prob <= 1):
            raise ValueError("occlusion_prob and pan_prob are probabilities (0 to 1)")
        if self.train_seed == self.val_seed:
            raise ValueError("train_seed and val_seed must differ, or val would repeat train")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("jpeg_quality must be in 1..100")

    def digest(self) -> str:
        """Short hash of the spec and the generator versions (the figures and backgrounds are
        the COCO generator's, so its version counts too): the cache folder's name."""
        versions = {"generator_version": GENERATOR_VERSION, "video_version": VIDEO_VERSION}
        key = json.dumps({**versions, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:12]


def ensure_synthetic_video(
    root: str | Path, spec: SyntheticVideoSpec = SyntheticVideoSpec()
) -> Path:
    """The dataset's folder, ``root/<spec digest>/``, generated unless it is already there."""
    folder = Path(root).expanduser() / spec.digest()
    if not folder.is_dir():
        generate_once(folder, lambda staging: _generate(staging, spec), "synthetic video")
    labels = folder / "labels"
    expected = spec.num_train_videos + spec.num_val_videos
    found = len(list(labels.glob("*.mat"))) if labels.is_dir() else 0
    if found != expected or not (folder / "frames").is_dir():
        raise RuntimeError(
            f"synthetic video at {folder} is incomplete ({found} of {expected} label files);"
            " delete that folder to regenerate it"
        )
    return folder


def _generate(folder: Path, spec: SyntheticVideoSpec) -> str:
    """Write every video into ``folder``; returns a one-line summary."""
    names = load_skeleton("penn13").keypoints
    (folder / "labels").mkdir()
    frames = {True: 0, False: 0}
    number = 0
    for training, seed, count in (
        (True, spec.train_seed, spec.num_train_videos),
        (False, spec.val_seed, spec.num_val_videos),
    ):
        for index in range(count):
            number += 1
            video = _render_video(np.random.default_rng((seed, index)), spec, names)
            _write_video(folder, number, training, video, spec)
            frames[training] += len(video.frames)
    return (
        f"{spec.num_train_videos} train videos ({frames[True]} frames),"
        f" {spec.num_val_videos} val videos ({frames[False]} frames)"
    )


@dataclass(frozen=True)
class _Video:
    motion: str
    view: str  # front | side | back, at the first frame
    frames: list[np.ndarray]  # (H, W, 3) uint8 BGR
    joints: np.ndarray  # (F, K, 2) 0-based pixels, visible or not
    visible: np.ndarray  # (F, K) bool
    boxes: np.ndarray  # (F, 4) first column, first row, last column, last row of the figure


def _write_video(
    folder: Path, number: int, training: bool, video: _Video, spec: SyntheticVideoSpec
) -> None:
    frame_dir = folder / "frames" / f"{number:04d}"
    frame_dir.mkdir(parents=True)
    for index, frame in enumerate(video.frames):
        ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, spec.jpeg_quality])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for synthetic video {number}, frame {index}")
        (frame_dir / f"{index + 1:06d}.jpg").write_bytes(encoded.tobytes())
    count = len(video.frames)
    # Penn Action's bbox: x1, y1, x2, y2; here the outer edges of the covered pixels, 1-based
    # (a pixel spans its centre +-0.5).
    edges = video.boxes + np.array([-0.5, -0.5, 0.5, 0.5]) + 1.0
    write_mat(
        folder / "labels" / f"{number:04d}.mat",
        {
            "x": video.joints[..., 0] + 1.0,
            "y": video.joints[..., 1] + 1.0,
            "visibility": video.visible.astype(np.uint8),
            "bbox": edges,
            "train": np.array([[1 if training else -1]]),
            "nframes": np.array([[count]]),
            "dimensions": np.array([[spec.image_height, spec.image_width, count]]),
            "action": video.motion,
            "pose": video.view,
        },
    )


# --------------------------------------------------------------------------------------------
# Motion: a pose and a body yaw for each frame, and how far the figure has walked

# A motion maps the frame index t to (pose, yaw in degrees, distance walked in leg lengths).
_Motion = Callable[[int], tuple[_Pose, float, float]]


def _head_pose(rng: np.random.Generator) -> dict[str, float]:
    return {
        "head_yaw": _clamp(rng.normal(0, 15), -45, 45),
        "head_pitch": _clamp(rng.normal(0, 8), -20, 25),
    }


def _walking(rng: np.random.Generator) -> _Motion:
    period = rng.uniform(10, 16)  # frames per gait cycle
    swing = rng.uniform(15, 30)  # hip flexion amplitude, degrees
    knee_lift = rng.uniform(20, 45)
    elbow = rng.uniform(10, 35)
    arm_out = rng.uniform(5, 15)
    phase0 = rng.uniform(0, 2 * math.pi)
    yaw = rng.uniform(-180, 180)
    pitch = rng.uniform(0, 6)
    head = _head_pose(rng)
    # Each half cycle the stance foot stays put while the pelvis passes over it.
    speed = 4 * math.sin(math.radians(swing)) / period

    def at(t: int) -> tuple[_Pose, float, float]:
        phase = phase0 + 2 * math.pi * t / period
        arms, legs = {}, {}
        for side in _SIDES:
            side_phase = phase if side == "left" else phase + math.pi
            flexion = swing * math.sin(side_phase)
            # The knee bends while the leg swings forward.
            bend = 3 + knee_lift * max(0.0, math.cos(side_phase))
            legs[side] = _Limb(flexion, 3.0, 5.0, bend)
            arms[side] = _Limb(-1.1 * flexion, arm_out, 20.0, elbow)  # against the legs
        twist = -0.2 * swing * math.sin(phase)
        return _Pose(arms, legs, torso_pitch=pitch, torso_twist=twist, **head), yaw, speed * t

    return at


def _waving(rng: np.random.Generator) -> _Motion:
    active = _SIDES[int(rng.integers(2))]
    still = {side: _hanging_arm(rng) for side in _SIDES}
    legs = {side: _standing_leg(rng) for side in _SIDES}
    flexion, abduction = rng.uniform(-10, 25), rng.uniform(75, 105)
    rotation = rng.uniform(-90, -75)  # forearm turned up, in the body's frontal plane
    bend, amplitude = rng.uniform(80, 100), rng.uniform(20, 35)
    period, phase0 = rng.uniform(5, 9), rng.uniform(0, 2 * math.pi)
    yaw = _clamp(rng.normal(0, 35), -90, 90)  # waving at the camera, more or less
    head = _head_pose(rng)

    def at(t: int) -> tuple[_Pose, float, float]:
        elbow = bend + amplitude * math.sin(phase0 + 2 * math.pi * t / period)
        arms = {**still, active: _Limb(flexion, abduction, rotation, elbow)}
        return _Pose(arms, legs, **head), yaw, 0.0

    return at


def _turning(rng: np.random.Generator) -> _Motion:
    arms = {side: _hanging_arm(rng) for side in _SIDES}
    legs = {side: _standing_leg(rng) for side in _SIDES}
    yaw0 = rng.uniform(-180, 180)
    rate = rng.choice([-1.0, 1.0]) * rng.uniform(8, 20)  # degrees per frame
    pose = _Pose(arms, legs, **_head_pose(rng))

    def at(t: int) -> tuple[_Pose, float, float]:
        return pose, yaw0 + rate * t, 0.0

    return at


_MOTION_MAKERS: dict[str, Callable[[np.random.Generator], _Motion]] = {
    "walking": _walking,
    "waving": _waving,
    "turning": _turning,
}


def _view(yaw: float) -> str:
    facing = abs((yaw + 180) % 360 - 180)
    return "front" if facing < 45 else "back" if facing > 135 else "side"


# --------------------------------------------------------------------------------------------
# Rendering


@dataclass(frozen=True)
class _Occluder:
    """A rectangle moving at constant velocity in front of everything."""

    centre: np.ndarray  # at frame 0, pixels
    velocity: np.ndarray  # pixels per frame
    half_size: np.ndarray
    colour: tuple[float, float, float]

    def paint(self, canvas: np.ndarray, mask: np.ndarray, t: int) -> None:
        centre = self.centre + self.velocity * t
        corners = _fixed(centre - self.half_size), _fixed(centre + self.half_size)
        cv2.rectangle(canvas, *corners, self.colour, -1, cv2.LINE_8, _SHIFT)
        # A darker rim, so that it reads as an object rather than a hole in the scene.
        rim = tuple(0.6 * value for value in self.colour)
        cv2.rectangle(canvas, *corners, rim, 1, cv2.LINE_8, _SHIFT)
        cv2.rectangle(mask, *corners, 1, -1, cv2.LINE_8, _SHIFT)


def _sample_occluder(
    rng: np.random.Generator, stature: float, pelvis: np.ndarray, count: int
) -> _Occluder:
    """A post or panel that passes the figure's pelvis at a random frame, moving its own width
    in 1 to 2.5 frames: a point it passes is hidden for about that many frames."""
    if rng.random() < 0.5:  # a post
        size = stature * np.array([rng.uniform(0.08, 0.16), rng.uniform(0.6, 1.3)])
    else:  # a panel
        size = stature * rng.uniform([0.2, 0.2], [0.4, 0.45])
    speed = size[0] / rng.uniform(1.0, 2.5) * rng.choice([-1.0, 1.0])
    velocity = np.array([speed, rng.normal(0, 0.1 * abs(speed))])
    crossing = rng.uniform(0.15, 0.85) * (count - 1)
    passed = pelvis[round(crossing)] + [0.0, stature * rng.uniform(-0.35, 0.3)]
    return _Occluder(passed - velocity * crossing, velocity, size / 2, _random_colour(rng))


@dataclass(frozen=True)
class _Camera:
    """Exposure and optics held for a whole video; sensor noise is drawn per frame."""

    gain: float
    offset: float
    blur: float  # Gaussian sigma in pixels, 0 for none
    noise: float  # standard deviation, 0 for none


def _sample_camera(rng: np.random.Generator) -> _Camera:
    return _Camera(
        gain=float(rng.uniform(0.85, 1.15)),
        offset=float(rng.uniform(-15, 15)),
        blur=float(rng.uniform(0.5, 1.0)) if rng.random() < 0.2 else 0.0,
        noise=float(rng.uniform(2, 6)) if rng.random() < 0.35 else 0.0,
    )


def _expose(rng: np.random.Generator, canvas: np.ndarray, camera: _Camera) -> np.ndarray:
    image = canvas * np.float32(camera.gain) + np.float32(camera.offset)
    if camera.blur:
        image = cv2.GaussianBlur(image, (0, 0), camera.blur)
    if camera.noise:
        image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(camera.noise)
    np.clip(image, 0, 255, out=image)
    return np.rint(image, out=image).astype(np.uint8)


def _place(
    rng: np.random.Generator,
    poses: list[_Articulation],
    drift: np.ndarray,
    stature: float,
    width: int,
    height: int,
) -> np.ndarray:
    """(F, 2) the pelvis in each frame: the figure's extent centred, on average over the frames,
    near the frame's centre; ``drift`` (F, 2) is its motion in the frame (walk and pan)."""
    centres = []
    for articulation, shift in zip(poses, drift, strict=True):
        extent = np.array([(p[0], -p[1]) for p in articulation.points.values()]) * stature
        centres.append(0.5 * (extent.min(axis=0) + extent.max(axis=0)) + shift)
    target = rng.uniform([0.35 * width, 0.45 * height], [0.65 * width, 0.55 * height])
    pelvis = target - np.mean(centres, axis=0) + drift
    # A long walk is moved back so that the pelvis stays in the frame's central 80%.
    low, high = np.array([0.1 * width, 0.1 * height]), np.array([0.9 * width, 0.9 * height])
    return (
        pelvis
        + np.maximum(0.0, low - pelvis.min(axis=0))
        - np.maximum(0.0, pelvis.max(axis=0) - high)
    )


def _render_video(
    rng: np.random.Generator, spec: SyntheticVideoSpec, keypoint_names: Sequence[str]
) -> _Video:
    width, height = spec.image_width, spec.image_height
    count = int(rng.integers(spec.min_frames, spec.max_frames + 1))
    motion_name = MOTIONS[int(rng.integers(len(MOTIONS)))]
    build, outfit = _sample_build(rng), _sample_outfit(rng)
    stature = float(rng.uniform(spec.min_stature, spec.max_stature)) * height
    motion = _MOTION_MAKERS[motion_name](rng)
    camera_pitch = _clamp(rng.normal(5, 6), -10, 20)
    lean = _clamp(rng.normal(0, 4), -10, 10)

    # Pan: the scene moves by -pan * t pixels in frame t; the background is drawn large enough.
    pan = rng.uniform([-1.5, -0.5], [1.5, 0.5]) if rng.random() < spec.pan_prob else np.zeros(2)
    travel = np.abs(pan) * (count - 1)
    margin = np.ceil(travel).astype(int) + 1
    background, _ = _render_background(rng, width + int(margin[0]), height + int(margin[1]))
    origin = np.where(pan < 0, travel, 0.0)  # the view's top-left at frame 0, in the background

    # Articulate every frame first, then place the figure so its mean extent is near the centre.
    poses, walked = [], []
    for t in range(count):
        pose, yaw, distance = motion(t)
        body = _rot_z(lean) @ _rot_x(camera_pitch) @ _rot_y(yaw)
        poses.append(_articulate(build, pose, body))
        forward = body @ np.array([0.0, 0.0, 1.0])
        walked.append(distance * (build.thigh + build.shin) * np.array([forward[0], -forward[1]]))
    drift = stature * np.array(walked) - pan * np.arange(count)[:, None]
    pelvis = _place(rng, poses, drift, stature, width, height)
    occluder = (
        _sample_occluder(rng, stature, pelvis, count)
        if rng.random() < spec.occlusion_prob
        else None
    )
    exposure = _sample_camera(rng)

    frames, joints, visible, boxes = [], [], [], []
    for t, articulation in enumerate(poses):
        view = (origin + pan * t).tolist()
        shift = np.float32([[1, 0, -view[0]], [0, 1, -view[1]]])
        canvas = cv2.warpAffine(background, shift, (width, height), flags=cv2.INTER_LINEAR)
        canvas = canvas.astype(np.float32)
        figure = _figure_at(articulation, build, outfit, stature, pelvis[t])
        painting = _paint_figure(rng, figure, keypoint_names, width, height)
        canvas[painting.window][painting.mask] = painting.colours[painting.mask]
        rows, cols = painting.window
        boxes.append([cols.start, rows.start, cols.stop - 1, rows.stop - 1])
        covered = np.zeros((height, width), dtype=np.uint8)
        if occluder is not None:
            occluder.paint(canvas, covered, t)
        shown = ~painting.self_occluded
        for k, (x, y) in enumerate(painting.keypoints):
            inside = 0 <= x <= width - 1 and 0 <= y <= height - 1
            shown[k] &= inside and not covered[round(y), round(x)]
        frames.append(_expose(rng, canvas, exposure))
        joints.append(painting.keypoints)
        visible.append(shown)
    return _Video(
        motion=motion_name,
        view=_view(motion(0)[1]),
        frames=frames,
        joints=np.array(joints),
        visible=np.array(visible),
        boxes=np.array(boxes, dtype=np.float64),
    )


class SyntheticVideoDataset:
    """``data=synthetic_video``: the dataset description the datamodule asks to ``prepare()``.

    ``root`` is the cache folder (``data.root``); ``clip_length`` and ``clip_stride`` are
    `PennActionDataset`'s, the other arguments `SyntheticVideoSpec`'s. Every video is at least
    ``min_frames`` long, so clips may not be longer: no video is left out.
    """

    def __init__(
        self, root: str | Path, clip_length: int = 5, clip_stride: int = 1, **spec: Any
    ) -> None:
        self.root = Path(root)
        self.spec = SyntheticVideoSpec(**spec)
        if clip_length > self.spec.min_frames:
            raise ValueError(
                f"clip_length {clip_length} exceeds min_frames {self.spec.min_frames}: the "
                "shorter videos would be left out"
            )
        self.clip_length = clip_length
        self.clip_stride = clip_stride

    def prepare(self) -> tuple[PennActionSplit, PennActionSplit]:
        folder = ensure_synthetic_video(self.root, self.spec)
        return PennActionDataset(str(folder), self.clip_length, self.clip_stride).prepare()
