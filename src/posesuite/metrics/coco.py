"""COCO keypoint AP as a torchmetrics Metric: the top-down protocol end to end.

`COCOKeypointAP` collects image-space predictions during validation (across DDP ranks), applies
the standard top-down post-processing (rescoring, per-image OKS-NMS) and scores them with
`posesuite.metrics.coco_eval.evaluate_coco_keypoints`, the function behind ``posesuite-eval``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pycocotools.coco import COCO
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from posesuite.metrics.coco_eval import (
    PERSON_CATEGORY_ID,
    evaluate_coco_keypoints,
    load_coco_ground_truth,
)
from posesuite.postprocess.pipeline import People, PersonFilter, PostProcess


class COCOKeypointAP(Metric):
    """COCO keypoint AP/AR over image-space predictions, the top-down protocol end to end.

    ``update`` stores raw predictions; ``compute`` gathers them from every DDP rank, counts each
    ``sample_id`` once (DistributedSampler repeats samples to pad the last batch), runs the
    post-processing (``postprocess``: rescoring and per-image NMS; by default the standard
    top-down one, OKS-NMS at 0.9) and evaluates with pycocotools. ``people()`` gives the
    de-duplicated predictions before post-processing, which evaluation-only sweeps cache.

    ``compute`` returns ``{"AP": ..., ..., "AR_L": ...}`` as 0-d tensors of the default dtype
    on the metric's device, ready for ``LightningModule.log_dict``. ``results`` then gives the
    COCO results list that was evaluated, for writing the run's results file; it does no
    communication, so under DDP call ``compute`` on every rank first, then ``results`` on rank 0.
    Every rank evaluates the gathered set, so every rank gets the same values to log.

    Feed it with ``update`` (not by calling the metric: ``forward`` would run the whole COCO
    evaluation on each batch).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    sample_ids: list[torch.Tensor]
    image_ids: list[torch.Tensor]
    keypoints: list[torch.Tensor]
    box_scores: list[torch.Tensor]
    areas: list[torch.Tensor]
    boxes: list[torch.Tensor]

    def __init__(
        self,
        ann_file: str | Path,
        sigmas: Sequence[float],
        postprocess: PersonFilter | None = None,
        **kwargs: Any,
    ) -> None:
        """``kwargs`` go to ``torchmetrics.Metric`` (e.g. ``compute_on_cpu``, ``process_group``)."""
        super().__init__(**kwargs)
        self.ann_file = Path(ann_file)
        self.sigmas = tuple(float(sigma) for sigma in sigmas)
        self.postprocess = postprocess or PostProcess().bind(self.sigmas)
        self._ground_truth: COCO | None = None
        self._results: list[dict] | None = None
        self._people: People | None = None
        for name in ("sample_ids", "image_ids", "keypoints", "box_scores", "areas", "boxes"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self,
        sample_ids: torch.Tensor,
        image_ids: torch.Tensor,
        keypoints: torch.Tensor,
        box_scores: torch.Tensor,
        areas: torch.Tensor,
        boxes: torch.Tensor,
    ) -> None:
        """Add a batch of N people.

        Args:
            sample_ids: (N,) dataset index of each person crop, unique across the dataset.
            image_ids: (N,) COCO image id.
            keypoints: (N, K, 3) [x, y, score] in image pixels.
            box_scores: (N,) detector score of the crop's box (1 for ground-truth boxes).
            areas: (N,) person area (the OKS-NMS scale), e.g. box width × height.
            boxes: (N, 4) x1, y1, x2, y2 of each crop's person box (parametric pose NMS).
        """
        count = sample_ids.shape[0]
        if keypoints.shape != (count, len(self.sigmas), 3):
            raise ValueError(
                f"keypoints must have shape ({count}, {len(self.sigmas)}, 3), "
                f"got {tuple(keypoints.shape)}"
            )
        for name, values in (
            ("sample_ids", sample_ids),
            ("image_ids", image_ids),
            ("box_scores", box_scores),
            ("areas", areas),
        ):
            if values.shape != (count,):
                raise ValueError(f"{name} must have shape ({count},), got {tuple(values.shape)}")
        if boxes.shape != (count, 4):
            raise ValueError(f"boxes must have shape ({count}, 4), got {tuple(boxes.shape)}")
        self._results = self._people = None  # new predictions make the last results stale
        self.sample_ids.append(sample_ids.detach().long())
        self.image_ids.append(image_ids.detach().long())
        self.keypoints.append(keypoints.detach().float())
        self.box_scores.append(box_scores.detach().float())
        self.areas.append(areas.detach().float())
        self.boxes.append(boxes.detach().float())

    def compute(self) -> dict[str, torch.Tensor]:
        self._people = self._gathered_people()
        self._results = coco_results(self.postprocess(self._people))
        stats = evaluate_coco_keypoints(self.ground_truth(), self._results, self.sigmas)
        return {
            name: torch.tensor(value, dtype=torch.get_default_dtype(), device=self.device)
            for name, value in stats.items()
        }

    def results(self) -> list[dict]:
        """The COCO results list evaluated by the last ``compute`` (a copy).

        Raises ``RuntimeError`` when there was no ``compute`` since the last ``update`` or
        ``reset``: this never computes itself, because under DDP computing gathers across
        ranks and would hang if only rank 0 asked.
        """
        if self._results is None:
            raise RuntimeError("COCOKeypointAP.results() needs compute() after the last update()")
        return [{**record, "keypoints": list(record["keypoints"])} for record in self._results]

    def reset(self) -> None:
        super().reset()
        self._results = self._people = None

    def ground_truth(self) -> COCO:
        """The ground truth of ``ann_file``, read on first use and kept."""
        if self._ground_truth is None:
            self._ground_truth = load_coco_ground_truth(self.ann_file)
        return self._ground_truth

    def people(self) -> People:
        """The predictions the last ``compute`` gathered, each sample once, before
        post-processing (``scores`` are box scores): what evaluation-only sweeps cache.
        Like ``results``, it never computes itself."""
        if self._people is None:
            raise RuntimeError("COCOKeypointAP.people() needs compute() after the last update()")
        return self._people

    def _gathered_people(self) -> People:
        if len(self.sample_ids) == 0:
            count = len(self.sigmas)
            return People(
                torch.zeros(0, dtype=torch.long),
                torch.zeros(0, count, 3),
                torch.zeros(0),
                torch.zeros(0),
                torch.zeros(0, 4),
            )
        # States are lists locally and concatenated tensors after a DDP gather.
        sample_ids = dim_zero_cat(self.sample_ids).long().cpu()
        unique_ids, inverse = torch.unique(sample_ids, return_inverse=True)
        positions = torch.arange(len(sample_ids))
        first_occurrence = torch.full((len(unique_ids),), len(sample_ids)).scatter_reduce(
            0, inverse, positions, reduce="amin"
        )
        return People(
            *(
                dim_zero_cat(getattr(self, name)).cpu()[first_occurrence]
                for name in ("image_ids", "keypoints", "box_scores", "areas", "boxes")
            )
        )


def coco_results(people: People) -> list[dict]:
    """COCO keypoint results records of post-processed people."""
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
