"""Pieces shared by the tasks: building objects from config, the trainer and its session, and
the DDP hygiene that keeps multi-process runs and sweeps sound."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Checkpoint
from omegaconf import DictConfig, OmegaConf, read_write

from posesuite.data.datamodule import PoseDataModule
from posesuite.lit.callbacks import RunOutputs, StopOnDivergence
from posesuite.lit.module import PoseEstimationModule

log = logging.getLogger(__name__)


def build_datamodule(cfg: DictConfig) -> PoseDataModule:
    return hydra.utils.instantiate(cfg.data, _convert_="partial")


def build_module(cfg: DictConfig) -> PoseEstimationModule:
    """The configured module; its checkpoints carry ``cfg.model`` to name the model they hold."""
    module = hydra.utils.instantiate(cfg.model.module, _convert_="partial")
    module.model_config = OmegaConf.to_container(cfg.model, resolve=True)
    return module


# bf16 autocast where bf16 is emulated: a ResNet-18 training step measured 20x slower than fp32
# on an AVX2-only CPU (experiments/benchmarks/README.md), where AVX-512 BF16 made it 1.9x faster.
EMULATED_BF16_WARNING = (
    "trainer.precision=%s on a CPU without native bf16 (no AVX-512 BF16 or AMX): autocast "
    "emulates it, ~20x slower than 32-true here; trainer.precision=auto picks 32-true"
)


def cpu_has_native_bf16() -> bool:
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_precision(precision: str | int, accelerator: str) -> str | int:
    """``trainer.precision``: ``auto`` is bf16 autocast where the device computes bf16 natively
    (a GPU that supports it, a CPU with AVX-512 BF16 or AMX), else fp16 autocast on a GPU and
    fp32 on a CPU; anything else is Lightning's own value, kept (with a warning where bf16 would
    be emulated)."""
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if precision == "auto":
        if on_gpu:
            return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        return "bf16-mixed" if cpu_has_native_bf16() else "32-true"
    if not on_gpu and str(precision).startswith("bf16") and not cpu_has_native_bf16():
        log.warning(EMULATED_BF16_WARNING, precision)
    return precision


def build_trainer(cfg: DictConfig, training: bool = True) -> L.Trainer:
    """The configured trainer, with `RunOutputs` always among its callbacks (every run writes
    its metrics.json and predictions) and, for training, `StopOnDivergence`; its precision
    resolved for this machine (`resolve_precision`). An evaluation
    (``training=False``) leaves the checkpoint callbacks out: it writes no checkpoint."""
    # DistributedSampler pads the last batch with repeated samples; our metrics de-duplicate on
    # sample_id, so Lightning's advice to validate on one device does not apply.
    warnings.filterwarnings("ignore", message=r".*DistributedSampler.*replicates some samples")
    # A resumed run writes its checkpoints into its own folder, not the one it resumes from:
    # that the folder changed is expected (logged by the train task), not worth a warning.
    warnings.filterwarnings("ignore", message=r".*The dirpath has changed from")
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if training:
        callbacks.append(StopOnDivergence())
    else:
        callbacks = [c for c in callbacks if not isinstance(c, Checkpoint)]
    callbacks.append(RunOutputs(output_dir(cfg)))
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    extra = {} if training else {"enable_checkpointing": False}
    extra["precision"] = resolve_precision(
        cfg.trainer.get("precision", "auto"), str(cfg.trainer.get("accelerator", "auto"))
    )
    return hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, **extra)


def log_lightning_once() -> None:
    """Drop the console handler the ``lightning`` package adds to its logger at import.

    Its records also reach the root logger, which Hydra configures (console and the run's log
    file), so each Lightning INFO line would otherwise be printed twice.
    """
    if logging.getLogger().handlers:  # keep Lightning's own output where nothing else prints
        lightning_logger = logging.getLogger("lightning")
        for handler in list(lightning_logger.handlers):
            lightning_logger.removeHandler(handler)


def output_dir(cfg: DictConfig) -> Path:
    path = Path(cfg.paths.output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def trainer_session(cfg: DictConfig, training: bool = True) -> Iterator[L.Trainer]:
    """Set-up and clean-up around a task's trainer (`build_trainer`), also when the task fails:
    the DDP launch made safe for sweeps, loggers finished, the process group destroyed."""
    trainer = None
    try:
        trainer = build_trainer(cfg, training)
        with ddp_safe_launch():
            yield trainer
    finally:
        finish_loggers(trainer)
        teardown_distributed()


def optimized_value(cfg: DictConfig, metrics: Mapping[str, Any]) -> float | None:
    """The value of ``cfg.optimized_metric`` (e.g. ``val/AP``) for Hydra sweepers, from
    ``trainer.callback_metrics`` (``val/AP``) or a metrics.json dict (``AP``)."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    for key in (name, name.split("/", 1)[-1]):
        if key in metrics:
            return float(metrics[key])
    raise KeyError(f"optimized_metric={name!r} not among the run's metrics: {sorted(metrics)}")


# Variables Lightning's DDP launcher exports into the launching process.
DDP_ENVIRONMENT = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


@contextlib.contextmanager
def ddp_safe_launch() -> Iterator[None]:
    """Make Lightning's DDP child processes run this job, and only this job.

    - Lightning relaunches ``sys.argv`` for ranks > 0 in the Hydra *run* folder. In a multirun,
      that command is the whole sweep (rank 1 would run every job) and that folder is not the
      job's. During the launch, the command becomes this job's own overrides and the run folder
      becomes this job's output folder.
    - The launcher exports LOCAL_RANK, WORLD_SIZE, MASTER_PORT... into this process. Left in
      place, the next job of a sweep would take them as a sign that its processes are created
      externally, start no children, and wait for them forever. They are restored afterwards.
    """
    saved_environment = {name: os.environ.get(name) for name in DDP_ENVIRONMENT}
    multirun = HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN"
    if multirun:
        hydra_cfg = HydraConfig.get()
        saved_argv, saved_run_dir = list(sys.argv), hydra_cfg.run.dir
        sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
        with read_write(hydra_cfg):
            hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    try:
        yield
    finally:
        for name, value in saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if multirun:
            sys.argv = saved_argv
            with read_write(hydra_cfg):
                hydra_cfg.run.dir = saved_run_dir


def teardown_distributed() -> None:
    """Destroy the process group after a run: without it, gloo aborts at interpreter exit in a
    good share of CPU DDP runs, and the next job of a sweep cannot initialise its own group."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def finish_loggers(trainer: L.Trainer | None) -> None:
    """Close wandb's run even when the job failed, so the next job of a multirun starts clean."""
    if trainer is None:
        return
    for logger in trainer.loggers:
        experiment = getattr(logger, "_experiment", None)
        if experiment is not None and type(logger).__name__ == "WandbLogger":
            import wandb

            wandb.finish()
