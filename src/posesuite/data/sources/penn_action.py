"""Penn Action reader: per-video label files, read as clips of T consecutive frames.

The dataset's layout (``data=penn_action data.root=/path``)::

    root/frames/NNNN/000001.jpg, 000002.jpg, ...   NNNN: the 4-digit video number
    root/labels/NNNN.mat                           one scipy.io.loadmat-able file per video

A label file holds ``x``, ``y`` (nframes, 13), ``visibility`` (nframes, 13; 1 visible),
``bbox`` (nframes, 4: x1, y1, x2, y2), ``train`` (1 train, -1 test), ``nframes``,
``dimensions`` ([H, W, nframes]), ``action`` and ``pose``; only the first five are read.

Coordinates: taken to be Matlab's 1-based pixel coordinates (the top-left pixel's centre at
(1, 1)), as MPII's files are. That is an assumption: the dataset does not document it. One is
subtracted from every coordinate, joints and boxes, to posesuite's 0-based convention (pixel
centres on integers).

Records are clips (`PersonRecord` with T = ``clip_length`` frames, one crop for the whole clip
from the union of its frames' boxes). Training clips start every ``clip_stride`` frames;
evaluation clips cover every frame of a video exactly, with non-overlapping windows and the last
one aligned to the video's end (so it may overlap the one before; the metric counts each frame
once, keeping the highest-scored prediction). Videos shorter than a clip are left out (one log
line says how many). A frame's image id is ``video * 10000 + frame number`` (1-based), a
record's ``annotation_id`` its video number (the one person of a video).

Which joints count: Penn Action gives every joint a position, ``visibility`` only says whether it
is seen. A joint is *annotated* where it is visible, or where its position is finite and inside
the frame (``dimensions``, when the file has it; else x, y >= 1): flagged 2 when visible, 1
(occluded, COCO's convention) when not, and 0 (unlabelled) outside the frame. Annotated joints
are trained and scored, as the released UniPose-LSTM code does (its targets and its PCK take
every joint in the frame, whatever its visibility); ``read_penn_action_ground_truth(...,
scored="visible")`` scores the visible ones alone.
"""

from __future__ import annotations

import itertools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posesuite.data.ground_truth import KeypointGroundTruth
from posesuite.data.records import DataError, PersonRecord
from posesuite.data.sources.matlab import read_mat

log = logging.getLogger(__name__)

# A frame's image id is video * FRAME_ID_BASE + frame number, so videos must be shorter.
FRAME_ID_BASE = 10000
_FIELDS = ("x", "y", "visibility", "bbox", "train")


@dataclass(frozen=True)
class PennVideo:
    """One video's labels in 0-based pixel coordinates."""

    number: int
    label_file: Path
    training: bool
    joints: np.ndarray  # (F, K, 2), zeros where not annotated
    visible: np.ndarray  # (F, K) bool
    annotated: np.ndarray  # (F, K) bool: visible, or at a position inside the frame
    boxes: np.ndarray  # (F, 4) x1, y1, x2, y2

    @property
    def num_frames(self) -> int:
        return len(self.joints)

    @property
    def frame_ids(self) -> np.ndarray:
        """(F,) the image id of each frame."""
        return self.number * FRAME_ID_BASE + np.arange(1, self.num_frames + 1, dtype=np.int64)


