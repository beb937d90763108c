"""Every experiment config builds and runs: one training and one validation batch (fast_dev_run)
of each conf/experiment/*.yaml on a few synthetic images, through the one training task."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import posesuite.config  # noqa: F401  (resolvers)
from posesuite.paths import CONF_DIR
from posesuite.tasks.train import train

EXPERIMENTS = sorted(path.stem for path in (CONF_DIR / "experiment").glob("*.yaml"))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("experiment_data")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_a_fast_dev_run_on_synthetic_data(experiment, data_root, tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                f"experiment={experiment}",
                "data=synthetic",
                # The synthetic people are COCO's: every experiment runs in their keypoint set
                # and metric (an MPII experiment's own skeleton and PCKh need MPII data).
                "skeleton=coco17",
                "metric=coco_ap",
                f"data.root={data_root}",
                "data.dataset.num_train_images=2",
                "data.dataset.num_val_images=1",
                "data.batch_size=2",
                "data.val_batch_size=2",
                "debug=fdr",
                f"paths.output_dir={tmp_path}",
                "logger=csv",
                "print_config=false",
            ],
        )
    assert cfg.model.name  # the experiment picked a model
    train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= metrics["AP"] <= 1.0
