"""task=train: fit, then evaluate the best checkpoint with the one evaluation protocol."""

from __future__ import annotations

import logging

import lightning as L
from omegaconf import DictConfig, OmegaConf

from posesuite.config import print_config_tree
from posesuite.tasks.common import (
    build_datamodule,
    build_module,
    optimized_value,
    trainer_session,
)

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> float | None:
    """Returns ``cfg.optimized_metric`` of the final evaluation, for Hydra sweepers."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg)
    with trainer_session(cfg) as trainer:
        if trainer.is_global_zero and cfg.get("print_config"):
            print_config_tree(cfg)
        for logger in trainer.loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        if cfg.get("ckpt_path"):
            folders = sorted({str(c.dirpath) for c in trainer.checkpoint_callbacks})
            log.info("resuming %s; this run's checkpoints go to %s", cfg.ckpt_path, folders)
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        best = best_checkpoint(trainer)
        trainer.validate(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        return optimized_value(cfg, trainer.callback_metrics)


def best_checkpoint(trainer: L.Trainer) -> str:
    """Path of the best checkpoint by the monitored metric ('' when none was saved)."""
    if trainer.fast_dev_run:
        return ""
    monitored = [c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None)]
    return monitored[0].best_model_path if monitored else ""
