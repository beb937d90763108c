"""Image-space predictions as one table type, shared by the metrics, post-processing and the run
outputs, and their COCO results records (the format every run writes its predictions in)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from posesuite.metrics.coco_eval import PERSON_CATEGORY_ID


@dataclass(frozen=True)
class People:
    """A table of N person predictions, image-space.

    ``scores`` are box (detector) scores going into a `PersonFilter` and person scores coming
    out of it. ``annotation_ids`` name the ground-truth person each crop was made from (-1 for
    detector boxes): protocols that score each labelled person (PCKh, PCK) match by it.
    """

    image_ids: torch.Tensor  # (N,) int64
    keypoints: torch.Tensor  # (N, K, 3) x, y, keypoint score
    scores: torch.Tensor  # (N,)
    areas: torch.Tensor  # (N,) OKS-NMS scale (crop width x height)
    boxes: torch.Tensor  # (N, 4) x1, y1, x2, y2 of the box each crop was made from
    annotation_ids: torch.Tensor | None = None  # (N,) int64; None: all -1

    def __post_init__(self) -> None:
        if self.annotation_ids is None:
            unknown = torch.full_like(self.image_ids, -1, dtype=torch.long)
            object.__setattr__(self, "annotation_ids", unknown)

    @classmethod
    def empty(cls, num_keypoints: int) -> People:
        return cls(
            torch.zeros(0, dtype=torch.long),
            torch.zeros(0, num_keypoints, 3),
            torch.zeros(0),
            torch.zeros(0),
            torch.zeros(0, 4),
        )

    def __len__(self) -> int:
        return int(self.image_ids.shape[0])

    def select(self, index: torch.Tensor) -> People:
        return People(**{name: values[index] for name, values in self.as_dict().items()})

    def to(self, dtype: torch.dtype) -> People:
        """Floating tables in ``dtype`` (NMS and merging are run in float64 for exactness)."""
        return People(
            self.image_ids.long(),
            self.keypoints.to(dtype),
            self.scores.to(dtype),
            self.areas.to(dtype),
            self.boxes.to(dtype),
            self.annotation_ids.long(),
        )

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def concatenate(cls, tables: Sequence[People]) -> People:
        names = cls.__dataclass_fields__
        return cls(**{name: torch.cat([getattr(t, name) for t in tables]) for name in names})


def coco_results(people: People) -> list[dict]:
    """COCO keypoint results records of (post-processed) people. A person cropped from a
    ground-truth box also carries its ``annotation_id`` (protocols that score each labelled
    person, such as PCKh, match by it); pycocotools ignores the extra key."""
    records = []
    for image_id, person_keypoints, score, annotation_id in zip(
        people.image_ids.tolist(),
        people.keypoints.double().flatten(1).tolist(),
        people.scores.double().tolist(),
        people.annotation_ids.tolist(),
        strict=True,
    ):
        record = {
            "image_id": image_id,
            "category_id": PERSON_CATEGORY_ID,
            "keypoints": person_keypoints,
            "score": score,
        }
        if annotation_id >= 0:
            record["annotation_id"] = annotation_id
        records.append(record)
    return records
