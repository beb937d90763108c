"""``posesuite-eval``: score a COCO keypoint results file against a ground-truth file.

    posesuite-eval --gt person_keypoints_val2017.json --results results.json \
        [--skeleton coco17] [--out metrics.json]

Runs the same `evaluate_coco_keypoints` as validation and ``task=eval``. User errors (missing or
malformed files, unknown skeleton, bad records) end with exit code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path

from posesuite.metrics.coco_eval import evaluate_coco_keypoints
from posesuite.skeleton import load_skeleton

PROGRAM = "posesuite-eval"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="COCO keypoint AP/AR of a results file (pycocotools COCOeval).",
    )
    parser.add_argument("--gt", required=True, type=Path, help="COCO ground-truth annotation JSON")
    parser.add_argument(
        "--results", required=True, type=Path, help="COCO keypoint results JSON (a list)"
    )
    parser.add_argument(
        "--skeleton",
        default="coco17",
        help="skeleton name under conf/skeleton/ or a YAML path; gives the OKS sigmas "
        "(default: coco17)",
    )
    parser.add_argument("--out", type=Path, help="write the ten metrics to this JSON file")
    parser.add_argument(
        "--verbose", action="store_true", help="show pycocotools' progress and summary"
    )
    return parser


def format_stats(stats: Mapping[str, float]) -> str:
    """One ``NAME  value`` line per metric."""
    width = max(len(name) for name in stats)
    return "\n".join(f"{name:<{width}}  {value:.3f}" for name, value in stats.items())


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (argparse itself exits with 2 on bad arguments)."""
    args = build_parser().parse_args(argv)
    try:
        skeleton = load_skeleton(args.skeleton)
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
