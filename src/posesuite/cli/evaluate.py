"""``posesuite-eval``: score a COCO keypoint results file against a ground-truth file.

    posesuite-eval --gt person_keypoints_val2017.json --results results.json \
        [--skeleton coco17] [--out metrics.json]
    posesuite-eval --protocol pckh --gt mpii_gt_val.mat --results results.json \
        [--skeleton mpii16] [--head-size headbox|joints] [--out metrics.json]

Runs the same code as validation and ``task=eval``: `evaluate_coco_keypoints` (``--protocol
coco``, the default) or `evaluate_pckh` (``--protocol pckh``: MPII's PCKh, for results whose
records carry the ``annotation_id`` of the ground-truth person, as the runs' predictions files
do). User errors (missing or malformed files, unknown skeleton, bad records) end with exit code
2 and one line on stderr.
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
from posesuite.metrics.pck import HEAD_SIZES, evaluate_pckh
from posesuite.skeleton import Skeleton, load_skeleton

PROGRAM = "posesuite-eval"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="COCO keypoint AP/AR (pycocotools COCOeval) or MPII PCKh of a results file.",
    )
    parser.add_argument(
        "--protocol",
        choices=("coco", "pckh"),
        default="coco",
        help="coco: keypoint AP/AR (default); pckh: MPII PCKh, matched by annotation_id",
    )
    parser.add_argument(
        "--gt",
        required=True,
        type=Path,
        help="ground truth: COCO annotation JSON; for pckh MPII's mpii_gt_val.mat (or a json "
        "in the common MPII form, with --head-size joints)",
    )
    parser.add_argument(
        "--results", required=True, type=Path, help="COCO keypoint results JSON (a list)"
    )
    parser.add_argument(
        "--skeleton",
        help="skeleton name under conf/skeleton/ or a YAML path; gives the OKS sigmas (coco) "
        "or the joint groups (pckh) (default: coco17, or mpii16 for pckh)",
    )
    parser.add_argument(
        "--head-size",
        choices=HEAD_SIZES,
        default="headbox",
        help="pckh: headbox (official: 0.6 x the head box diagonal) or joints (upper_neck to "
        "head_top, an approximation for ground truth without head boxes)",
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


def pckh_of_results_file(
    gt: Path, results_file: Path, skeleton: Skeleton, head_size: str = "headbox"
) -> dict[str, float]:
    """MPII PCKh of a COCO-style results file whose records carry ``annotation_id`` (the index
    of the ground-truth person in ``gt``)."""
    results = load_coco_results(results_file)
    count = skeleton.num_keypoints
    keypoints = np.zeros((len(results), count, 3))
    annotation_ids = np.zeros(len(results), dtype=np.int64)
    scores = np.zeros(len(results))
    for index, record in enumerate(results):
        where = f"results file {results_file}: result #{index}"
        if not isinstance(record, Mapping) or "annotation_id" not in record:
            raise ValueError(
                f"{where} has no annotation_id: PCKh matches each prediction to the "
                "ground-truth person it was cropped from by it"
            )
        try:
            keypoints[index] = np.asarray(record["keypoints"], dtype=np.float64).reshape(count, 3)
            annotation_ids[index] = int(record["annotation_id"])
            scores[index] = float(record.get("score", 1.0))
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"{where} needs keypoints ({count} x [x, y, score]), an integer annotation_id "
                "and a numeric score"
            ) from None
    if not np.isfinite(keypoints).all():
        raise ValueError(f"results file {results_file}: keypoints contain NaN or infinity")
    ground_truth = read_mpii_ground_truth(gt, count)
    values, _ = evaluate_pckh(ground_truth, keypoints, annotation_ids, scores, skeleton, head_size)
    return values


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (argparse itself exits with 2 on bad arguments)."""
    args = build_parser().parse_args(argv)
    try:
        if args.protocol == "pckh":
            skeleton = load_skeleton(args.skeleton or "mpii16")
            stats = pckh_of_results_file(args.gt, args.results, skeleton, args.head_size)
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
