"""``posesuite-eval``: score a COCO keypoint results file against a ground-truth file.

    posesuite-eval --gt person_keypoints_val2017.json --results results.json \
        [--skeleton coco17] [--out metrics.json]
    posesuite-eval --protocol pckh --gt mpii_gt_val.mat --results results.json \
        [--skeleton mpii16] [--head-size headbox|joints] [--out metrics.json]
    posesuite-eval --protocol pck --gt joints.mat#images=1001-2000 --results results.json \
        [--skeleton lsp14] [--reference torso|bbox] [--out metrics.json]

Runs the same code as validation and ``task=eval``: `evaluate_coco_keypoints` (``--protocol
coco``, the default), `evaluate_pckh` (``--protocol pckh``: MPII's PCKh, for results whose
records carry the ``annotation_id`` of the ground-truth person, as the runs' predictions files
do) or `evaluate_pck` (``--protocol pck``: PCK@0.2 of LSP's joints.mat, restricted to an image
range by ``#images=FIRST-LAST``, or of a Penn Action folder; records carry ``image_id`` and
``annotation_id``). User errors (missing or malformed files, unknown skeleton, bad records) end
with exit code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from posesuite.data.sources.mpii import read_mpii_ground_truth
from posesuite.metrics.coco_eval import evaluate_coco_keypoints, load_coco_results
from posesuite.metrics.pck import (
    HEAD_SIZES,
    REFERENCES,
    evaluate_pck,
    evaluate_pckh,
    read_keypoint_ground_truth,
)
from posesuite.skeleton import Skeleton, load_skeleton

PROGRAM = "posesuite-eval"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="COCO keypoint AP/AR (pycocotools COCOeval), MPII PCKh or PCK@0.2 (LSP, Penn "
        "Action) of a results file.",
    )
    parser.add_argument(
        "--protocol",
        choices=("coco", "pckh", "pck"),
        default="coco",
        help="coco: keypoint AP/AR (default); pckh: MPII PCKh, matched by annotation_id; pck: "
        "PCK@0.2, matched by image_id and annotation_id",
    )
    parser.add_argument(
        "--gt",
        required=True,
        type=Path,
        help="ground truth: COCO annotation JSON; for pckh MPII's mpii_gt_val.mat (or a json "
        "in the common MPII form, with --head-size joints); for pck LSP's joints.mat, "
        "joints.mat#images=FIRST-LAST for those images only (LSP's test split: "
        "#images=1001-2000; without a range every image is scored), or a Penn Action folder",
    )
    parser.add_argument(
        "--results", required=True, type=Path, help="COCO keypoint results JSON (a list)"
    )
    parser.add_argument(
        "--skeleton",
        help="skeleton name under conf/skeleton/ or a YAML path; gives the OKS sigmas (coco) "
        "or the joint groups (pckh, pck) (default: coco17, mpii16 for pckh, lsp14 for pck)",
    )
    parser.add_argument(
        "--head-size",
        choices=HEAD_SIZES,
        default="headbox",
        help="pckh: headbox (official: 0.6 x the head box diagonal) or joints (upper_neck to "
        "head_top, an approximation for ground truth without head boxes)",
    )
    parser.add_argument(
        "--reference",
        choices=REFERENCES,
        default="torso",
        help="pck: the size a joint's distance is measured in: torso (LSP's convention, left "
        "shoulder to right hip; the default) or bbox (the ground-truth box's larger side, Penn "
        "Action's convention)",
    )
    parser.add_argument("--out", type=Path, help="write the metrics to this JSON file")
    parser.add_argument(
        "--verbose", action="store_true", help="show pycocotools' progress and summary"
    )
    return parser


def format_stats(stats: Mapping[str, float]) -> str:
    """One ``NAME  value`` line per metric."""
    width = max(len(name) for name in stats)
    return "\n".join(f"{name:<{width}}  {value:.3f}" for name, value in stats.items())


def _read_results(
    results_file: Path, num_keypoints: int, keys: tuple[str, ...], protocol: str
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Keypoints (M, K, 3), each record's integer ``keys`` (``annotation_id``, ...) and scores
    of a COCO-style results file whose records name the ground truth they predict."""
    results = load_coco_results(results_file)
    keypoints = np.zeros((len(results), num_keypoints, 3))
    ids = {key: np.zeros(len(results), dtype=np.int64) for key in keys}
    scores = np.zeros(len(results))
    for index, record in enumerate(results):
        where = f"results file {results_file}: result #{index}"
        missing = [key for key in keys if not isinstance(record, Mapping) or key not in record]
        if missing:
            raise ValueError(
                f"{where} has no {' or '.join(missing)}: {protocol} matches each prediction to "
                f"the ground-truth person it was cropped from by {' and '.join(keys)}"
            )
        try:
            keypoints[index] = np.asarray(record["keypoints"], dtype=np.float64).reshape(
                num_keypoints, 3
            )
            for key in keys:
                ids[key][index] = int(record[key])
            scores[index] = float(record.get("score", 1.0))
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"{where} needs keypoints ({num_keypoints} x [x, y, score]), an integer "
                f"{' and '.join(keys)} and a numeric score"
            ) from None
    if not np.isfinite(keypoints).all():
        raise ValueError(f"results file {results_file}: keypoints contain NaN or infinity")
    return keypoints, ids, scores


def pckh_of_results_file(
    gt: Path, results_file: Path, skeleton: Skeleton, head_size: str = "headbox"
) -> dict[str, float]:
    """MPII PCKh of a COCO-style results file whose records carry ``annotation_id`` (the index
    of the ground-truth person in ``gt``)."""
    count = skeleton.num_keypoints
    keypoints, ids, scores = _read_results(results_file, count, ("annotation_id",), "PCKh")
    ground_truth = read_mpii_ground_truth(gt, count)
    values, _ = evaluate_pckh(
        ground_truth, keypoints, ids["annotation_id"], scores, skeleton, head_size
    )
    return values


def pck_of_results_file(
    gt: Path, results_file: Path, skeleton: Skeleton, reference: str = "torso"
) -> dict[str, float]:
    """PCK@0.2 of a COCO-style results file whose records carry ``image_id`` and
    ``annotation_id`` (the ground-truth entry they predict; LSP: both the image number)."""
    count = skeleton.num_keypoints
    keypoints, ids, scores = _read_results(
        results_file, count, ("image_id", "annotation_id"), "PCK"
    )
    ground_truth = read_keypoint_ground_truth(gt, count)
    values, _ = evaluate_pck(
        ground_truth,
        keypoints,
        ids["image_id"],
        ids["annotation_id"],
        scores,
        skeleton,
        reference,
    )
    return values


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (argparse itself exits with 2 on bad arguments)."""
    args = build_parser().parse_args(argv)
    try:
        if args.protocol == "pckh":
            skeleton = load_skeleton(args.skeleton or "mpii16")
            stats = pckh_of_results_file(args.gt, args.results, skeleton, args.head_size)
        elif args.protocol == "pck":
            skeleton = load_skeleton(args.skeleton or "lsp14")
            stats = pck_of_results_file(args.gt, args.results, skeleton, args.reference)
        else:
            skeleton = load_skeleton(args.skeleton or "coco17")
            stats = evaluate_coco_keypoints(
                args.gt, args.results, sigmas=skeleton.sigmas, verbose=args.verbose
            )
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(stats, indent=2) + "\n")
    except (ValueError, OSError) as err:  # SkeletonError is a ValueError
        message = " ".join(str(err).split())  # one line, even for multi-line library messages
        print(f"{PROGRAM}: error: {message}", file=sys.stderr)
        return 2
    print(format_stats(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
