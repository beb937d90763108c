"""The short training runs behind the learning tests, shared by tests/tasks/test_run.py and
experiments/learning_tests/spread.py (which measures their spread over seeds).

Both runs see the same 1,200 fresh synthetic images for 300 steps and are validated halfway and
at the end; the CPN run is the CPU-sized CPN config with a ResNet-50.
"""

from __future__ import annotations

import csv
from pathlib import Path

LEARNING_STEPS = 300
LEARNING_SEED = 42  # the suite's seed (conf/config.yaml); the spread is measured over others
CPN_R50 = ["experiment=cpn_res18_synthetic-128x96", "model.module.network.backbone.name=resnet50"]


def learning_data(root: Path, seed: int = LEARNING_SEED) -> list[str]:
    """Overrides of a learning run: fresh synthetic images (not the tiny set), deterministic
    algorithms, validation halfway and at the end."""
    return [
        f"seed={seed}",
        f"data.root={root}",
        "data.dataset.num_train_images=1200",
        "data.dataset.num_val_images=40",
        "data.num_workers=1",
        "callbacks=none",
        "trainer.deterministic=true",
        f"++trainer.max_steps={LEARNING_STEPS}",
        "trainer.max_epochs=-1",
        "trainer.check_val_every_n_epoch=null",
        f"+trainer.val_check_interval={LEARNING_STEPS // 2}",
    ]


def learning_curve(run_dir: Path) -> tuple[list[float], list[float]]:
    """(training losses as logged, validation APs in order) from the run's csv log."""
    with (run_dir / "csv" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    losses = [float(row["train/loss"]) for row in rows if row["train/loss"]]
    aps = [float(row["val/AP"]) for row in rows if row["val/AP"]]
    return losses, aps
