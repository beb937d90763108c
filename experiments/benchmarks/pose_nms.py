"""Time of RMPE's parametric pose NMS (``parametric_pose_nms``) on one image's candidates,
side by side with the loop form of the algorithm and the earlier full-pool sweep.

Three implementations of the same algorithm, on the same float64 inputs in one run:

- loop form: ``reference_pose_nms`` (tests/postprocess/pose_nms_reference.py), REFERENCE.md's
  algorithm one candidate and keypoint at a time in plain Python, given the inputs as lists;
- full pool: ``full_pool_pose_nms`` (same file), the earlier vectorised code, which tests each
  pick against the whole remaining pool in tensor ops;
- pruned: ``parametric_pose_nms``, which tests each pick only against the candidates within its
  reach (the keypoint-box bound of its module docstring), in batched rounds.

Layouts, for N = 50, 200, 1000 candidates and K = 17 and 136 keypoints (``alphapose_public``
constants, all keypoints weighted alike):

- clustered: 10 candidates per person, jittered copies of one pose (what a detector with
  several boxes per person gives): about N / 10 picks;
- independent: every candidate a different person, far from all others: N picks;
- crowd: every candidate a different pose, all in one place with overlapping keypoint boxes:
  nothing can be pruned, the pruned code's worst case.

Pruned and full pool: the median of ``--repeats`` runs after a warm-up, taken in turn. The loop
form is slow (up to a minute a run): ``--reference-repeats`` runs, fewer once its runs of that
row add up to ``--reference-seconds``. Each row checks that the pruned output equals the full-pool
output field by field (``torch.equal``) and the loop form's kept poses and clusters. One thread.

    flock /tmp/posesuite-cpu.lock .venv/bin/python experiments/benchmarks/pose_nms.py
    .venv/bin/python experiments/benchmarks/pose_nms.py --quick     # smoke run, writes nothing
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from machine import machine_info, warn_if_busy, write_results

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests/postprocess"))
from pose_nms_reference import full_pool_pose_nms, reference_pose_nms

from posesuite.postprocess.pose_nms import (
    PoseNMSParams,
    PoseNMSResult,
    parametric_pose_nms,
)

RESULTS_FILE = Path(__file__).resolve().parent / "results/pose_nms.json"
LAYOUTS = ("clustered", "independent", "crowd")
CANDIDATES_PER_PERSON = 10
QUICK_SIZES = (10, 20)
PRESET = "alphapose_public"


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
    loop_ms: list[float]
    full_pool_ms: list[float]
    pruned_ms: list[float]
    identical_to_full_pool: bool
    clusters_as_loop_form: bool

    @property
    def loop_median(self) -> float:
        return statistics.median(self.loop_ms)

    @property
    def full_pool_median(self) -> float:
        return statistics.median(self.full_pool_ms)

    @property
    def pruned_median(self) -> float:
        return statistics.median(self.pruned_ms)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[50, 200, 1000], help="candidates per image"
    )
    parser.add_argument("--keypoints", type=int, nargs="+", default=[17, 136], help="K")
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per row (median)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per row")
    parser.add_argument(
        "--reference-repeats", type=int, default=3, help="most timed runs of the loop form"
    )
    parser.add_argument(
        "--reference-seconds",
        type=float,
        default=10.0,
        help="no further loop-form run of a row once its runs add up to this",
    )
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
        args.sizes, args.repeats, args.reference_repeats = list(QUICK_SIZES), 2, 1
    elif args.output is None:
        args.output = RESULTS_FILE
    if args.repeats < 1 or args.reference_repeats < 1:
        parser.error("--repeats and --reference-repeats must be at least 1")
    return args


def make_candidates(
    num_candidates: int, num_keypoints: int, layout: str, seed: int, device: torch.device
) -> Candidates:
    """Random float64 poses of people 50-200 px tall on a 300 px grid (clustered,
    independent), or all with their keypoint box's corner at the origin (crowd)."""
    generator = torch.Generator().manual_seed(seed)
    per_person = CANDIDATES_PER_PERSON if layout == "clustered" else 1
    num_people = -(-num_candidates // per_person)
    columns = max(1, round(num_people**0.5))
    cell = torch.arange(num_people)
    corners = torch.stack([cell % columns, cell // columns], dim=-1).double() * 300
    if layout == "crowd":
        corners = torch.zeros_like(corners)
    sizes = torch.rand(num_people, 1, 1, generator=generator, dtype=torch.float64) * 150 + 50
    unit = torch.rand(num_people, num_keypoints, 2, generator=generator, dtype=torch.float64)
    if layout == "crowd":
        unit[:, :2] = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    people = corners[:, None] + unit * sizes
    keypoints = people.repeat_interleave(per_person, dim=0)[:num_candidates]
    if layout == "clustered":
        jitter = torch.tensor([0.5, 2.0, 5.0], dtype=torch.float64)[
            torch.randint(0, 3, (num_candidates, 1, 1), generator=generator)
        ]
        noise = torch.randn(keypoints.shape, generator=generator, dtype=torch.float64)
        keypoints = keypoints + noise * jitter
    boxes = torch.cat([keypoints.amin(1), keypoints.amax(1)], dim=-1)
    keypoint_scores = (
        torch.rand(num_candidates, num_keypoints, generator=generator, dtype=torch.float64) * 0.7
        + 0.3
    )
    box_scores = torch.rand(num_candidates, generator=generator, dtype=torch.float64)
    return Candidates(
        boxes=boxes.to(device),
        box_scores=box_scores.to(device),
        keypoints=keypoints.to(device),
        keypoint_scores=keypoint_scores.to(device),
    )


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so that a timestamp closes the run it follows."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], object], device: torch.device) -> tuple[float, object]:
    synchronize(device)
    start = time.perf_counter()
    output = run()
    synchronize(device)
    return 1000 * (time.perf_counter() - start), output


def identical(ours: PoseNMSResult, theirs: PoseNMSResult) -> bool:
    fields = ("kept", "keypoints", "keypoint_scores", "scores", "box_scores")
    return (
        all(torch.equal(getattr(ours, name), getattr(theirs, name)) for name in fields)
        and len(ours.clusters) == len(theirs.clusters)
        and all(torch.equal(a, b) for a, b in zip(ours.clusters, theirs.clusters, strict=True))
    )


def run_case(
    num_candidates: int, num_keypoints: int, layout: str, args: argparse.Namespace
) -> Result:
    device = torch.device(args.device)
    candidates = make_candidates(num_candidates, num_keypoints, layout, args.seed, device)
    params = PoseNMSParams.preset(PRESET)
    inputs = (
        candidates.boxes,
        candidates.box_scores,
        candidates.keypoints,
        candidates.keypoint_scores,
        params,
    )
    timings: dict[str, list[float]] = {"pruned": [], "full_pool": []}
    functions = {"pruned": parametric_pose_nms, "full_pool": full_pool_pose_nms}
    outputs = {}
    for run in range(args.warmup + args.repeats):
        for name, function in functions.items():  # in turn, so drift falls on both
            elapsed, outputs[name] = timed(lambda function=function: function(*inputs), device)
            if run >= args.warmup:
                timings[name].append(elapsed)
    as_lists = [t.tolist() for t in (candidates.boxes, candidates.keypoints)]
    scores = candidates.keypoint_scores.tolist()
    loop_ms: list[float] = []
    while len(loop_ms) < args.reference_repeats and sum(loop_ms) < 1000 * args.reference_seconds:
        elapsed, expected = timed(lambda: reference_pose_nms(*as_lists, scores, params), device)
        loop_ms.append(elapsed)
    pruned = outputs["pruned"]
    outcome = Result(
        num_candidates,
        num_keypoints,
        layout,
        len(pruned.kept),
        loop_ms,
        timings["full_pool"],
        timings["pruned"],
        identical(pruned, outputs["full_pool"]),
        pruned.kept.tolist() == [pick for pick, *_ in expected]
        and [c.tolist() for c in pruned.clusters] == [members for _, members, *_ in expected],
    )
    print(
        f"N={num_candidates} K={num_keypoints} {layout}: loop {outcome.loop_median:.1f} ms,"
        f" full pool {outcome.full_pool_median:.2f} ms, pruned {outcome.pruned_median:.2f} ms,"
        f" {outcome.num_kept} kept",
        file=sys.stderr,
    )
    return outcome


def ratio(slower: float, faster: float) -> str:
    value = slower / faster
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def markdown_table(results: Sequence[Result]) -> str:
    lines = [
        "| N | K | layout | kept | loop form ms (runs) | full pool ms | pruned ms"
        " | × vs loop | × vs full pool | same output |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        same = "yes" if r.identical_to_full_pool and r.clusters_as_loop_form else "**no**"
        lines.append(
            f"| {r.num_candidates} | {r.num_keypoints} | {r.layout} | {r.num_kept} "
            f"| {r.loop_median:.1f} ({len(r.loop_ms)}) | {r.full_pool_median:.2f} "
            f"| {r.pruned_median:.2f} | {ratio(r.loop_median, r.pruned_median)} "
            f"| {ratio(r.full_pool_median, r.pruned_median)} | {same} |"
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
            "preset": PRESET,
            "candidates_per_person_clustered": CANDIDATES_PER_PERSON,
            "warmup_runs": args.warmup,
            "timed_runs": args.repeats,
            "loop_form_runs_at_most": args.reference_repeats,
            "loop_form_seconds_per_row": args.reference_seconds,
            "dtype": "float64",
            "seed": args.seed,
        },
        "results": [
            {
                "num_candidates": r.num_candidates,
                "num_keypoints": r.num_keypoints,
                "layout": r.layout,
                "num_kept": r.num_kept,
                "loop_form_median_ms": r.loop_median,
                "full_pool_median_ms": r.full_pool_median,
                "pruned_median_ms": r.pruned_median,
                "speedup_vs_loop_form": r.loop_median / r.pruned_median,
                "speedup_vs_full_pool": r.full_pool_median / r.pruned_median,
                "identical_to_full_pool": r.identical_to_full_pool,
                "clusters_as_loop_form": r.clusters_as_loop_form,
                "loop_form_run_ms": r.loop_ms,
                "full_pool_run_ms": r.full_pool_ms,
                "pruned_run_ms": r.pruned_ms,
            }
            for r in results
        ],
        "table": table,
    }
    write_results(args.output, output)


if __name__ == "__main__":
    main()
