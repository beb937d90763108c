"""Box sources: where the person boxes that crops are made from come from.

One mechanism for training and evaluation alike (``data.train_box_source`` and
``data.box_source`` choose one each):

- ``gt``: the ground-truth boxes;
- ``detections``: a detector's boxes (a COCO results file). Evaluation crops every detection
  (the top-down protocol); training keeps the detections matched to a ground-truth person (IoU
  >= ``match_iou``, greedy by score), each with that person's keypoints;
- ``jitter``: ground-truth boxes perturbed per sample with DPG's fixed Gaussian offsets of each
  edge (RMPE's fallback for its pose-guided proposals); a fresh draw per training sample, a
  fixed draw per record at evaluation;
- ``pgpg``: RMPE's pose-guided proposals (`posesuite.data.pgpg`): ground-truth boxes moved by
  offsets drawn from the mixture fitted for the person's atomic pose (``task=fit_pgpg``'s
  artifact, ``data.pgpg_file``); drawn like ``jitter``.

A source gives a split's records (`BoxSource.records`) and may redraw a record's box for each
sample (`BoxSource.draw`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from posesuite.data.pgpg import PoseGuidedProposals
from posesuite.data.records import DataError, PersonRecord, Split
from posesuite.data.sources.coco import CocoSplit, read_detections

log = logging.getLogger(__name__)

BOX_SOURCES = ("gt", "detections", "jitter", "pgpg")


@dataclass(frozen=True)
class BoxJitter:
    """DPG's proposal noise (REFERENCE.md, RMPE): each edge moves by a Gaussian offset times the
    box's width (x edges) or height (y edges); with probability ``sub_box_prob`` the box is
    instead a random sub-box of ``sub_box_scale`` of its size, placed uniformly inside it."""

    edge_mean: Sequence[float] = (-0.0142, 0.0043, 0.0154, -0.0013)  # x_min, y_min, x_max, y_max
    edge_std: Sequence[float] = (0.1158, 0.068, 0.1337, 0.0711)
    sub_box_prob: float = 0.15
    sub_box_scale: Sequence[float] = (0.85, 1.0)
    min_size: float = 2.0  # pixels: a box that collapses keeps at least this width and height

    def __call__(self, bbox: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A perturbed copy of the [x, y, w, h] box."""
        x, y, w, h = (float(v) for v in bbox)
        size = np.array([w, h, w, h])
        offsets = rng.normal(self.edge_mean, self.edge_std) * size  # always drawn: fixed stream
        scale = rng.uniform(*self.sub_box_scale)
        placement = rng.uniform(size=2)
        if rng.uniform() < self.sub_box_prob:
            sub_w, sub_h = scale * w, scale * h
            x0, y0 = x + placement[0] * (w - sub_w), y + placement[1] * (h - sub_h)
            x1, y1 = x0 + sub_w, y0 + sub_h
        else:
            x0, y0, x1, y1 = np.array([x, y, x + w, y + h]) + offsets
        x1, y1 = max(x1, x0 + self.min_size), max(y1, y0 + self.min_size)
        return np.array([x0, y0, x1 - x0, y1 - y0])


