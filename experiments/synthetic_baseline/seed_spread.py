"""The default run's spread over seeds: `python run.py seed=S` for each seed, its final val AP.

    .venv/bin/python experiments/synthetic_baseline/seed_spread.py --seeds 0 1 2 3 42 \
        --work /tmp/spread --label "$(git rev-parse --short HEAD)"

Each seed trains in ``WORK/seed_S`` (a finished run there is read, not run again) and its final
metrics go into ``seed_spread.json`` beside this file, under ``--label`` (the code's version).
The runs are deterministic (the same AP for the same seed and code, whatever the machine's
load), so they need not run alone; one run takes ~7.5 min on the 2-core CPU alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS_FILE = HERE / "seed_spread.json"
KEYS = ("AP", "AP50", "AP75", "AR", "epoch", "global_step")


def final_metrics(run_dir: Path, epochs: int) -> dict | None:
    """The run's metrics.json once its last epoch was evaluated, else None."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    return metrics if metrics.get("epoch", -1) >= epochs - 1 else None


def run(seed: int, run_dir: Path) -> None:
    command = [sys.executable, "run.py", f"seed={seed}", "print_config=false"]
    command.append(f"hydra.run.dir={run_dir}")
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 42])
    parser.add_argument("--work", type=Path, default=Path("/tmp/posesuite_seed_spread"))
    parser.add_argument("--epochs", type=int, default=8, help="the default run's trainer epochs")
    parser.add_argument("--label", required=True, help="the code's version, e.g. a commit")
    args = parser.parse_args()
    results = {}
    for seed in args.seeds:
        run_dir = args.work / f"seed_{seed}"
        metrics = final_metrics(run_dir, args.epochs)
        if metrics is None:
            run(seed, run_dir)
            metrics = final_metrics(run_dir, args.epochs)
        results[str(seed)] = {key: metrics[key] for key in KEYS}
        print(f"seed {seed}: AP {metrics['AP']:.4f}", flush=True)
    aps = [entry["AP"] for entry in results.values()]
    summary = {
        "min": min(aps),
        "max": max(aps),
        "mean": statistics.mean(aps),
        "sd": statistics.stdev(aps) if len(aps) > 1 else 0.0,
    }
    stored = json.loads(RESULTS_FILE.read_text()) if RESULTS_FILE.is_file() else {}
    stored[args.label] = {"seeds": results, "AP": summary}
    RESULTS_FILE.write_text(json.dumps(stored, indent=2) + "\n")
    print(f"AP over {len(aps)} seeds: {summary}")


if __name__ == "__main__":
    main()
