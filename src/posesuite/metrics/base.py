"""The base of every evaluation metric: predictions gathered across processes, each sample once.

A `PoseMetric` collects the image-space predictions of validation (``update``), gathers them from
every DDP rank and keeps each ``sample_id`` once (``DistributedSampler`` repeats samples to pad
the last batch): that is `people`. The LightningModule post-processes those people (rescoring,
NMS) and hands the result to `evaluate`, which each protocol implements (COCO OKS AP; PCKh and
per-part AP plug in the same way). ``compute`` is `evaluate` on the gathered people as they are,
for use as a plain torchmetrics Metric.

Configured in ``conf/metric/`` and built by the module with the validation ground truth and the
skeleton: ``metric(ground_truth=..., skeleton=...)``. ``primary`` names the value that is
monitored for checkpoints, shown in the progress bar and returned to sweepers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from posesuite.metrics.predictions import People

# The states gathered per person, in the order of `People`'s fields.
PEOPLE_STATES = ("image_ids", "keypoints", "box_scores", "areas", "boxes", "annotation_ids")


@dataclass(frozen=True)
class Report:
    """An extra table of an evaluation (e.g. per-joint OKS), written as ``<name>.json``."""

    name: str
    data: Mapping[str, Any]
    table: str  # the same as text, for the run's log
    title: str


class PoseMetric(Metric):
    """Subclasses set ``stat_names`` and implement ``evaluate`` (and optionally ``reports``)."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    stat_names: tuple[str, ...] = ()

    sample_ids: list[torch.Tensor]
    image_ids: list[torch.Tensor]
    keypoints: list[torch.Tensor]
    box_scores: list[torch.Tensor]
    areas: list[torch.Tensor]
    boxes: list[torch.Tensor]
    annotation_ids: list[torch.Tensor]

    def __init__(self, num_keypoints: int, primary: str, **kwargs: Any) -> None:
        """``kwargs`` go to ``torchmetrics.Metric`` (e.g. ``process_group``)."""
        super().__init__(**kwargs)
        if primary not in self.stat_names:
            raise ValueError(
                f"metric.primary={primary!r} is not one of {type(self).__name__}'s values: "
                f"{', '.join(self.stat_names)}"
            )
        self.num_keypoints = num_keypoints
        self.primary = primary
        for name in ("sample_ids", *PEOPLE_STATES):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self,
        sample_ids: torch.Tensor,
        image_ids: torch.Tensor,
        keypoints: torch.Tensor,
        box_scores: torch.Tensor,
        areas: torch.Tensor,
        boxes: torch.Tensor,
        annotation_ids: torch.Tensor | None = None,
    ) -> None:
        """Add a batch of N people.

        Args:
            sample_ids: (N,) dataset index of each person crop, unique across the dataset.
            image_ids: (N,) image id.
            keypoints: (N, K, 3) [x, y, score] in image pixels.
            box_scores: (N,) detector score of the crop's box (1 for ground-truth boxes).
            areas: (N,) person area (the OKS-NMS scale), e.g. box width × height.
            boxes: (N, 4) x1, y1, x2, y2 of each crop's person box (parametric pose NMS).
            annotation_ids: (N,) the ground-truth person of each crop, -1 for detector boxes
                (the default).
        """
        count = sample_ids.shape[0]
        if keypoints.shape != (count, self.num_keypoints, 3):
            raise ValueError(
                f"keypoints must have shape ({count}, {self.num_keypoints}, 3), "
                f"got {tuple(keypoints.shape)}"
            )
        if annotation_ids is None:
            annotation_ids = torch.full_like(sample_ids, -1, dtype=torch.long)
        for name, values in (
            ("sample_ids", sample_ids),
            ("image_ids", image_ids),
            ("box_scores", box_scores),
            ("areas", areas),
            ("annotation_ids", annotation_ids),
        ):
            if values.shape != (count,):
                raise ValueError(f"{name} must have shape ({count},), got {tuple(values.shape)}")
        if boxes.shape != (count, 4):
            raise ValueError(f"boxes must have shape ({count}, 4), got {tuple(boxes.shape)}")
        self.sample_ids.append(sample_ids.detach().long())
        self.image_ids.append(image_ids.detach().long())
        self.keypoints.append(keypoints.detach().float())
        self.box_scores.append(box_scores.detach().float())
        self.areas.append(areas.detach().float())
        self.boxes.append(boxes.detach().float())
        self.annotation_ids.append(annotation_ids.detach().long())

    def people(self) -> People:
        """Every rank's predictions, each sample once, before post-processing (``scores`` are box
        scores). Under DDP this communicates: call it on every rank."""
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync):
            return self._unique_people()

    def evaluate(self, people: People) -> dict[str, float]:
        """The protocol's values (``stat_names``) for post-processed people."""
        raise NotImplementedError

    def reports(self, people: People) -> list[Report]:
        """Extra tables for the run's outputs (none by default)."""
        return []

    def compute(self) -> dict[str, torch.Tensor]:
        values = self.evaluate(self._unique_people())
        return {
            name: torch.tensor(value, dtype=torch.get_default_dtype(), device=self.device)
            for name, value in values.items()
        }

    def _unique_people(self) -> People:
        if len(self.sample_ids) == 0:
            return People.empty(self.num_keypoints)
        # States are lists locally and concatenated tensors after a DDP gather.
        sample_ids = dim_zero_cat(self.sample_ids).long().cpu()
        unique_ids, inverse = torch.unique(sample_ids, return_inverse=True)
        positions = torch.arange(len(sample_ids))
        first_occurrence = torch.full((len(unique_ids),), len(sample_ids)).scatter_reduce(
            0, inverse, positions, reduce="amin"
        )
        return People(
            *(dim_zero_cat(getattr(self, name)).cpu()[first_occurrence] for name in PEOPLE_STATES)
        )


@dataclass(frozen=True)
class Evaluation:
    """One validation's outcome, what the run-outputs callback writes."""

    raw: People  # the gathered predictions before post-processing (cached for task=postprocess)
    kept: People  # after post-processing: what was evaluated
    values: dict[str, float]  # the metric's values, e.g. AP ... AR_L
    metric: PoseMetric  # for its reports (per-joint tables) on the same people
