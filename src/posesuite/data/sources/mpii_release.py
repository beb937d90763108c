"""MPII Human Pose's official annotation file, ``mpii_human_pose_v1_u12_1.mat`` (RELEASE).

The file holds one Matlab struct, ``RELEASE`` (MPII's README, "Annotation description"):

- ``annolist(i)``, image i: ``image.name`` (the file name), ``annorect(r)`` (its people: ``x1, y1,
  x2, y2``, the head box; ``scale``, the person's height / 200 px; ``objpos.x``, ``objpos.y``, a
  rough position; ``annopoints.point(j)``, the joints: ``id`` (0-15, MPII's joint ids, the order
  of conf/skeleton/mpii16.yaml), ``x``, ``y``, ``is_visible``), ``frame_sec``, ``vididx``;
- ``img_train(i)``: 1 for a training image, 0 for a test image (MPII withholds their joints);
- ``single_person``, ``act``, ``video_list``.

Only ``image.name``, ``annorect`` and ``img_train`` are read. The common json form (`mpii`)
descends from pose-hg-train's conversion of this file, whose ``center`` and ``scale`` are
``objpos`` and ``scale``: the records here get the json form's boxes from them
(`posesuite.data.sources.mpii.person_box`).

``scipy.io.loadmat(squeeze_me=True, struct_as_record=False)`` gives ``mat_struct`` objects whose
fields take several forms: a struct array (or a cell) of one element is the element itself, a
field empty for one element (Matlab's ``[]``) is an empty array, a field no element has is
absent, and ``is_visible`` is a number, a one-character string (``'1'``) or empty. `_items` and
`_number` read each form.

People: a person is annotated for pose when it has a joint and a position (``objpos`` and
``scale``); the others (people MPII did not annotate, and every person of a test image) give no
record of a train or val split. A test split's records are the test people with a position
(crops to predict), with every keypoint flagged 0. Every annotated person counts, not only the
``single_person`` ones, as in the common json form.

Keypoints: flag 2 for ``is_visible`` 1, 1 for ``is_visible`` 0 (annotated, occluded), 2 where
``is_visible`` is empty (pose-hg-train's reading of this file takes such a joint for visible),
0 for a joint the person does not list. Coordinates are Matlab's 1-based pixels and are read in
posesuite's 0-based convention (subtract 1), as `posesuite.data.sources.mpii` does.

Ids: ``image_id`` is the digits of the file name (`posesuite.data.sources.mpii.image_id_of`);
``annotation_id`` is the person's position in its split (images in ``annolist`` order, people
in ``annorect`` order): what `read_mpii_release_ground_truth` of the same split is indexed by,
as the json form's ids are positions in its file, so the PCKh metric matches predictions to its
people. One file and one split always give the same ids; the same person has other ids in
other splits. Messages name a person by its 0-based place, ``annolist[i]``, ``annorect[r]``.

Splits: ``train`` and ``test`` are the ``img_train`` 1 and 0 images; the benchmark's test joints
are not public, so a validation split (``val``) is held out of the training images
(`HoldOut`), and ``train`` with a hold-out is the rest. The metric's ground truth of a split is
one path, the file with the split appended (`release_reference`), as LSP's image ranges are.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import numpy as np
from scipy.io import whosmat
from scipy.io.matlab import mat_struct

from posesuite.data.records import DataError, PersonRecord
from posesuite.data.sources.matlab import read_mat
from posesuite.data.sources.mpii import MpiiGroundTruth, image_id_of, person_box

log = logging.getLogger(__name__)

NUM_JOINTS = 16
RELEASE_NAME = "mpii_human_pose_v1_u12_1.mat"
SUBSETS = ("train", "val", "test")
# A ground-truth reference's selection starts so (`release_reference`).
_SELECTION = "#subset="
_REFERENCE_KEYS = {"subset", "val_fraction", "val_seed", "val_images"}
_HEAD_BOX_FIELDS = ("x1", "y1", "x2", "y2")


@dataclass(frozen=True)
class HoldOut:
    """The validation images held out of the release's training images.

    ``images`` (a text file, one image name a line) lists them: the reference code's validation
    set is such a fixed list of training images. Without it, a training image is held out when
    a hash of (``seed``, its name) falls below ``fraction`` (`is_held_out`): the same images on
    every machine and version (no random stream), whole images (all of an image's people fall
    on one side), and an image's side does not depend on the others in the file. ``fraction``
    and ``seed`` are unused when ``images`` is given.
    """

    fraction: float = 0.1
    seed: int = 0
    images: Path | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction < 1.0:
            raise DataError(f"the val fraction must lie in (0, 1), got {self.fraction!r}")


def is_held_out(name: str, fraction: float, seed: int) -> bool:
    """Whether `HoldOut`'s seeded rule holds the image ``name`` out for validation."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < fraction * 2.0**64


