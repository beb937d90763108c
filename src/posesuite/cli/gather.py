"""Gather a Hydra multirun into one table: ``posesuite-gather SWEEP_DIR [--plot sweep.png]``.

Each job folder holds ``.hydra/overrides.yaml`` and the ``metrics.json`` its run wrote. The
table has one row per job, a column per override that varies across the sweep, then the chosen
metrics; it is printed as markdown (and written with ``--out``). ``--plot`` draws the first
metric against the first varying override, one line per combination of the others.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

DEFAULT_METRICS = ("AP", "AP50", "AP75", "AR")


def read_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """One record per finished job: ``{"job": folder name, "overrides": {...}, "metrics": {...}}``.

    Jobs without metrics.json (failed or still running) are skipped with a note on stderr.
    """
    jobs = []
    for overrides_file in sorted(sweep_dir.rglob(".hydra/overrides.yaml")):
        job_dir = overrides_file.parent.parent
        metrics_file = job_dir / "metrics.json"
        if not metrics_file.is_file():
            print(f"posesuite-gather: skipping {job_dir}: no metrics.json", file=sys.stderr)
            continue
        overrides = {}
        for item in yaml.safe_load(overrides_file.read_text()) or []:
            key, _, value = item.partition("=")
            overrides[key.lstrip("+~")] = value
        metrics = json.loads(metrics_file.read_text())
        jobs.append({**metrics, "job": str(job_dir.relative_to(sweep_dir)), "overrides": overrides})
    if not jobs:
        raise SystemExit(f"posesuite-gather: no finished job (metrics.json) under {sweep_dir}")
    return jobs


def varying_keys(jobs: Sequence[dict[str, Any]]) -> list[str]:
    """Overrides whose value differs between jobs, in first-seen order."""
    ordered = list(dict.fromkeys(key for job in jobs for key in job["overrides"]))
    return [k for k in ordered if len({job["overrides"].get(k, "") for job in jobs}) > 1]


def markdown_table(jobs: Sequence[dict[str, Any]], metrics: Sequence[str]) -> str:
    keys = varying_keys(jobs)
    header = ["job", *(k.rsplit(".", 1)[-1] for k in keys), *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for job in jobs:
        values = [job["overrides"].get(k, "") for k in keys]
        cells = [_format(job.get(m)) for m in metrics]
        lines.append("| " + " | ".join([job["job"], *values, *cells]) + " |")
    return "\n".join(lines)


def plot(jobs: Sequence[dict[str, Any]], metric: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = varying_keys(jobs)
    if not keys:
        raise SystemExit("posesuite-gather --plot: no override varies across the jobs")
    x_key, others = keys[0], keys[1:]
    lines: dict[tuple[str, ...], list[tuple[str, float]]] = defaultdict(list)
    for job in jobs:
        label = tuple(f"{k.rsplit('.', 1)[-1]}={job['overrides'].get(k, '')}" for k in others)
        lines[label].append((job["overrides"].get(x_key, ""), float(job.get(metric, math.nan))))
    figure, axes = plt.subplots(figsize=(6, 4))
    numeric = all(_is_number(x) for points in lines.values() for x, _ in points)
    for label, points in lines.items():
        points.sort(key=lambda p: float(p[0]) if numeric else p[0])
        xs = [float(x) if numeric else x for x, _ in points]
        axes.plot(xs, [y for _, y in points], marker="o", label=", ".join(label) or None)
    axes.set_xlabel(x_key)
    axes.set_ylabel(metric)
    axes.grid(alpha=0.3)
    if others:
        axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder (hydra.sweep.dir)")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS))
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    parser.add_argument("--plot", type=Path, help="PNG of the first metric vs the first override")
    args = parser.parse_args(argv)
    jobs = read_jobs(args.sweep_dir)
    table = markdown_table(jobs, args.metrics)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    if args.plot:
        plot(jobs, args.metrics[0], args.plot)


if __name__ == "__main__":
    main()
