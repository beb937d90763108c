"""Leeds Sports Pose reader: the ``joints.mat`` of LSP and of LSP-extended.

Both files hold one array ``joints`` of 14 joints per image, in two layouts, told apart by the
shape (for 14 joints the two cannot be confused):

- ``original`` (LSP, 2,000 images ``images/im0001.jpg``...): shape (3, 14, N), rows x, y and a
  flag that is 1 for an OCCLUDED joint, although the README calls it a visibility flag (the
  common preparation code inverts it, ``1 - joints(3, :, :)``);
- ``extended`` (LSP-extended, 10,000 images ``images/im00001.jpg``...): shape (14, 3, N),
  columns x, y and a flag that is 1 for a visible joint.

LSP annotates a position for every joint, occluded or not: keypoints are flagged 2 (visible) or
1 (occluded), as COCO does. We could not confirm how LSP-extended marks a joint it has no
position for, so a joint whose coordinates are not finite, or lie at or beyond the image's
top-left corner on both axes (x <= 0 and y <= 0 in the file: the (0, 0) and (-1, -1)
placeholders), is unlabelled (flag 0); a position outside one image edge is kept.

One person per image: image id = annotation id = the image number (1-based, as in the file
name). Coordinates are Matlab's 1-based pixels; everything read here is in posesuite's 0-based
convention (pixel centres at integer coordinates) after subtracting 1.

The metric's ground truth of a split (`LspSplit.annotations`) is the joints.mat path with the
split's image range appended, ``/data/lsp/joints.mat#images=1001-2000`` (`ground_truth_reference`):
one string that says which entries are scored, so it survives the run's provenance file and the
command line (``posesuite-eval --gt``), and the range is written down once, in the data config.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from posesuite.data.ground_truth import KeypointGroundTruth
from posesuite.data.records import DataError, PersonRecord
from posesuite.data.sources.matlab import read_mat

log = logging.getLogger(__name__)

NUM_JOINTS = 14
LAYOUTS = ("original", "extended")
IMAGE_NAMES = {"original": "im{:04d}.jpg", "extended": "im{:05d}.jpg"}
# Joints are the centres of the joints: hands and feet reach past the wrists and ankles, so the
# person box is the joints' tight box grown by this share of its longer side on every side (a
# box about 1.1x the joints' extent, near MPII's person boxes around their joints); the crop's
# padding (x1.25, `TopDownTransform`) comes on top, as for every dataset.
BOX_MARGIN = 0.05
_RANGE = re.compile(r"^(?P<path>.+)#images=(?P<first>\d+)-(?P<last>\d+)$")


@dataclass(frozen=True)
class LspJoints:
    """Every image's joints of one joints.mat, in file order (entry n is image n + 1)."""

    path: Path
    layout: str
    joints: np.ndarray  # (N, K, 2) 0-based, zeros where unlabelled
    flags: np.ndarray  # (N, K) COCO visibility: 0 unlabelled, 1 occluded, 2 visible

    def __len__(self) -> int:
        return len(self.joints)


def ground_truth_reference(joints: str | Path, images: Sequence[int] | None) -> Path:
    """The ground truth of ``images`` (first, last; None: every image) of a joints.mat, as one
    path: ``joints.mat#images=FIRST-LAST`` (`split_image_range` reads it back)."""
    if images is None:
        return Path(joints)
    first, last = images
    return Path(f"{joints}#images={first}-{last}")


def split_image_range(reference: str | Path) -> tuple[Path, tuple[int, int] | None]:
    """The file and the image range of a ground-truth reference (`ground_truth_reference`)."""
    text = str(reference)
    match = _RANGE.match(text)
    if match is None:
        if "#images=" in text:
            raise DataError(
                f"{text}: the image range must read '#images=FIRST-LAST' "
                "(e.g. joints.mat#images=1001-2000)"
            )
        return Path(text), None
    return Path(match["path"]), (int(match["first"]), int(match["last"]))