def release_reference(release: str | Path, subset: str, hold_out: HoldOut | None = None) -> Path:
    """A split of the release file as one path: ``<release>#subset=val&val_fraction=0.1&
    val_seed=0``, or ``...&val_images=<the list's path, percent-encoded>``
    (`parse_release_reference` reads it back), so the split survives the run's provenance file
    and the command line (``posesuite-eval --gt``)."""
    query = {"subset": subset}
    if hold_out is not None and hold_out.images is not None:
        query["val_images"] = str(hold_out.images)
    elif hold_out is not None:
        query["val_fraction"] = repr(hold_out.fraction)
        query["val_seed"] = str(hold_out.seed)
    # safe="" encodes the list's slashes, which pathlib would otherwise normalise.
    return Path(f"{release}#{urlencode(query, safe='', quote_via=quote)}")


def parse_release_reference(reference: str | Path) -> tuple[Path, str | None, HoldOut | None]:
    """The file, the subset and the hold-out a reference names (`release_reference`); a plain
    path names no subset."""
    text = str(reference)
    cut = text.rfind(_SELECTION)
    if cut < 0:
        return Path(text), None, None
    file = Path(text[:cut])
    try:
        fields = dict(parse_qsl(text[cut + 1 :], strict_parsing=True))
    except ValueError:
        fields = {}
    unknown = set(fields) - _REFERENCE_KEYS
    if "subset" not in fields or unknown:
        raise DataError(
            f"{text}: a split of the release reads '#subset=SUBSET' with optional val_fraction "
            "and val_seed, or val_images (see mpii_release.release_reference)"
        )
    if "val_images" in fields:
        return file, fields["subset"], HoldOut(images=Path(fields["val_images"]))
    if "val_fraction" not in fields:
        return file, fields["subset"], None
    try:
        hold_out = HoldOut(float(fields["val_fraction"]), int(fields.get("val_seed", "0")))
    except ValueError:
        raise DataError(f"{text}: val_fraction must be a number and val_seed an integer") from None
    return file, fields["subset"], hold_out


def is_mpii_release(path: str | Path) -> bool:
    """Whether ``path`` is the release file: a reference to one of its splits, or a ``.mat``
    file that holds a ``RELEASE`` struct (the dispatch of
    `posesuite.data.sources.mpii.read_mpii_ground_truth`)."""
    text = str(path)
    if _SELECTION in text:
        return True
    file = Path(text)
    if file.suffix.lower() != ".mat" or not file.is_file():
        return False
    try:
        return any(name == "RELEASE" for name, _, _ in whosmat(str(file)))
    except Exception:  # not a readable .mat: the caller's own reader names the problem
        return False


@dataclass(frozen=True)
class _Person:
    index: int  # place in the image's annorect, 0-based
    center: np.ndarray | None  # objpos, 0-based
    scale: float | None
    joints: np.ndarray  # (16, 2) 0-based, zeros where not annotated
    flags: np.ndarray  # (16,) 0 not annotated, 1 occluded, 2 visible
    head_box: np.ndarray | None  # (2, 2) [corner, xy], 0-based


@dataclass(frozen=True)
class _Image:
    index: int  # place in annolist, 0-based
    name: str
    train: bool
    people: tuple[_Person, ...]


def _items(value: Any) -> list[Any]:
    """The elements of a loaded struct array, cell or numeric array: loadmat gives one element
    as the element itself, and an empty field as an empty array."""
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return list(value.ravel())
    return [value]


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, np.ndarray) and value.size == 0)


def _number(value: Any, what: str, where: str) -> float | None:
    """One number of a loaded field, or None where the field is absent or empty; a string that
    spells a number (some ``is_visible`` are ``'1'``) is read as that number."""
    if _is_empty(value):
        return None
    array = np.asarray(value)
    if array.size != 1:
        raise DataError(f"{where}: {what} must be one number, got {array.size} values")
    item = array.item()
    if isinstance(item, str) and not item.strip():
        return None
    try:
        return float(item)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {what} must be a number, got {item!r}") from None


def _frozen(array: np.ndarray) -> np.ndarray:
    # Parsed files are shared through the cache (`_parsed_release`): nobody may change them.
    array.setflags(write=False)
    return array


