"""task=eval: evaluate a checkpoint on ground-truth boxes or a detections file (data.det_file)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from posesuite.tasks.common import (
    build_datamodule,
    build_module,
    optimized_value,
    trainer_session,
)

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> float | None:
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path: no such checkpoint file {ckpt_path}")
    if not ckpt_path:
        log.warning("task=eval without ckpt_path: evaluating randomly initialised weights")
    datamodule = build_datamodule(cfg)
    module = build_module(cfg)
    with trainer_session(cfg, training=False) as trainer:
        trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
        return optimized_value(cfg, trainer.callback_metrics)
