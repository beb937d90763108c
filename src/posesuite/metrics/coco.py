"""COCO keypoint AP: the official pycocotools evaluation, behind one function and one Metric.

`evaluate_coco_keypoints` scores a COCO results list or file; `COCOKeypointAP` collects
image-space predictions during validation (across DDP ranks), applies the standard top-down
post-processing (rescoring, per-image OKS-NMS) and calls the same function. The
``posesuite-eval`` CLI calls it too, so every path reports the same numbers.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval, Params
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from posesuite.postprocess.oks_nms import oks_nms
from posesuite.postprocess.rescoring import rescore

logger = logging.getLogger(__name__)

# Names of COCOeval.stats[0..9] for iouType="keypoints", in that order.
COCO_KEYPOINT_STAT_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "AP_M",
    "AP_L",
    "AR",
    "AR50",
    "AR75",
    "AR_M",
    "AR_L",
)
PERSON_CATEGORY_ID = 1
_REQUIRED_RESULT_KEYS = ("image_id", "category_id", "keypoints", "score")


@contextlib.contextmanager
def _quiet_unless(verbose: bool) -> Iterator[None]:
    """pycocotools prints progress on stdout; keep it only when asked."""
    if verbose:
        yield
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            yield


def _read_json(path: Path, what: str) -> Any:
    try:
        with path.open() as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} file {path} is not valid JSON: {err}") from None


def load_coco_ground_truth(path: str | Path, verbose: bool = False) -> COCO:
    """Read a COCO annotation file into a pycocotools ``COCO`` object, with errors naming it."""
    path = Path(path)
    dataset = _read_json(path, "ground-truth annotation")
    if not isinstance(dataset, dict) or not all(
        isinstance(dataset.get(key), list) for key in ("images", "annotations", "categories")
    ):
        raise ValueError(
            f"ground-truth annotation file {path} is not a COCO annotation file "
            "(an object with 'images', 'annotations' and 'categories' lists)"
        )
    ground_truth = COCO()
    ground_truth.dataset = dataset
    with _quiet_unless(verbose):
        ground_truth.createIndex()
    return ground_truth


def load_coco_results(path: str | Path) -> list[dict]:
    """Read a COCO results file (a JSON list of result objects), with errors naming it."""
    path = Path(path)
    results = _read_json(path, "results")
    if not isinstance(results, list):
        raise ValueError(f"results file {path} must hold a JSON list of results")
    return results


def _keypoint_counts(ground_truth: COCO, sigmas: Sequence[float] | None) -> dict[int, int]:
    """Expected keypoints per category: the category's keypoint names, else the sigmas'."""
    default_count = len(sigmas) if sigmas is not None else len(Params("keypoints").kpt_oks_sigmas)
    counts = {}
    for category in ground_truth.loadCats(ground_truth.getCatIds()):
        names = category.get("keypoints") or ()
        if names and sigmas is not None and len(names) != len(sigmas):
            raise ValueError(
                f"{len(sigmas)} OKS sigmas given but ground-truth category "
                f"{category.get('name', category['id'])!r} has {len(names)} keypoints"
            )
        counts[category["id"]] = len(names) or default_count
    return counts


def validate_keypoint_results(
    results: Sequence[Any],
    ground_truth: COCO,
    sigmas: Sequence[float] | None = None,
    source: str = "results",
) -> None:
    """Check COCO keypoint results against the ground truth before pycocotools sees them.

    pycocotools fails on bad records with a bare assertion or a numpy error, or silently
    misses them; this raises a ``ValueError`` naming ``source``, the record index and image_id.
    """
    image_ids = set(ground_truth.getImgIds())
    keypoint_counts = _keypoint_counts(ground_truth, sigmas)
    for index, record in enumerate(results):
        where = f"{source}: result #{index}"
        if not isinstance(record, Mapping):
            raise ValueError(f"{where} is a {type(record).__name__}, not an object")
        where += f" (image_id {record.get('image_id')!r})"
        missing = [key for key in _REQUIRED_RESULT_KEYS if key not in record]
        if missing:
            raise ValueError(f"{where} lacks {', '.join(repr(key) for key in missing)}")
        if record["image_id"] not in image_ids:
            raise ValueError(f"{where}: image_id is not in the ground truth")
        num_keypoints = keypoint_counts.get(record["category_id"])
        if num_keypoints is None:
            raise ValueError(
                f"{where}: category_id {record['category_id']!r} is not in the ground truth"
            )
        score = record["score"]
        if not isinstance(score, numbers.Real) or isinstance(score, bool) or math.isnan(score):
            raise ValueError(f"{where}: score {score!r} is not a number")
        try:
            keypoints = np.asarray(record["keypoints"], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: keypoints is not a flat list of numbers") from None
        if keypoints.ndim != 1 or keypoints.size != 3 * num_keypoints:
            raise ValueError(
                f"{where}: keypoints has {keypoints.size} values, expected "
                f"3 × {num_keypoints} = {3 * num_keypoints} ([x, y, score] per keypoint)"
            )
        if not np.isfinite(keypoints).all():
            raise ValueError(f"{where}: keypoints contains NaN or infinity")


def evaluate_coco_keypoints(
    gt: str | Path | COCO,
    results: list[dict] | str | Path,
    sigmas: Sequence[float] | None = None,
    verbose: bool = False,
) -> dict[str, float]:
    """Official COCO keypoint evaluation (pycocotools ``COCOeval(iouType="keypoints")``).

    Args:
        gt: ground-truth annotation file, or an already loaded ``COCO`` object (reused as is).
        results: COCO results: a list of ``{image_id, category_id, keypoints: [x, y, s]*K,
            score}`` or a JSON file of one. The caller's list is not modified.
        sigmas: per-keypoint OKS sigmas; pycocotools' COCO-17 sigmas when None.
        verbose: let pycocotools print its progress and summary table.

    Returns:
        ``AP, AP50, AP75, AP_M, AP_L, AR, AR50, AR75, AR_M, AR_L`` (``COCOeval.stats[0..9]``)
        as floats. pycocotools reports -1 for an area range without ground truth; with no
        results at all every value is 0.
    """
    ground_truth = gt if isinstance(gt, COCO) else load_coco_ground_truth(gt, verbose)
    if isinstance(results, str | Path):
        source = f"results file {results}"
        results = load_coco_results(results)
    else:
        source = "results"
    if not results:
        logger.warning("%s: no results to evaluate; every COCO keypoint metric is 0", source)
        return dict.fromkeys(COCO_KEYPOINT_STAT_NAMES, 0.0)
    validate_keypoint_results(results, ground_truth, sigmas, source)

    with _quiet_unless(verbose):
        # loadRes writes id/area/bbox into the records it is given: hand it copies.
        detections = ground_truth.loadRes([dict(record) for record in results])
        evaluator = COCOeval(ground_truth, detections, iouType="keypoints")
        if sigmas is not None:
            evaluator.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {
        name: float(value)
        for name, value in zip(COCO_KEYPOINT_STAT_NAMES, evaluator.stats, strict=True)
    }


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
