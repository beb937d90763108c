"""The short training runs behind the learning tests, shared by tests/tasks/test_run.py and
experiments/learning_tests/spread.py (which measures their spread over seeds).

The baseline, CPN and RMPE runs see the same 1,200 fresh synthetic images for 300 steps and are
validated halfway and at the end; the CPN run is the CPU-sized CPN config with a ResNet-50, the
RMPE run (measured by spread.py, not yet asserted by a test: see its README) the default SPPE
behind the symmetric STN with the parallel SPPE from step 150.

The UniPose runs are smaller still (64x64 crops, 100 steps, validated every 25): UniPose-R18 on
the synthetic MPII with PCKh (`unipose_learning`), UniPose-LSTM-R18 on clips of 3 frames of the
synthetic video with PCK (`unipose_lstm_learning`).
"""

from __future__ import annotations

import csv
from pathlib import Path

LEARNING_STEPS = 300
LEARNING_SEED = 42  # the suite's seed (conf/config.yaml); the spread is measured over others
CPN_R50 = ["experiment=cpn_res18_synthetic-128x96", "model.module.network.backbone.name=resnet50"]
# RMPE: the default SPPE behind the symmetric STN, the parallel SPPE copied halfway.
RMPE = [
    "experiment=rmpe_res18_synthetic-128x96",
    f"model.module.spatial_transformer.parallel_from_step={LEARNING_STEPS // 2}",
]


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


UNIPOSE_STEPS = 100
UNIPOSE_VAL_INTERVAL = 25


def _unipose_budget(seed: int) -> list[str]:
    return [
        f"seed={seed}",
        "data.num_workers=1",
        "callbacks=none",
        "trainer.deterministic=true",
        f"++trainer.max_steps={UNIPOSE_STEPS}",
        "trainer.max_epochs=-1",
        "trainer.check_val_every_n_epoch=null",
        f"+trainer.val_check_interval={UNIPOSE_VAL_INTERVAL}",
    ]


def unipose_learning(root: Path, seed: int = LEARNING_SEED) -> list[str]:
    """UniPose-R18 (the CPU-sized experiment at 64x64: 8x8 maps, C5 4x4 with rates 3/2/1, 64
    channels) on 300 synthetic MPII images (~600 people), batch 8, validated on 30 images."""
    return [
        "experiment=unipose_res18_synthetic-96x96",
        "data=synthetic_mpii",
        f"data.root={root}",
        "data.dataset.num_train_images=300",
        "data.dataset.num_val_images=30",
        "data.batch_size=8",
        "model.input_size=[64,64]",
        "model.heatmap_size=[8,8]",
        "model.module.network.rates=[3,2,1]",
        "model.module.network.channels=64",
        "model.module.codec.sigma=0.7",
        *_unipose_budget(seed),
    ]


def unipose_lstm_learning(root: Path, seed: int = LEARNING_SEED) -> list[str]:
    """UniPose-LSTM-R18 (the CPU-sized video experiment, 64x64) on clips of 3 frames of 120
    synthetic videos, batch 4 clips, validated on the frames of 16 videos."""
    return [
        "experiment=unipose_lstm_res18_synthetic_video-64x64",
        f"data.root={root}",
        "data.dataset.num_train_videos=120",
        "data.dataset.num_val_videos=16",
        "data.dataset.clip_length=3",
        "data.batch_size=4",
        *_unipose_budget(seed),
    ]


def learning_curve(
    run_dir: Path, metric: str = "AP", loss: str = "loss"
) -> tuple[list[float], list[float]]:
    """(training losses ``train/<loss>`` as logged, validation values of ``metric`` in order)
    from the run's csv log."""
    with (run_dir / "csv" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    losses = [float(row[f"train/{loss}"]) for row in rows if row[f"train/{loss}"]]
    values = [float(row[f"val/{metric}"]) for row in rows if row[f"val/{metric}"]]
    return losses, values