def _read_point(point: Any, where: str, joints: np.ndarray, flags: np.ndarray) -> None:
    if not isinstance(point, mat_struct):
        raise DataError(f"{where}: annopoints.point holds a {type(point).__name__}, not a point")
    joint = _number(getattr(point, "id", None), "a point's id", where)
    if joint is None or not np.isfinite(joint) or joint != round(joint):
        raise DataError(f"{where}: a point's id is {joint!r}, not a joint id")
    if not 0 <= joint < NUM_JOINTS:
        raise DataError(f"{where}: joint id {joint:g} is not one of MPII's 0-{NUM_JOINTS - 1}")
    joint = int(joint)
    where = f"{where}, joint id {joint}"
    if flags[joint]:
        raise DataError(f"{where}: annotated twice")
    x = _number(getattr(point, "x", None), "x", where)
    y = _number(getattr(point, "y", None), "y", where)
    if x is None or y is None or not np.isfinite([x, y]).all():
        raise DataError(f"{where}: needs a finite x and y, got x={x!r}, y={y!r}")
    visible = _number(getattr(point, "is_visible", None), "is_visible", where)
    if visible not in (None, 0.0, 1.0):
        raise DataError(f"{where}: is_visible must be 0, 1 or empty, got {visible:g}")
    joints[joint] = (x - 1.0, y - 1.0)
    flags[joint] = 1 if visible == 0.0 else 2


def _parse_person(rect: Any, index: int, where: str) -> _Person:
    if not isinstance(rect, mat_struct):
        raise DataError(f"{where}: annorect holds a {type(rect).__name__}, not a person struct")
    objpos = getattr(rect, "objpos", None)
    center = None
    if isinstance(objpos, mat_struct):
        x = _number(getattr(objpos, "x", None), "objpos.x", where)
        y = _number(getattr(objpos, "y", None), "objpos.y", where)
        if x is not None and y is not None:
            center = _frozen(np.array([x, y]) - 1.0)
    elif not _is_empty(objpos):
        raise DataError(f"{where}: objpos must be a struct with x and y")
    corners = [_number(getattr(rect, name, None), name, where) for name in _HEAD_BOX_FIELDS]
    head_box = None
    if all(value is not None for value in corners):
        head_box = _frozen(np.array(corners, dtype=np.float64).reshape(2, 2) - 1.0)
    joints = np.zeros((NUM_JOINTS, 2))
    flags = np.zeros(NUM_JOINTS, dtype=np.int64)
    annopoints = getattr(rect, "annopoints", None)
    if isinstance(annopoints, mat_struct):
        for point in _items(getattr(annopoints, "point", None)):
            _read_point(point, where, joints, flags)
    elif not _is_empty(annopoints):
        raise DataError(f"{where}: annopoints must be a struct with the points")
    return _Person(
        index=index,
        center=center,
        scale=_number(getattr(rect, "scale", None), "scale", where),
        joints=_frozen(joints),
        flags=_frozen(flags),
        head_box=head_box,
    )


def _parse_image(entry: Any, index: int, train: bool, path: Path) -> _Image:
    where = f"{path}: annolist[{index}]"
    if not isinstance(entry, mat_struct):
        raise DataError(f"{where}: holds a {type(entry).__name__}, not an image struct")
    image = getattr(entry, "image", None)
    name = getattr(image, "name", None) if isinstance(image, mat_struct) else None
    if not isinstance(name, str) or not name:
        raise DataError(f"{where}: needs image.name, the image's file name")
    where = f"{where} ({name})"
    rects = _items(getattr(entry, "annorect", None))
    people = tuple(
        _parse_person(rect, r, f"{where}, annorect[{r}]") for r, rect in enumerate(rects)
    )
    return _Image(index=index, name=name, train=train, people=people)


@lru_cache(maxsize=2)
def _parsed_release(path: Path, mtime_ns: int, size: int) -> tuple[_Image, ...]:
    # Keyed by the file's version: the train and val splits and the metric each read the file
    # (25k images, seconds to parse): parsed once per run instead of three times.
    content = read_mat(path, squeeze_me=True, struct_as_record=False)
    release = content.get("RELEASE")
    if not isinstance(release, mat_struct):
        found = ", ".join(k for k in content if not k.startswith("__")) or "nothing"
        raise DataError(
            f"{path}: no RELEASE struct (MPII's {RELEASE_NAME} keeps its annotations in one); "
            f"the file holds {found}"
        )
    annolist = _items(getattr(release, "annolist", None))
    try:
        train = np.asarray(_items(getattr(release, "img_train", None)), dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: RELEASE.img_train must be numbers (1 train, 0 test)") from None
    if not annolist:
        raise DataError(f"{path}: RELEASE.annolist holds no images")
    if train.shape != (len(annolist),):
        raise DataError(
            f"{path}: RELEASE.annolist has {len(annolist)} images and img_train {train.size} "
            "flags: one flag per image"
        )
    bad = ~np.isin(train, (0.0, 1.0))
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: annolist[{index}]: img_train is {train[index]:g}, not 1 (train) or 0 (test)"
        )
    return tuple(_parse_image(entry, i, bool(train[i]), path) for i, entry in enumerate(annolist))


