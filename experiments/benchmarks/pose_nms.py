"""Time of RMPE's parametric pose NMS (``parametric_pose_nms``) on one image's candidates.

The NMS compares each pick with the whole remaining pool in tensor ops, with one Python
iteration per pick, so its cost depends on how many picks the candidates make. Two layouts:

- clustered: 10 candidates per person, jittered copies of one pose (what a detector with
  several boxes per person gives): about N / 10 picks;
- independent: every candidate a different person, far from all others: N picks, the worst case.

For N = 50, 200, 1000 candidates and K = 17 and 136 keypoints (the ``alphapose_public``
constants, all keypoints weighted alike: part weights cost the same), the median of several
runs, in a single thread.

    .venv/bin/python experiments/benchmarks/pose_nms.py [--sizes 50 200 1000] [--repeats 7]
    .venv/bin/python experiments/benchmarks/pose_nms.py --quick     # smoke run, writes nothing
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from machine import machine_info, warn_if_busy, write_results

from posesuite.postprocess.pose_nms import PoseNMSParams, parametric_pose_nms

RESULTS_FILE = Path(__file__).resolve().parent / "results/pose_nms.json"
LAYOUTS = ("clustered", "independent")
CANDIDATES_PER_PERSON = 10
QUICK_SIZES = (10, 20)


@dataclass(frozen=True)
class Candidates:
    boxes: torch.Tensor  # (N, 4)
    box_scores: torch.Tensor  # (N,)
    keypoints: torch.Tensor  # (N, K, 2)
    keypoint_scores: torch.Tensor  # (N, K)


@dataclass(frozen=True)
class Result:
    num_candidates: int
    num_keypoints: int
    layout: str
    num_kept: int
    run_ms: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.run_ms)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[50, 200, 1000], help="candidates per image"
    )
    parser.add_argument("--keypoints", type=int, nargs="+", default=[17, 136], help="K")
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per row (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per row")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: N = {' '.join(map(str, QUICK_SIZES))}, 2 repeats, no JSON unless"
        " --output is given",
    )
    parser.add_argument("--output", type=Path, help=f"JSON results file (default: {RESULTS_FILE})")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats = list(QUICK_SIZES), 2
    elif args.output is None:
        args.output = RESULTS_FILE
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def make_candidates(
    num_candidates: int, num_keypoints: int, layout: str, seed: int, device: torch.device
) -> Candidates:
    """Random poses of people 50-200 px tall; in the independent layout the people sit on a
    300 px grid, so no two candidates are alike."""
    generator = torch.Generator().manual_seed(seed)
    per_person = CANDIDATES_PER_PERSON if layout == "clustered" else 1
    num_people = -(-num_candidates // per_person)
    columns = max(1, round(num_people**0.5))
    cell = torch.arange(num_people)
    corners = torch.stack([cell % columns, cell // columns], dim=-1).double() * 300
    sizes = torch.rand(num_people, 1, 1, generator=generator, dtype=torch.float64) * 150 + 50
    unit = torch.rand(num_people, num_keypoints, 2, generator=generator, dtype=torch.float64)
    people = corners[:, None] + unit * sizes
    keypoints = people.repeat_interleave(per_person, dim=0)[:num_candidates]
    if layout == "clustered":
        jitter = torch.tensor([0.5, 2.0, 5.0], dtype=torch.float64)[
            torch.randint(0, 3, (num_candidates, 1, 1), generator=generator)
        ]
        noise = torch.randn(keypoints.shape, generator=generator, dtype=torch.float64)
        keypoints = keypoints + noise * jitter
    boxes = torch.cat([keypoints.amin(1), keypoints.amax(1)], dim=-1)
    keypoint_scores = torch.rand(num_candidates, num_keypoints, generator=generator) * 0.7 + 0.3
    box_scores = torch.rand(num_candidates, generator=generator)
    return Candidates(
        boxes=boxes.float().to(device),
        box_scores=box_scores.to(device),
        keypoints=keypoints.float().to(device),
        keypoint_scores=keypoint_scores.to(device),
    )


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so that a timestamp closes the run it follows."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_case(
    num_candidates: int, num_keypoints: int, layout: str, args: argparse.Namespace
) -> Result:
    device = torch.device(args.device)
    candidates = make_candidates(num_candidates, num_keypoints, layout, args.seed, device)
    params = PoseNMSParams.preset("alphapose_public")
    run_ms = []
    for run in range(args.warmup + args.repeats):
        synchronize(device)
        start = time.perf_counter()
        result = parametric_pose_nms(
            candidates.boxes,
            candidates.box_scores,
            candidates.keypoints,
            candidates.keypoint_scores,
            params,
        )
        synchronize(device)
        if run >= args.warmup:
            run_ms.append(1000 * (time.perf_counter() - start))
    outcome = Result(num_candidates, num_keypoints, layout, len(result.kept), run_ms)
    print(
        f"N={num_candidates} K={num_keypoints} {layout}: {outcome.median_ms:.2f} ms,"
        f" {outcome.num_kept} kept",
        file=sys.stderr,
    )
    return outcome


def markdown_table(results: Sequence[Result]) -> str:
    lines = [
        "| candidates N | keypoints K | layout | kept | median ms | µs per candidate |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.num_candidates} | {r.num_keypoints} | {r.layout} | {r.num_kept} "
            f"| {r.median_ms:.2f} | {1000 * r.median_ms / r.num_candidates:.1f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)  # one image's NMS, as a single evaluation worker runs it
    device = torch.device(args.device)
    machine = machine_info(device)  # first, so the load average is the machine's, not ours
    warn_if_busy(machine)
    results = [
        run_case(num_candidates, num_keypoints, layout, args)
        for num_keypoints in args.keypoints
        for num_candidates in args.sizes
        for layout in args.layouts
    ]
    table = markdown_table(results)
    print(table)
    if args.output is None:
        return
    output = {
        "benchmark": "pose_nms",
        "device": args.device,
        "machine": machine,
        "settings": {
            "preset": "alphapose_public",
            "candidates_per_person_clustered": CANDIDATES_PER_PERSON,
            "warmup_runs": args.warmup,
            "timed_runs": args.repeats,
            "dtype": "float32",
            "seed": args.seed,
        },
        "results": [
            {
                "num_candidates": r.num_candidates,
                "num_keypoints": r.num_keypoints,
                "layout": r.layout,
                "num_kept": r.num_kept,
                "median_ms": r.median_ms,
                "run_ms": r.run_ms,
            }
            for r in results
        ],
        "table": table,
    }
    write_results(args.output, output)


if __name__ == "__main__":
    main()
