"""task=eval: evaluate a checkpoint on ground-truth boxes or a detections file (data.det_file)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from posesuite.tasks.common import (
    build_datamodule,
    build_module,
    build_trainer,
    ddp_safe_launch,
    finish_loggers,
    optimized_value,
    output_dir,
    teardown_distributed,
    write_run_outputs,
)

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> float | None:
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"ckpt_path: no such checkpoint file {ckpt_path}")
    if not ckpt_path:
        log.warning("task=eval without ckpt_path: evaluating randomly initialised weights")
    out_dir = output_dir(cfg)
    datamodule = build_datamodule(cfg)
    module = build_module(cfg)
    trainer = None
    try:
        trainer = build_trainer(cfg)
        with ddp_safe_launch():
            trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
        metrics = write_run_outputs(trainer, module, datamodule, out_dir, ckpt_path or "")
    finally:
        finish_loggers(trainer)
        teardown_distributed()
    return optimized_value(cfg, metrics)
