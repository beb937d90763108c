"""Every config in conf/ composes, and every model config builds its LightningModule."""

from __future__ import annotations

import hydra
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import posesuite.config  # noqa: F401  (resolvers)
from posesuite.lit.module import PoseEstimationModule
from posesuite.paths import CONF_DIR


def compose_config(overrides: list[str], with_hydra: bool = False):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(
            "config",
            overrides=["paths.output_dir=/tmp/unused", *overrides],
            return_hydra_config=with_hydra,
        )


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml")))
def test_every_model_config_builds_the_module(name):
    cfg = compose_config([f"model={name}"])
    module = hydra.utils.instantiate(cfg.model.module, _convert_="partial")
    assert isinstance(module, PoseEstimationModule)
    assert module.codec.input_size == tuple(cfg.model.input_size)


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_composes(name):
    cfg = compose_config([f"experiment={name}"])
    # A bounded run: by epochs, or by steps (max_epochs -1) as the Penn Action recipe counts them.
    bounded = cfg.trainer.max_epochs >= 1 or cfg.trainer.get("max_steps", -1) > 0
    assert bounded and cfg.data._target_.endswith("PoseDataModule")


def test_slurm_launcher_takes_its_shape_from_the_trainer():
    cfg = compose_config(
        ["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=8"], with_hydra=True
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == 8 and launcher.gpus_per_node == 8