def read_penn_action_video(label_file: str | Path, num_keypoints: int = 13) -> PennVideo:
    """The labels of one video from its ``NNNN.mat``."""
    path = Path(label_file)
    number = _video_number(path)
    where = f"{path} (video {number})"
    content = read_mat(path)
    missing = [name for name in _FIELDS if name not in content]
    if missing:
        raise DataError(
            f"{where}: lacks {', '.join(missing)} (Penn Action's label layout: x, y, visibility "
            "(nframes, 13), bbox (nframes, 4), train 1 | -1)"
        )
    try:
        x, y, visibility, boxes = (
            np.asarray(content[name], dtype=np.float64) for name in ("x", "y", "visibility", "bbox")
        )
        train = np.ravel(content["train"]).astype(np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(
            f"{where}: x, y, visibility, bbox and train must be numbers ({err})"
        ) from None
    frames = len(x) if x.ndim == 2 else -1
    expected = (frames, num_keypoints)
    if x.shape != expected or y.shape != expected or visibility.shape != expected:
        raise DataError(
            f"{where}: x {list(x.shape)}, y {list(y.shape)}, visibility {list(visibility.shape)}: "
            f"expected [nframes, {num_keypoints}] each"
        )
    if boxes.shape != (frames, 4):
        raise DataError(
            f"{where}: bbox {list(boxes.shape)}, expected [{frames}, 4] (one per frame)"
        )
    if "nframes" in content and np.ravel(content["nframes"]).tolist() != [frames]:
        raise DataError(
            f"{where}: nframes is {np.ravel(content['nframes']).tolist()}, the labels {frames}"
        )
    if not 0 < frames < FRAME_ID_BASE:
        raise DataError(f"{where}: {frames} frames; a video needs 1 to {FRAME_ID_BASE - 1}")
    if train.tolist() not in ([1.0], [-1.0]):
        raise DataError(f"{where}: train is {train.tolist()}, expected 1 (train) or -1 (test)")
    bad = ~np.isin(visibility, (0.0, 1.0))
    if bad.any():
        frame, joint = np.argwhere(bad)[0]
        raise DataError(
            f"{where}: frame {frame + 1}, joint {joint}: visibility "
            f"{float(visibility[frame, joint]):g}, expected 0 or 1"
        )
    visible = visibility == 1.0
    joints = np.stack([x, y], axis=2)
    bad = visible & ~np.isfinite(joints).all(axis=2)
    if bad.any():
        frame, joint = np.argwhere(bad)[0]
        raise DataError(
            f"{where}: frame {frame + 1}, joint {joint}: visible, but not at a finite x, y"
        )
    bad = (
        ~np.isfinite(boxes).all(axis=1) | (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    )
    if bad.any():
        frame = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{where}: frame {frame + 1}: bbox {boxes[frame].tolist()} is not a box "
            "(x1, y1, x2, y2)"
        )
    # Matlab's 1-based frame: pixel centres from (1, 1) to (W, H).
    width, height = np.inf, np.inf
    if "dimensions" in content and np.size(content["dimensions"]) >= 2:
        height, width = (float(v) for v in np.ravel(content["dimensions"])[:2])
    with np.errstate(invalid="ignore"):
        inside = (
            (joints[..., 0] >= 1.0)
            & (joints[..., 1] >= 1.0)
            & (joints[..., 0] <= width)
            & (joints[..., 1] <= height)
        )
    annotated = visible | inside
    return PennVideo(
        number=number,
        label_file=path,
        training=bool(train[0] == 1.0),
        joints=np.where(annotated[..., None], joints - 1.0, 0.0),
        visible=visible,
        annotated=annotated,
        boxes=boxes - 1.0,
    )


def _video_number(path: Path) -> int:
    if not path.stem.isdigit():
        raise DataError(f"{path}: a label file is named by its video number (NNNN.mat)")
    return int(path.stem)


def _labels_dir(path: Path) -> Path:
    """The labels folder of a dataset root, or the folder itself."""
    if (path / "labels").is_dir():
        return path / "labels"
    if path.is_dir():
        return path
    raise DataError(
        f"Penn Action labels not found at {path}: expected the dataset root (with labels/ and "
        "frames/) or its labels/ folder"
    )


def read_penn_action_videos(path: str | Path, num_keypoints: int = 13) -> list[PennVideo]:
    """Every video's labels, in video-number order; ``path`` is the dataset root or labels/."""
    labels = _labels_dir(Path(path))
    videos = sorted(
        (read_penn_action_video(file, num_keypoints) for file in labels.glob("*.mat")),
        key=lambda video: video.number,
    )
    if not videos:
        raise DataError(f"{labels}: no label files (NNNN.mat)")
    for earlier, later in itertools.pairwise(videos):
        if earlier.number == later.number:
            raise DataError(
                f"{earlier.label_file} and {later.label_file} both label video {later.number}"
            )
    return videos


SCORED_JOINTS = ("annotated", "visible")


def read_penn_action_ground_truth(
    path: str | Path, num_keypoints: int = 13, scored: str = "annotated"
) -> KeypointGroundTruth:
    """Every frame of the test videos (``train`` -1): one entry per frame keyed by its image id
    and the video number, ``boxes`` the frame's bbox as [x, y, w, h] (0-based x, y), ``labelled``
    the joints ``scored``: ``annotated`` (every joint in the frame, seen or not, as the released
    UniPose-LSTM evaluation) or ``visible``. ``path``: the dataset root or its labels/ folder."""
    if scored not in SCORED_JOINTS:
        raise ValueError(f"scored must be one of {', '.join(SCORED_JOINTS)}, got {scored!r}")
    path = Path(path)
    videos = [video for video in read_penn_action_videos(path, num_keypoints) if not video.training]
    if not videos:
        raise DataError(f"{path}: no test videos (label files with train = -1)")
    boxes = np.concatenate([video.boxes for video in videos])
    return KeypointGroundTruth(
        path=path,
        image_ids=np.concatenate([video.frame_ids for video in videos]),
        annotation_ids=np.concatenate(
            [np.full(video.num_frames, video.number, dtype=np.int64) for video in videos]
        ),
        joints=np.concatenate([video.joints for video in videos]),
        labelled=np.concatenate(
            [video.annotated if scored == "annotated" else video.visible for video in videos]
        ),
        boxes=np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1),
    )


