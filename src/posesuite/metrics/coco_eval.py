"""The official COCO keypoint evaluation (pycocotools), behind one function.

`evaluate_coco_keypoints` scores a COCO results list or file. Validation (`COCOKeypointAP` in
`posesuite.metrics.coco`), ``task=eval`` and the ``posesuite-eval`` CLI all call it, so every path
reports the same numbers. This module imports no torch, so the CLI starts quickly.
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
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval, Params

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
