"""Pieces shared by the tasks: building objects from config, the trainer, writing run outputs,
and the DDP hygiene that keeps multi-process runs and sweeps sound."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, read_write

from posesuite.data.datamodule import PoseDataModule
from posesuite.lit.module import PoseEstimationModule
from posesuite.metrics.per_keypoint import (
    format_people_table,
    format_table,
    per_keypoint_oks,
    per_person_oks,
)
from posesuite.postprocess.pipeline import People

log = logging.getLogger(__name__)


def build_datamodule(cfg: DictConfig) -> PoseDataModule:
    return hydra.utils.instantiate(cfg.data, _convert_="partial")


def build_module(cfg: DictConfig) -> PoseEstimationModule:
    return hydra.utils.instantiate(cfg.model.module, _convert_="partial")


def build_trainer(cfg: DictConfig, with_loggers: bool = True) -> L.Trainer:
    # DistributedSampler pads the last batch with repeated samples; our metrics de-duplicate on
    # sample_id, so Lightning's advice to validate on one device does not apply.
    warnings.filterwarnings("ignore", message=r".*DistributedSampler.*replicates some samples")
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = (
        [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
        if with_loggers
        else False
    )
    return hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)


def output_dir(cfg: DictConfig) -> Path:
    path = Path(cfg.paths.output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_run_outputs(
    trainer: L.Trainer,
    module: PoseEstimationModule,
    datamodule: PoseDataModule,
    out_dir: Path,
    checkpoint: str,
) -> dict[str, Any]:
    """metrics.json (the last evaluation's stats and what was evaluated), the COCO results file
    of that evaluation, per_keypoint.json (per-joint OKS terms, visible and occluded apart),
    per_person.json (people's OKS by size and share of occluded joints), and
    the raw (pre-NMS) predictions in ``RAW_PREDICTIONS``, which ``task=postprocess`` re-scores
    without the network; rank 0 writes."""
    metrics = {
        **module.last_metrics,
        "checkpoint": checkpoint,
        "box_source": datamodule.box_source,
        "val_annotations": str(datamodule.val_annotations),
        "val_images": str(datamodule.val_split.images),
    }
    if trainer.is_global_zero:
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (out_dir / "predictions_val.json").write_text(json.dumps(module.last_predictions))
        if module.last_people is not None:
            save_raw_predictions(out_dir / RAW_PREDICTIONS, module.last_people, metrics)
        ground_truth = module.val_metric.ground_truth()  # already read by the evaluation
        sigmas = module.skeleton.sigmas.tolist()
        predictions = module.last_predictions
        joints = per_keypoint_oks(ground_truth, predictions, sigmas, module.skeleton.keypoints)
        people = per_person_oks(ground_truth, predictions, sigmas)
        (out_dir / "per_keypoint.json").write_text(json.dumps(joints, indent=2) + "\n")
        (out_dir / "per_person.json").write_text(json.dumps(people, indent=2) + "\n")
        log.info("per-joint OKS terms (vis: v=2, occl: v=1):\n%s", format_table(joints))
        log.info(
            "OKS per person by size and share of occluded joints:\n%s", format_people_table(people)
        )
        log.info("metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in module.last_metrics.items()))
        log.info(
            "wrote metrics.json, predictions_val.json, per_keypoint.json and per_person.json in %s",
            out_dir,
        )
    return metrics


RAW_PREDICTIONS = "raw_predictions_val.pt"


def save_raw_predictions(path: Path, people: People, metrics: dict[str, Any]) -> None:
    """The network's image-space poses before post-processing, with what they were made from."""
    provenance = {k: metrics[k] for k in ("checkpoint", "box_source", "val_annotations")}
    torch.save({"people": people.as_dict(), **provenance}, path)


def load_raw_predictions(path: str | Path) -> tuple[People, dict[str, Any]]:
    file = Path(path)
    if file.is_dir():
        file = file / RAW_PREDICTIONS
    if not file.is_file():
        raise FileNotFoundError(
            f"raw_predictions: no such file {file} (task=eval and task=train write "
            f"{RAW_PREDICTIONS} into their run folder)"
        )
    content = torch.load(file, map_location="cpu", weights_only=True)
    return People(**content.pop("people")), content


def optimized_value(cfg: DictConfig, metrics: dict[str, Any]) -> float | None:
    """The value of ``cfg.optimized_metric`` (e.g. ``val/AP``) for Hydra sweepers."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    key = name.split("/", 1)[-1]
    if key not in metrics:
        raise KeyError(f"optimized_metric={name!r} not among the run's metrics: {sorted(metrics)}")
    return float(metrics[key])


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
