"""Spread over seeds of the learning tests' measurements, to set their thresholds outside it.

Runs, for each seed, exactly what the tests run (the overrides come from
tests/tasks/learning_runs.py and tests/models/test_cpn.py) and adds the numbers to
``results.json`` beside this file, one entry per test and seed:

- ``baseline``: the default SimpleBaseline, 300 steps (tests/tasks/test_run.py): first and last
  logged losses, validation AP halfway and at the end;
- ``cpn_r50``: the CPU-sized CPN config with a ResNet-50, same data and budget;
- ``rmpe``: the default SPPE behind the symmetric STN with the parallel SPPE from step 150, same
  data and budget (the SPPE's own loss term, ``loss_heatmap``);
- ``cpn_one_batch``: 17 Adam steps of CPN-R50 at 256x192 on one synthetic batch
  (tests/models/test_cpn.py): each loss term's last value over its value after the first update;
- ``unipose``: UniPose-R18 at 64x64 on the synthetic MPII, 100 steps (tests/tasks/test_run.py):
  first and last logged losses, PCKh after 25 steps and at the end;
- ``unipose_lstm`` / ``unipose_lstm_single``: UniPose-LSTM-R18 at 64x64 on the synthetic video,
  100 steps, clips of 3 frames / of 1 frame (no memory): the same, with PCK.

    .venv/bin/python experiments/learning_tests/spread.py --seeds 0 1 2 3 4 [--tests baseline]

Seeds already in the file are measured again and replaced. ``--summary`` prints the table only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO / "tests" / "tasks"), str(REPO / "tests" / "models")]

from learning_runs import (  # noqa: E402
    CPN_R50,
    RMPE,
    learning_curve,
    learning_data,
    unipose_learning,
    unipose_lstm_learning,
)

RESULTS_FILE = HERE / "results.json"
TESTS = (
    "baseline",
    "cpn_r50",
    "rmpe",
    "cpn_one_batch",
    "unipose",
    "unipose_lstm",
    "unipose_lstm_single",
)
# test -> (its overrides beside learning_data's, the logged loss it reads)
AP_RUNS = {"baseline": ([], "loss"), "cpn_r50": (CPN_R50, "loss"), "rmpe": (RMPE, "loss_heatmap")}
# test -> (overrides of its run, the metric it reads)
UNIPOSE_RUNS = {
    "unipose": (unipose_learning, "PCKh"),
    "unipose_lstm": (unipose_lstm_learning, "PCK"),
    "unipose_lstm_single": (
        lambda root, seed: [*unipose_lstm_learning(root, seed), "data.dataset.clip_length=1"],
        "PCK",
    ),
}


def run_app(overrides: list[str], out_dir: Path) -> None:
    command = [
        sys.executable,
        "run.py",
        *overrides,
        f"hydra.run.dir={out_dir}",
        "print_config=false",
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")


def measure_run(test: str, seed: int, work: Path) -> dict[str, float]:
    out = work / f"{test}_{seed}"
    extra, loss = AP_RUNS[test]
    run_app(learning_data(work / "data", seed) + extra, out)
    losses, aps = learning_curve(out, loss=loss)
    return {
        "loss_first3": float(np.mean(losses[:3])),
        "loss_last3": float(np.mean(losses[-3:])),
        "ap_halfway": aps[0],
        "ap_end": aps[1],
    }


def measure_unipose_run(test: str, seed: int, work: Path) -> dict[str, float]:
    """Validations after 25, 50, 75 and 100 steps (then the final evaluation, not read)."""
    overrides, metric = UNIPOSE_RUNS[test]
    out = work / f"{test}_{seed}"
    run_app(overrides(work / f"data_{test}", seed), out)
    losses, values = learning_curve(out, metric)
    return {
        "loss_first3": float(np.mean(losses[:3])),
        "loss_last3": float(np.mean(losses[-3:])),
        f"{metric}_25": values[0],
        f"{metric}_end": values[3],
    }


def measure_one_batch(seed: int, work: Path) -> dict[str, float]:
    from test_cpn import cpn_one_batch_history

    history = cpn_one_batch_history(work / "one_batch", seed)
    return {
        f"{term}_ratio": history[-1][term] / history[1][term]
        for term in ("loss_global", "loss_refine")
    }


def summary(results: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [
        "| test | value | seeds | min | max | mean | per seed |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for test, by_seed in results.items():
        seeds = sorted(by_seed, key=int)
        for value in by_seed[seeds[0]]:
            numbers = [by_seed[s][value] for s in seeds]
            per_seed = ", ".join(f"{s}: {n:.4g}" for s, n in zip(seeds, numbers, strict=True))
            lines.append(
                f"| {test} | {value} | {len(seeds)} | {min(numbers):.4g} | {max(numbers):.4g} "
                f"| {np.mean(numbers):.4g} | {per_seed} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4])
    parser.add_argument("--tests", nargs="*", choices=TESTS, default=list(TESTS))
    parser.add_argument("--summary", action="store_true", help="print the table, run nothing")
    args = parser.parse_args(argv)
    results = json.loads(RESULTS_FILE.read_text()) if RESULTS_FILE.is_file() else {}
    if not args.summary:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            for seed in args.seeds:
                for test in args.tests:
                    if test == "cpn_one_batch":
                        numbers = measure_one_batch(seed, work)
                    elif test in UNIPOSE_RUNS:
                        numbers = measure_unipose_run(test, seed, work)
                    else:
                        numbers = measure_run(test, seed, work)
                    results.setdefault(test, {})[str(seed)] = numbers
                    RESULTS_FILE.write_text(json.dumps(results, indent=2) + "\n")
                    print(test, seed, numbers, flush=True)
    print(summary(results))


if __name__ == "__main__":
    main()
