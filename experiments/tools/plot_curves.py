"""Plot a run's learning curves (train loss, val AP) from its csv/metrics.csv.

python experiments/tools/plot_curves.py RUN_DIR [RUN_DIR ...] --out curves.png [--labels a b]
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def read_series(run_dir: Path) -> dict[str, list[tuple[float, float]]]:
    """{column: [(step, value)]}, val/* columns included, so that runs whose epochs differ in
    length line up.

    The final evaluation of the best checkpoint, which task=train logs after the last epoch, is
    left out: it would show as one more point."""
    path = run_dir / "csv" / "metrics.csv"
    if not path.is_file():
        raise SystemExit(f"plot_curves: no {path} (was the run made with logger=csv?)")
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    last_epoch = max((int(r["epoch"]) for r in rows if r.get("train/loss")), default=-1)
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        for column, value in row.items():
            if value in ("", None) or column in ("epoch", "step"):
                continue
            if column.startswith("val/") and int(row["epoch"]) > last_epoch:
                continue
            series[column].append((float(row["step"]), float(value)))
    return series


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--labels", nargs="*")
    args = parser.parse_args(argv)
    labels = args.labels or [run.name for run in args.runs]
    fig, (loss_ax, ap_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    for run, label in zip(args.runs, labels, strict=True):
        series = read_series(run)
        steps, losses = zip(*series["train/loss"], strict=True)
        loss_ax.plot(steps, losses, label=label, alpha=0.8)
        steps, ap = zip(*series["val/AP"], strict=True)
        ap_ax.plot(steps, ap, "o-", label=label)
    loss_ax.set(xlabel="step", ylabel="train loss", yscale="log", title="training loss")
    ap_ax.set(xlabel="step", ylabel="COCO AP", ylim=(0, 1), title="validation AP")
    for ax in (loss_ax, ap_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