def clip_starts(num_frames: int, clip_length: int, stride: int | None) -> list[int]:
    """The first frame (0-based) of each clip of a video; none for a video shorter than a clip.

    With a ``stride`` (training): every ``stride`` frames while a whole clip fits. Without
    (evaluation): non-overlapping clips over every frame, the last one aligned to the video's
    end, so that every frame is predicted.
    """
    if num_frames < clip_length:
        return []
    last = num_frames - clip_length
    if stride is not None:
        return list(range(0, last + 1, stride))
    starts = list(range(0, last + 1, clip_length))
    if starts[-1] != last:
        starts.append(last)
    return starts


def video_clips(
    video: PennVideo, frame_paths: list[str], clip_length: int, stride: int | None
) -> list[PersonRecord]:
    """The clip records of one video (`clip_starts`); ``frame_paths`` are its F frames' files."""
    flags = np.select([video.visible, video.annotated], [2.0, 1.0], 0.0)[..., None]
    keypoints = np.concatenate([video.joints, flags], axis=2).astype(np.float32)
    frame_ids = video.frame_ids.tolist()
    records = []
    for start in clip_starts(video.num_frames, clip_length, stride):
        window = slice(start, start + clip_length)
        corners = video.boxes[window]
        low, high = corners[:, :2].min(axis=0), corners[:, 2:].max(axis=0)
        # Records' boxes are COCO-style: the edges of pixel-centre coordinates are half a pixel
        # out, so that box_to_center_scale finds the union box's centre.
        bbox = np.concatenate([low + 0.5, high - low])
        records.append(
            PersonRecord(
                image_id=frame_ids[window][-1],
                frames=tuple(frame_paths[window]),
                bbox=bbox,
                keypoints=keypoints[window],
                annotation_id=video.number,
                area=float(bbox[2] * bbox[3]),
                frame_ids=tuple(frame_ids[window]),
            )
        )
    return records


@dataclass(frozen=True)
class PennActionSplit:
    """The train (``training``) or test videos of a Penn Action root
    (`posesuite.data.records.Split`), as clips of ``clip_length`` frames: training clips start
    every ``clip_stride`` frames, test clips cover every frame once (`clip_starts`).

    ``annotations`` is the root itself: the metric reads the test videos' frames from it
    (`read_penn_action_ground_truth`).
    """

    root: Path
    training: bool
    clip_length: int = 5
    clip_stride: int = 1
    detections: Path | None = None

    @property
    def annotations(self) -> Path:
        return self.root

    @property
    def images(self) -> Path:
        return self.root / "frames"

    def read_people(self, num_keypoints: int) -> list[PersonRecord]:
        split = "train" if self.training else "test"
        videos = [
            video
            for video in read_penn_action_videos(self.root, num_keypoints)
            if video.training == self.training
        ]
        kept = [video for video in videos if video.num_frames >= self.clip_length]
        if len(kept) < len(videos):
            log.info(
                "Penn Action %s: %d of %d %s videos are shorter than a clip of %d frames and are "
                "left out",
                self.root,
                len(videos) - len(kept),
                len(videos),
                split,
                self.clip_length,
            )
        if not kept:
            raise DataError(
                f"{self.root}: no {split} videos of at least {self.clip_length} frames "
                f"({len(videos)} {split} videos)"
            )
        stride = self.clip_stride if self.training else None
        records, missing = [], []
        for video in kept:
            paths = self._frame_paths(video, missing)
            records.extend(video_clips(video, paths, self.clip_length, stride))
        if missing:
            raise DataError(
                f"{self.images}: {len(missing)} frame file(s) of labelled frames missing, "
                f"e.g. {', '.join(missing[:5])}"
            )
        return records

    def _frame_paths(self, video: PennVideo, missing: list[str]) -> list[str]:
        """The video's frame files; those not on disk are added to ``missing``."""
        folder = self.images / video.label_file.stem
        present = set(os.listdir(folder)) if folder.is_dir() else set()
        names = [f"{frame:06d}.jpg" for frame in range(1, video.num_frames + 1)]
        missing.extend(
            f"{folder / name} (video {video.number}, frame {index + 1})"
            for index, name in enumerate(names)
            if name not in present
        )
        return [str(folder / name) for name in names]


@dataclass(frozen=True)
class PennActionDataset:
    """Penn Action under ``root`` (labels/ and frames/, see the module docstring), as clips of
    ``clip_length`` consecutive frames; training clips start every ``clip_stride`` frames."""

    root: str
    clip_length: int = 5
    clip_stride: int = 1

    def __post_init__(self) -> None:
        if self.clip_length < 1 or self.clip_stride < 1:
            raise ValueError("Penn Action clips need clip_length >= 1 and clip_stride >= 1")

    def prepare(self) -> tuple[PennActionSplit, PennActionSplit]:
        root = Path(self.root).expanduser()
        if not (root / "labels").is_dir():
            raise DataError(
                f"{root / 'labels'}: not found (Penn Action's layout: root/labels/NNNN.mat, "
                "root/frames/NNNN/000001.jpg, ...)"
            )
        return (
            PennActionSplit(root, True, self.clip_length, self.clip_stride),
            PennActionSplit(root, False, self.clip_length, self.clip_stride),
        )