def read_lsp_joints(
    path: str | Path, num_keypoints: int = NUM_JOINTS, layout: str | None = None
) -> LspJoints:
    """The joints of a joints.mat of either layout (decided from the shape; ``layout``, when
    given, must match it)."""
    path = Path(path)
    if layout is not None and layout not in LAYOUTS:
        raise DataError(f"{path}: layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    content = read_mat(path)
    expected = {"original": (3, num_keypoints), "extended": (num_keypoints, 3)}
    layouts = f"(3, {num_keypoints}, N) for LSP or ({num_keypoints}, 3, N) for LSP-extended"
    if "joints" not in content:
        raise DataError(f"{path}: no 'joints' array (LSP's joints.mat holds one, {layouts})")
    try:
        array = np.asarray(content["joints"], dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: 'joints' is not a numeric array ({layouts})") from None
    found = next((name for name, shape in expected.items() if array.shape[:2] == shape), None)
    if array.ndim != 3 or found is None or array.shape[2] == 0:
        raise DataError(f"{path}: 'joints' has shape {list(array.shape)}, expected {layouts}")
    if layout is not None and layout != found:
        raise DataError(
            f"{path}: layout={layout} expects 'joints' of shape {list(expected[layout])} + [N], "
            f"the file's is {list(array.shape)} (the {found} layout)"
        )
    if found == "original":
        points = array.transpose(2, 1, 0)  # (N, K, 3)
        visible_value = 0.0  # the flag marks occluded joints
    else:
        points = array.transpose(2, 0, 1)
        visible_value = 1.0
    coordinates, flag = points[..., :2], points[..., 2]
    placed = np.isfinite(coordinates).all(axis=2) & ~(coordinates <= 0).all(axis=2)
    bad_flag = placed & ~np.isin(flag, (0.0, 1.0))
    if bad_flag.any():
        entry, joint = np.argwhere(bad_flag)[0]
        raise DataError(
            f"{path}: image {entry + 1}, joint {joint}: visibility flag {flag[entry, joint]:g} "
            "is neither 0 nor 1"
        )
    flags = np.where(placed, np.where(flag == visible_value, 2, 1), 0).astype(np.int64)
    joints = np.where(placed[..., None], coordinates - 1.0, 0.0)
    return LspJoints(path=path, layout=found, joints=joints, flags=flags)


def joint_boxes(joints: np.ndarray, labelled: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """(N, 4) [x, y, w, h] boxes of (N, K, 2) 0-based joints, each grown by ``margin`` x its
    longer side on every side.

    The tight box's edges pass through the outermost labelled joints, in the box convention of
    `posesuite.data.geometry.box_to_center_scale` (centre = x + w / 2 - 0.5): x = the leftmost
    joint's x + 0.5, w = the joints' extent; so the crop is centred on the joints' middle.
    Entries with no labelled joint get an empty box at the origin.
    """
    inside = labelled[..., None]
    low = np.where(inside, joints, np.inf).min(axis=1)
    high = np.where(inside, joints, -np.inf).max(axis=1)
    empty = ~labelled.any(axis=1)
    low[empty], high[empty] = 0.0, 0.0
    size = high - low
    grow = margin * size.max(axis=1, keepdims=True)
    return np.concatenate([low + 0.5 - grow, size + 2 * grow], axis=1)


def _check_range(images: Sequence[int], count: int, path: Path) -> tuple[int, int]:
    try:
        first, last = (int(v) for v in images)
    except (TypeError, ValueError):
        raise DataError(
            f"{path}: an image range is [first, last] image numbers, got {images!r}"
        ) from None
    if not 1 <= first <= last <= count:
        raise DataError(
            f"{path}: image range {first}-{last} is not within the file's images 1-{count}"
        )
    return first, last


def read_lsp_people(
    path: str | Path,
    image_dir: str | Path,
    num_keypoints: int = NUM_JOINTS,
    images: Sequence[int] | None = None,
    layout: str | None = None,
    box_margin: float = BOX_MARGIN,
) -> list[PersonRecord]:
    """One record per image of ``images`` (first, last image numbers; None: all); the box is
    the labelled joints' box grown by ``box_margin`` (`BOX_MARGIN`). An image whose labelled
    joints are fewer than two distinct points gives no crop and is left out, with a warning."""
    content = read_lsp_joints(path, num_keypoints, layout)
    first, last = _check_range(images or (1, len(content)), len(content), content.path)
    image_dir = Path(image_dir)
    numbers = range(first, last + 1)
    names = {n: image_dir / IMAGE_NAMES[content.layout].format(n) for n in numbers}
    missing = [file for file in names.values() if not file.is_file()]
    if missing:
        shown = ", ".join(str(file) for file in missing[:5])
        raise DataError(f"{content.path}: {len(missing)} image file(s) missing, e.g. {shown}")
    entries = np.arange(first - 1, last)
    labelled = content.flags[entries] > 0
    boxes = joint_boxes(content.joints[entries], labelled, box_margin)
    records, left_out = [], []
    for number, entry, box in zip(numbers, entries, boxes, strict=True):
        if box[2] <= 0 and box[3] <= 0:
            left_out.append(number)
            continue
        keypoints = np.concatenate(
            [content.joints[entry], content.flags[entry, :, None]], axis=1
        ).astype(np.float32)
        records.append(
            PersonRecord(
                image_id=number,
                frames=(str(names[number]),),
                bbox=box,
                keypoints=keypoints,
                annotation_id=number,
                area=float(box[2] * box[3]),
            )
        )
    if left_out:
        log.warning(
            "%s: %d image(s) without two distinct labelled joints give no crop, e.g. image %d",
            content.path,
            len(left_out),
            left_out[0],
        )
    if not records:
        raise DataError(f"{content.path}: images {first}-{last}: none has a person box")
    return records


def read_lsp_ground_truth(
    path: str | Path,
    num_keypoints: int = NUM_JOINTS,
    images: Sequence[int] | None = None,
    layout: str | None = None,
) -> KeypointGroundTruth:
    """The ground truth of ``images`` (first, last image numbers; None: all) of a joints.mat:
    every annotated joint is labelled, occluded ones too (LSP's PCK scores them), and the boxes
    are the joints' tight boxes (`joint_boxes`, no margin). Its ``path`` is the reference
    (`ground_truth_reference`), so messages name the range; ``path`` may be such a reference
    itself (`LspSplit.annotations`)."""
    path, named = split_image_range(path)
    if named is not None and images is not None and tuple(images) != named:
        raise DataError(f"{path}: images {list(images)} given for the reference of {list(named)}")
    images = images if images is not None else named
    content = read_lsp_joints(path, num_keypoints, layout)
    first, last = _check_range(images or (1, len(content)), len(content), content.path)
    entries = np.arange(first - 1, last)
    labelled = content.flags[entries] > 0
    joints = content.joints[entries]
    numbers = entries + 1
    return KeypointGroundTruth(
        path=ground_truth_reference(content.path, None if images is None else (first, last)),
        image_ids=numbers.astype(np.int64),
        annotation_ids=numbers.astype(np.int64),
        joints=joints,
        labelled=labelled,
        boxes=joint_boxes(joints, labelled),
    )


def _image_range(value: Any, name: str) -> tuple[int, int]:
    try:
        first, last = (int(v) for v in value)
    except (TypeError, ValueError):
        raise DataError(f"data.dataset.{name} must be [first, last], got {value!r}") from None
    return first, last


@dataclass(frozen=True)
class LspSplit:
    """One split of LSP (`posesuite.data.records.Split`): the images ``image_range`` (first,
    last) of ``joints``; the metric's ground truth (``annotations``) is that file restricted to
    the range (`ground_truth_reference`), so a validation split scores only its own images."""

    joints: Path
    images: Path
    image_range: tuple[int, int]
    layout: str | None = None
    box_margin: float = BOX_MARGIN
    detections: Path | None = None

    @property
    def annotations(self) -> Path:
        return ground_truth_reference(self.joints, self.image_range)

    def read_people(self, num_keypoints: int) -> list[PersonRecord]:
        return read_lsp_people(
            self.joints, self.images, num_keypoints, self.image_range, self.layout, self.box_margin
        )


@dataclass(frozen=True)
class LspDataset:
    """LSP or LSP-extended as distributed (``data=lsp data.root=/path``): ``joints.mat`` and
    ``images/``, paths relative to ``root`` unless absolute.

    The standard LSP split: images 1-1000 train, 1001-2000 test (``val_images``). For
    LSP-extended (10,000 images, usually all for training) set both ranges. ``layout``
    (``original`` | ``extended``) asserts the file's layout; None takes it from the shape.
    """

    root: str
    joints: str = "joints.mat"
    images: str = "images"
    train_images: Sequence[int] = (1, 1000)
    val_images: Sequence[int] = (1001, 2000)
    layout: str | None = None
    box_margin: float = BOX_MARGIN

    def prepare(self) -> tuple[LspSplit, LspSplit]:
        root = Path(self.root).expanduser()

        def path(p: str) -> Path:
            return Path(p) if Path(p).is_absolute() else root / p

        if self.layout is not None and self.layout not in LAYOUTS:
            raise DataError(
                f"data.dataset.layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}"
            )
        joints, images = path(self.joints), path(self.images)
        train = _image_range(self.train_images, "train_images")
        val = _image_range(self.val_images, "val_images")
        return (
            LspSplit(joints, images, train, self.layout, self.box_margin),
            LspSplit(joints, images, val, self.layout, self.box_margin),
        )