def _read_release(path: Path) -> tuple[_Image, ...]:
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    stat = path.stat()
    return _parsed_release(path, stat.st_mtime_ns, stat.st_size)


def _listed_images(file: Path) -> frozenset[str]:
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise DataError(f"file not found: {file}") from None
    names = frozenset(line.strip() for line in text.splitlines() if line.strip())
    if not names:
        raise DataError(f"{file}: lists no image names (one a line)")
    return names


def _held_out_names(images: list[_Image], hold_out: HoldOut, path: Path) -> frozenset[str]:
    """The names of the training ``images`` that ``hold_out`` sets aside."""
    if hold_out.images is None:
        return frozenset(
            image.name
            for image in images
            if is_held_out(image.name, hold_out.fraction, hold_out.seed)
        )
    listed = _listed_images(hold_out.images)
    unknown = sorted(listed - {image.name for image in images})
    if unknown:
        raise DataError(
            f"{hold_out.images}: {len(unknown)} listed image(s) are not training images of "
            f"{path}, e.g. {', '.join(unknown[:5])}"
        )
    return listed


def _select(path: Path, subset: str, hold_out: HoldOut | None) -> list[tuple[_Image, _Person]]:
    """The split's people, in file order (their annotation ids)."""
    if subset not in SUBSETS:
        raise DataError(f"{path}: subset must be one of {', '.join(SUBSETS)}, got {subset!r}")
    if subset == "val" and hold_out is None:
        raise DataError(f"{path}: subset val is held out of the training images: give a HoldOut")
    if subset == "test" and hold_out is not None:
        raise DataError(f"{path}: the hold-out splits the training images, not the test images")
    images = [image for image in _read_release(path) if image.train == (subset != "test")]
    if hold_out is not None:
        val = _held_out_names(images, hold_out, path)
        if not val:
            raise DataError(f"{path}: the val fraction {hold_out.fraction:g} holds out no image")
        images = [image for image in images if (image.name in val) == (subset == "val")]
    selected, left_out = [], 0
    for image in images:
        for person in image.people:
            placed = person.center is not None and person.scale is not None
            if not placed or (subset != "test" and not person.flags.any()):
                left_out += 1
                continue
            if not np.isfinite(person.center).all() or not person.scale > 0:
                x, y = person.center + 1.0
                raise DataError(
                    f"{path}: annolist[{image.index}] ({image.name}), annorect[{person.index}]: "
                    f"objpos ({x:g}, {y:g}) must be finite and scale ({person.scale:g}) positive"
                )
            selected.append((image, person))
    if left_out:
        log.info(
            "%s (%s): %d people without joints or without objpos and scale are not read",
            path,
            subset,
            left_out,
        )
    if not selected:
        raise DataError(f"{path}: subset {subset}: no person with a position and joints")
    return selected


def _check_keypoints(num_keypoints: int, path: Path) -> None:
    if num_keypoints != NUM_JOINTS:
        raise DataError(
            f"{path}: the release annotates MPII's {NUM_JOINTS} joints (skeleton mpii16), "
            f"not {num_keypoints}"
        )


def read_mpii_release(
    path: str | Path,
    image_dir: str | Path,
    num_keypoints: int = NUM_JOINTS,
    subset: str = "train",
    hold_out: HoldOut | None = None,
) -> list[PersonRecord]:
    """One record per person of ``subset`` (``train``, ``val`` or ``test``; ``val`` and, with
    a ``hold_out``, ``train`` are its two parts of the training images): the json form's box
    (`posesuite.data.sources.mpii.person_box` of ``objpos`` and ``scale``), keypoints flagged
    2 visible, 1 occluded, 0 not annotated, ``annotation_id`` the person's place in the split."""
    path, image_dir = Path(path), Path(image_dir)
    _check_keypoints(num_keypoints, path)
    people = _select(path, subset, hold_out)
    missing = sorted({image.name for image, _ in people if not (image_dir / image.name).is_file()})
    if missing:
        shown = ", ".join(str(image_dir / name) for name in missing[:5])
        raise DataError(f"{path}: {len(missing)} image file(s) missing, e.g. {shown}")
    records = []
    for annotation_id, (image, person) in enumerate(people):
        box = person_box(person.center, person.scale)
        keypoints = np.concatenate([person.joints, person.flags[:, None]], axis=1)
        records.append(
            PersonRecord(
                image_id=image_id_of(image.name, f"{path}: annolist[{image.index}]"),
                frames=(str(image_dir / image.name),),
                bbox=box,
                keypoints=keypoints.astype(np.float32),
                annotation_id=annotation_id,
                area=float(box[2] * box[3]),
            )
        )
    return records


