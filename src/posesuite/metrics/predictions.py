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
    out of it.
    """

    image_ids: torch.Tensor  # (N,) int64
    keypoints: torch.Tensor  # (N, K, 3) x, y, keypoint score
    scores: torch.Tensor  # (N,)
    areas: torch.Tensor  # (N,) OKS-NMS scale (crop width x height)
    boxes: torch.Tensor  # (N, 4) x1, y1, x2, y2 of the box each crop was made from

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
        return People(
            self.image_ids[index],
            self.keypoints[index],
            self.scores[index],
            self.areas[index],
            self.boxes[index],
        )

    def to(self, dtype: torch.dtype) -> People:
        """Floating tables in ``dtype`` (NMS and merging are run in float64 for exactness)."""
        return People(
            self.image_ids.long(),
            self.keypoints.to(dtype),
            self.scores.to(dtype),
            self.areas.to(dtype),
            self.boxes.to(dtype),
        )

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def concatenate(cls, tables: Sequence[People]) -> People:
        names = cls.__dataclass_fields__
        return cls(**{name: torch.cat([getattr(t, name) for t in tables]) for name in names})


def coco_results(people: People) -> list[dict]:
    """COCO keypoint results records of (post-processed) people."""
    return [
        {
            "image_id": image_id,
            "category_id": PERSON_CATEGORY_ID,
            "keypoints": person_keypoints,
            "score": score,
        }
        for image_id, person_keypoints, score in zip(
            people.image_ids.tolist(),
            people.keypoints.double().flatten(1).tolist(),
            people.scores.double().tolist(),
            strict=True,
        )
    ]
