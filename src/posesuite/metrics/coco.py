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
from posesuite.postprocess.oks_nms import oks_nms
from posesuite.postprocess.rescoring import rescore


class COCOKeypointAP(Metric):
    """COCO keypoint AP/AR over image-space predictions, the top-down protocol end to end.

    ``update`` stores raw predictions; ``compute`` gathers them from every DDP rank, counts each
    ``sample_id`` once (DistributedSampler repeats samples to pad the last batch), rescores
    (box score × mean keypoint score above ``rescore_threshold``), runs OKS-NMS per image
    (skipped when ``nms_threshold`` is None) and evaluates with pycocotools.

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

    def __init__(
        self,
        ann_file: str | Path,
        sigmas: Sequence[float],
        nms_threshold: float | None = 0.9,
        rescore_threshold: float = 0.2,
        **kwargs: Any,
    ) -> None:
        """``kwargs`` go to ``torchmetrics.Metric`` (e.g. ``compute_on_cpu``, ``process_group``)."""
        super().__init__(**kwargs)
        self.ann_file = Path(ann_file)
        self.sigmas = tuple(float(sigma) for sigma in sigmas)
        self.nms_threshold = nms_threshold
        self.rescore_threshold = rescore_threshold
        self._ground_truth: COCO | None = None
        self._results: list[dict] | None = None
        for name in ("sample_ids", "image_ids", "keypoints", "box_scores", "areas"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self,
        sample_ids: torch.Tensor,
        image_ids: torch.Tensor,
        keypoints: torch.Tensor,
        box_scores: torch.Tensor,
        areas: torch.Tensor,
    ) -> None:
        """Add a batch of N people.

        Args:
            sample_ids: (N,) dataset index of each person crop, unique across the dataset.
            image_ids: (N,) COCO image id.
            keypoints: (N, K, 3) [x, y, score] in image pixels.
            box_scores: (N,) detector score of the crop's box (1 for ground-truth boxes).
            areas: (N,) person area (the OKS-NMS scale), e.g. box width × height.
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
        self._results = None  # new predictions make the last results stale
        self.sample_ids.append(sample_ids.detach().long())
        self.image_ids.append(image_ids.detach().long())
        self.keypoints.append(keypoints.detach().float())
        self.box_scores.append(box_scores.detach().float())
        self.areas.append(areas.detach().float())

    def compute(self) -> dict[str, torch.Tensor]:
        self._results = self._build_results()
        stats = evaluate_coco_keypoints(self._load_ground_truth(), self._results, self.sigmas)
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
        self._results = None

    def _load_ground_truth(self) -> COCO:
        if self._ground_truth is None:
            self._ground_truth = load_coco_ground_truth(self.ann_file)
        return self._ground_truth

    def _build_results(self) -> list[dict]:
        # States are lists locally and concatenated tensors after a DDP gather (empty 1-D when
        # no rank had data); len() is 0 for "nothing" in both forms.
        if len(self.sample_ids) == 0:
            return []
        sample_ids = dim_zero_cat(self.sample_ids).long().cpu()
        image_ids = dim_zero_cat(self.image_ids).long().cpu()
        keypoints = dim_zero_cat(self.keypoints).double().cpu()
        box_scores = dim_zero_cat(self.box_scores).double().cpu()
        areas = dim_zero_cat(self.areas).double().cpu()

        unique_ids, inverse = torch.unique(sample_ids, return_inverse=True)
        positions = torch.arange(len(sample_ids))
        first_occurrence = torch.full((len(unique_ids),), len(sample_ids)).scatter_reduce(
            0, inverse, positions, reduce="amin"
        )
        image_ids = image_ids[first_occurrence]
        keypoints = keypoints[first_occurrence]
        areas = areas[first_occurrence]
        scores = rescore(keypoints[..., 2], box_scores[first_occurrence], self.rescore_threshold)

        selected = torch.argsort(image_ids, stable=True)
        if self.nms_threshold is not None:
            sigmas = torch.tensor(self.sigmas, dtype=torch.float64)
            people_per_image = torch.unique_consecutive(image_ids[selected], return_counts=True)[1]
            kept = []
            for people in torch.split(selected, people_per_image.tolist()):
                keep = oks_nms(
                    keypoints[people],
                    scores[people],
                    areas[people],
                    sigmas,
                    self.nms_threshold,
                )
                kept.append(people[keep])
            selected = torch.cat(kept)
        return [
            {
                "image_id": image_id,
                "category_id": PERSON_CATEGORY_ID,
                "keypoints": person_keypoints,
                "score": score,
            }
            for image_id, person_keypoints, score in zip(
                image_ids[selected].tolist(),
                keypoints[selected].flatten(1).tolist(),
                scores[selected].tolist(),
                strict=True,
            )
        ]