def read_mpii_release_ground_truth(
    path: str | Path,
    num_keypoints: int = NUM_JOINTS,
    subset: str | None = None,
    hold_out: HoldOut | None = None,
) -> MpiiGroundTruth:
    """The ground truth of a split's people, with their head boxes, entry n the record of
    annotation id n (`read_mpii_release`). ``path`` is the release file or a reference to a
    split of it (`release_reference`, what `MpiiReleaseSplit.annotations` names); the subset and
    hold-out are the reference's, or those given (``train``, no hold-out, by default). Every
    annotated joint is labelled, occluded ones too, as the benchmark scores them."""
    file, named_subset, named_hold_out = parse_release_reference(path)
    if named_subset is not None and (subset, hold_out) not in (
        (None, None),
        (named_subset, named_hold_out),
    ):
        raise DataError(f"{path}: subset {subset!r} and {hold_out} given for another split")
    if named_subset is not None:
        subset, hold_out = named_subset, named_hold_out
    subset = subset or "train"
    _check_keypoints(num_keypoints, file)
    if subset == "test":
        raise DataError(f"{file}: MPII withholds the test images' joints: no ground truth")
    people = _select(file, subset, hold_out)
    for image, person in people:
        box = person.head_box
        if box is None or not np.isfinite(box).all():
            raise DataError(
                f"{file}: annolist[{image.index}] ({image.name}), annorect[{person.index}]: "
                "PCKh needs the head box, x1, y1, x2, y2 (finite)"
            )
    return MpiiGroundTruth(
        path=release_reference(file, subset, hold_out),
        joints=np.stack([person.joints for _, person in people]),
        labelled=np.stack([person.flags > 0 for _, person in people]),
        head_boxes=np.stack([person.head_box for _, person in people]),
    )


@dataclass(frozen=True)
class MpiiReleaseSplit:
    """One split of the release file (`posesuite.data.records.Split`): the people of
    ``subset`` (`read_mpii_release`); the metric's ground truth (``annotations``) is the file
    with the split appended (`release_reference`), read with its head boxes by
    `read_mpii_release_ground_truth`."""

    release: Path
    images: Path
    subset: str = "train"
    hold_out: HoldOut | None = None
    detections: Path | None = None

    @property
    def annotations(self) -> Path:
        return release_reference(self.release, self.subset, self.hold_out)

    def read_people(self, num_keypoints: int) -> list[PersonRecord]:
        return read_mpii_release(
            self.release, self.images, num_keypoints, self.subset, self.hold_out
        )


@dataclass(frozen=True)
class MpiiReleaseDataset:
    """MPII from its official files (``data=mpii_release data.root=/path``): the release
    ``.mat`` and the images folder, paths relative to ``root`` unless absolute.

    The val split is held out of the training images (`HoldOut`): the images listed in
    ``val_images`` (a text file, one name a line) when given, else ``val_fraction`` of them by
    the rule seeded with ``val_seed`` (its own seed: a new training seed keeps the val set);
    the train split is the other training images.
    """

    root: str
    release: str = f"annotations/{RELEASE_NAME}"
    images: str = "images"
    val_images: str | None = None
    val_fraction: float = 0.1
    val_seed: int = 0

    def prepare(self) -> tuple[MpiiReleaseSplit, MpiiReleaseSplit]:
        root = Path(self.root).expanduser()

        def path(p: str) -> Path:
            return Path(p) if Path(p).is_absolute() else root / p

        if self.val_images is not None:
            hold_out = HoldOut(images=path(self.val_images))
        else:
            hold_out = HoldOut(float(self.val_fraction), int(self.val_seed))
        release, images = path(self.release), path(self.images)
        return (
            MpiiReleaseSplit(release, images, "train", hold_out),
            MpiiReleaseSplit(release, images, "val", hold_out),
        )
