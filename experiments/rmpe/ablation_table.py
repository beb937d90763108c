"""The table of RMPE's ablation from the run folders of experiments/rmpe/ablation.sh.

    .venv/bin/python experiments/rmpe/ablation_table.py logs/rmpe_ablation

Prints a markdown table beside the paper's MPII numbers and writes ``ablation_results.json``
beside this file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# (row, run folder under the ablation's output, the paper's MPII val mAP: RMPE, ICCV 2017)
ROWS = (
    ("full (SSTN + parallel SPPE + PGPG, pose NMS)", "rows/0", 80.8),
    ("without SSTN + parallel SPPE", "rows/1", 78.2),
    ("without the parallel SPPE", "rows/2", 79.1),
    ("without PGPG (ground-truth boxes only)", "rows/3", 73.0),
    ("random jitter instead of PGPG", "rows/4", 77.9),
    ("without pose NMS (the full model)", "no_nms", 75.7),
    ("oracle boxes (the full model)", "oracle", 84.2),
)
STATS = ("AP", "AP50", "AP75", "AR")


def main(out: Path) -> None:
    results = {}
    lines = [
        "| row | " + " | ".join(STATS) + " | paper (MPII val mAP) |",
        "|---|" + "---:|" * (len(STATS) + 1),
    ]
    for name, folder, paper in ROWS:
        metrics = json.loads((out / folder / "metrics.json").read_text())
        results[name] = {stat: metrics[stat] for stat in STATS} | {"paper_mpii_map": paper}
        values = " | ".join(f"{metrics[stat]:.3f}" for stat in STATS)
        lines.append(f"| {name} | {values} | {paper} |")
    (HERE / "ablation_results.json").write_text(json.dumps(results, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