@dataclass(frozen=True)
class BoxSource:
    """One of `BOX_SOURCES` with its options; ``det_file``: the detections of ``detections``;
    ``proposals``: the fitted PGPG of ``pgpg``."""

    kind: str = "gt"
    det_file: str | Path | None = None
    min_score: float = 0.0
    match_iou: float = 0.5
    jitter: BoxJitter = field(default_factory=BoxJitter)
    proposals: PoseGuidedProposals | None = None

    def __post_init__(self) -> None:
        if self.kind not in BOX_SOURCES:
            raise DataError(
                f"unknown box source {self.kind!r}: choose one of {', '.join(BOX_SOURCES)}"
            )
        if self.kind == "pgpg" and self.proposals is None:
            raise DataError(
                "box source 'pgpg' needs the proposals fitted by python run.py task=fit_pgpg: "
                "set data.pgpg_file to its pgpg.json"
            )

    @property
    def redraws(self) -> bool:
        """Whether each sample gets its own box (`draw` changes the record)."""
        return self.kind in ("jitter", "pgpg")

    def describe(self, split: Split) -> str:
        if self.kind == "detections":
            return f"detections boxes from {self.det_file}"
        return f"{self.kind} boxes from {split.annotations}"

    def records(self, split: Split, num_keypoints: int, training: bool) -> list[PersonRecord]:
        """The split's records, with this source's boxes. Detections index the images through
        a COCO-format ground-truth file."""
        if self.kind != "detections":
            return split.read_people(num_keypoints)
        if not isinstance(split, CocoSplit):
            raise DataError(
                f"box source 'detections' reads COCO detection results against COCO-format "
                f"ground truth; {split.annotations} is a {type(split).__name__}: use gt or jitter"
            )
        if self.det_file is None:
            setting = "data.train_det_file" if training else "data.det_file"
            raise DataError(
                f"box source 'detections' needs a COCO detection results file: set {setting}"
            )
        detected = read_detections(
            self.det_file, split.annotations, split.images, num_keypoints, self.min_score
        )
        if not training:
            return detected
        people = split.read_people(num_keypoints)
        matched = match_detections(detected, people, self.match_iou)
        log.info(
            "%d of %d people matched by a detection of %s (IoU >= %.2f)",
            len(matched),
            len(people),
            self.det_file,
            self.match_iou,
        )
        if not matched:
            raise DataError(
                f"{self.det_file}: no detection matches a person of {split.annotations} at "
                f"IoU >= {self.match_iou}: detections of another split?"
            )
        return matched

    def draw(self, record: PersonRecord, rng: np.random.Generator) -> PersonRecord:
        """The record with the box this sample is cropped from."""
        if not self.redraws:
            return record
        if self.kind == "pgpg":
            box = self.proposals.propose(record, rng)
        else:
            box = self.jitter(record.bbox, rng)
        return dataclasses.replace(record, bbox=box, area=float(box[2] * box[3]))


def box_iou(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """(N, M) IoU of [x, y, w, h] boxes."""
    a = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(others, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    y1 = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    overlap = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = a[:, None, 2] * a[:, None, 3] + b[None, :, 2] * b[None, :, 3] - overlap
    return overlap / np.maximum(union, 1e-12)


def match_pairs(
    detections: Sequence[PersonRecord], people: Sequence[PersonRecord], min_iou: float
) -> list[tuple[PersonRecord, PersonRecord]]:
    """(person, detection) pairs: each person with the best-scoring unmatched detection of IoU
    >= ``min_iou`` (greedy by detection score, as COCO matching is)."""
    by_image: dict[int, list[PersonRecord]] = defaultdict(list)
    for person in people:
        by_image[person.image_id].append(person)
    pairs = []
    taken: set[int] = set()
    for detection in sorted(detections, key=lambda d: -d.box_score):
        candidates = by_image.get(detection.image_id, [])
        if not candidates:
            continue
        ious = box_iou(detection.bbox, np.stack([p.bbox for p in candidates]))[0]
        for index in np.argsort(-ious, kind="stable"):
            person = candidates[index]
            if ious[index] < min_iou:
                break
            if id(person) not in taken:
                taken.add(id(person))
                pairs.append((person, detection))
                break
    return pairs


def match_detections(
    detections: Sequence[PersonRecord], people: Sequence[PersonRecord], min_iou: float
) -> list[PersonRecord]:
    """The matched people (`match_pairs`), each with its detection's box and score."""
    return [
        dataclasses.replace(
            person, bbox=detection.bbox, box_score=detection.box_score, area=person.area
        )
        for person, detection in match_pairs(detections, people, min_iou)
    ]
