"""Every experiment config builds and runs: one training and one validation batch (fast_dev_run)
of each conf/experiment/*.yaml on a little of the embedded synthetic data of its own kind (MPII
experiments on data=synthetic_mpii with PCKh, video ones on data=synthetic_video with PCK, the
rest on data=synthetic with COCO AP), through the one training task."""

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


# Two-frame clips: enough to carry a recurrent state, half the cost of the configs' five.
VIDEO_SIZES = ["num_train_videos=2", "num_val_videos=1", "clip_length=2"]
# The experiment's data config (its `override /data:` entry) -> the synthetic data of its kind,
# the overrides that keep it tiny, and the primary value its metric writes.
SYNTHETIC_STAND_INS = {
    "mpii": ("synthetic_mpii", ["num_train_images=2", "num_val_images=1"], "PCKh"),
    "synthetic_mpii": ("synthetic_mpii", ["num_train_images=2", "num_val_images=1"], "PCKh"),
    "penn_action": ("synthetic_video", VIDEO_SIZES, "PCK"),
    "synthetic_video": ("synthetic_video", VIDEO_SIZES, "PCK"),
}
COCO_STAND_IN = ("synthetic", ["num_train_images=2", "num_val_images=1"], "AP")


def experiment_data(experiment: str) -> str | None:
    lines = (CONF_DIR / "experiment" / f"{experiment}.yaml").read_text().splitlines()
    for line in lines:
        words = line.split("#")[0].split()
        if words[:3] == ["-", "override", "/data:"]:
            return words[3]
    return None


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_a_fast_dev_run_on_synthetic_data(experiment, data_root, tmp_path):
    data, sizes, primary = SYNTHETIC_STAND_INS.get(experiment_data(experiment), COCO_STAND_IN)
    # The synthetic COCO people have COCO's keypoints: experiments of other sets (whose data
    # config has none here) run in COCO's keypoint set and metric.
    keypoint_set = ["skeleton=coco17", "metric=coco_ap"] if data == "synthetic" else []
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                f"experiment={experiment}",
                f"data={data}",
                *keypoint_set,
                f"data.root={data_root / data}",
                *(f"data.dataset.{size}" for size in sizes),
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
    assert 0.0 <= metrics[primary] <= (100.0 if primary.startswith("PCK") else 1.0)
