"""COCO person-keypoints reader. The synthetic dataset is COCO-format and read here too."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from posesuite.data.records import DataError, PersonRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CocoSplit:
    """Files of one split of a COCO-format keypoints dataset.

    Every dataset format has a split type like this one (`posesuite.data.records.Split`):
    ``annotations`` is the ground-truth file the metric reads, ``read_people`` the reader.
    """

    annotations: Path
    images: Path
    detections: Path | None = None

    def read_people(self, num_keypoints: int) -> list[PersonRecord]:
        return read_coco_keypoints(self.annotations, self.images, num_keypoints)


@dataclass(frozen=True)
class CocoDataset:
    """A COCO-format dataset laid out as the official one (``data=coco data.root=/path``).

    Paths are relative to ``root`` unless absolute.
    """

    root: str
    train_annotations: str = "annotations/person_keypoints_train2017.json"
    train_images: str = "train2017"
    val_annotations: str = "annotations/person_keypoints_val2017.json"
    val_images: str = "val2017"
    val_detections: str | None = None

    def prepare(self) -> tuple[CocoSplit, CocoSplit]:
        root = Path(self.root).expanduser()

        def path(p: str | None) -> Path | None:
            return None if p is None else (root / p if not Path(p).is_absolute() else Path(p))

        return (
            CocoSplit(path(self.train_annotations), path(self.train_images)),
            CocoSplit(path(self.val_annotations), path(self.val_images), path(self.val_detections)),
        )


def load_json(path: Path) -> Any:
    try:
        with Path(path).open() as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise DataError(f"file not found: {path}") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: malformed JSON ({err})") from None


def _index_images(coco: dict, ann_file: Path, image_dir: Path) -> dict[int, dict]:
    try:
        images = {int(img["id"]): img for img in coco["images"]}
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{ann_file}: 'images' entries need an integer 'id' ({err})") from None
    missing = [
        (image_id, image_dir / img.get("file_name", ""))
        for image_id, img in images.items()
        if not (image_dir / img.get("file_name", "")).is_file()
    ]
    if missing:
        shown = ", ".join(f"image id {i}: {p}" for i, p in missing[:5])
        raise DataError(f"{ann_file}: {len(missing)} image file(s) missing, e.g. {shown}")
    return images


def read_coco_keypoints(
    ann_file: str | Path, image_dir: str | Path, num_keypoints: int, category_id: int = 1
) -> list[PersonRecord]:
    """Ground-truth person records, standard protocol: skip crowd and keypoint-less people.

    Boxes are clipped to the image; people with an empty box are dropped, as in the reference
    top-down code. A file with no usable person is a `DataError` that says why (an empty split
    would otherwise surface as torch's ``num_samples=0``).
    """
    ann_file, image_dir = Path(ann_file), Path(image_dir)
    coco = load_json(ann_file)
    images = _index_images(coco, ann_file, image_dir)
    annotations = coco.get("annotations", [])
    # Why annotations were left out, for the message when none is left.
    dropped = dict.fromkeys(
        ("of another category", "crowd", "without labelled keypoints", "empty box"), 0
    )
    records = []
    for ann in annotations:
        if ann.get("category_id", category_id) != category_id:
            dropped["of another category"] += 1
            continue
        if ann.get("iscrowd", 0):
            dropped["crowd"] += 1
            continue
        ann_id, image_id = ann.get("id"), ann.get("image_id")
        where = f"{ann_file}: annotation id {ann_id} (image id {image_id})"
        if image_id not in images:
            raise DataError(f"{where}: image id not in 'images'")
        keypoints = np.asarray(ann.get("keypoints", []), dtype=np.float32)
        if keypoints.size != 3 * num_keypoints:
            raise DataError(
                f"{where}: {keypoints.size} keypoint values, expected {3 * num_keypoints}"
                f" ({num_keypoints} keypoints x 3)"
            )
        keypoints = keypoints.reshape(num_keypoints, 3)
        if not (keypoints[:, 2] > 0).any():
            dropped["without labelled keypoints"] += 1
            continue
        image = images[image_id]
        box = _clip_box(ann.get("bbox"), image, where)
        if box is None:
            dropped["empty box"] += 1
            continue
        records.append(
            PersonRecord(
                image_id=image_id,
                frames=(str(image_dir / image["file_name"]),),
                bbox=box,
                keypoints=keypoints,
                annotation_id=int(ann_id),
                area=float(ann.get("area", box[2] * box[3])),
            )
        )
    if not records:
        raise DataError(
            f"{ann_file}: no usable people (category_id {category_id}, not crowd, at least one "
            f"labelled keypoint, a non-empty box): {no_people_reason(len(annotations), dropped)}"
        )
    return records


def no_people_reason(num_annotations: int, dropped: dict[str, int]) -> str:
    """``'no annotations'`` or e.g. ``'3 annotations: 2 crowd, 1 without labelled keypoints'``."""
    if not num_annotations:
        return "no annotations"
    counts = ", ".join(f"{count} {reason}" for reason, count in dropped.items() if count)
    return f"{num_annotations} annotations: {counts}"


def read_detections(
    det_file: str | Path,
    ann_file: str | Path,
    image_dir: str | Path,
    num_keypoints: int,
    min_score: float = 0.0,
    category_id: int = 1,
) -> list[PersonRecord]:
    """Person records from a detector's COCO results file (boxes only, for evaluation)."""
    det_file, ann_file, image_dir = Path(det_file), Path(ann_file), Path(image_dir)
    coco = load_json(ann_file)
    images = _index_images(coco, ann_file, image_dir)
    detections = load_json(det_file)
    if not isinstance(detections, list):
        raise DataError(f"{det_file}: expected a list of COCO detection results")
    records = []
    for index, det in enumerate(detections):
        where = f"{det_file}: detection #{index} (image id {det.get('image_id')})"
        if det.get("category_id", category_id) != category_id:
            continue
        image = images.get(det.get("image_id"))
        if image is None:
            raise DataError(f"{where}: image id not in {ann_file}")
        score = float(det.get("score", 1.0))
        box = _clip_box(det.get("bbox"), image, where)
        if score < min_score or box is None:
            continue
        records.append(
            PersonRecord(
                image_id=int(det["image_id"]),
                frames=(str(image_dir / image["file_name"]),),
                bbox=box,
                keypoints=np.zeros((num_keypoints, 3), dtype=np.float32),
                box_score=score,
                area=float(box[2] * box[3]),
            )
        )
    return records


def _clip_box(bbox: Any, image: dict, where: str) -> np.ndarray | None:
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise DataError(f"{where}: 'bbox' must be [x, y, w, h], got {bbox!r}") from None
    width, height = image.get("width"), image.get("height")
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = x + max(0.0, w - 1), y + max(0.0, h - 1)
    if width is not None and height is not None:
        x1, y1 = min(width - 1.0, x1), min(height - 1.0, y1)
    if x1 <= x0 or y1 <= y0:
        return None
    return np.array([x0, y0, x1 - x0 + 1, y1 - y0 + 1], dtype=np.float64)
