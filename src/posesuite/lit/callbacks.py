"""The files every run writes, from a callback: what an evaluation produced, on rank 0 only.

After each validation (during training, and the final evaluation of ``task=train`` / ``task=eval``)
`RunOutputs` writes into the run folder:

- ``metrics.json``: the metric's values (``trainer.callback_metrics`` under ``val/``), what was
  evaluated (checkpoint, epoch, step, box source, ground truth) and how many samples were skipped;
- ``predictions_val.json``: the evaluated (post-processed) people as COCO results;
- the metric's reports (``per_keypoint.json``, ``per_person.json`` for COCO AP), also logged as
  tables;
- ``raw_predictions_val.pt``: the people before post-processing, which ``task=postprocess``
  re-scores without the network.

The last validation of a run wins, so after ``task=train`` the files describe the best
checkpoint's evaluation, and a run that dies leaves those of its last validation.

`StopOnDivergence` ends a training at its first non-finite loss, before NaN weights can be
saved as a checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch

from posesuite.metrics.predictions import People, coco_results

log = logging.getLogger(__name__)

RAW_PREDICTIONS = "raw_predictions_val.pt"
PROVENANCE_KEYS = ("checkpoint", "box_source", "val_annotations")


class RunOutputs(L.Callback):
    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        evaluation = getattr(pl_module, "last_evaluation", None)
        if trainer.sanity_checking or evaluation is None or not trainer.is_global_zero:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        metrics = {
            **{
                name.removeprefix("val/"): float(value)
                for name, value in trainer.callback_metrics.items()
                if name.startswith("val/")
            },
            **self.provenance(trainer),
            **skipped_counts(pl_module),
        }
        self.write_json("metrics.json", metrics)
        (self.output_dir / "predictions_val.json").write_text(
            json.dumps(coco_results(evaluation.kept))
        )
        save_raw_predictions(self.output_dir / RAW_PREDICTIONS, evaluation.raw, metrics)
        for report in evaluation.metric.reports(evaluation.kept):
            self.write_json(f"{report.name}.json", report.data)
            log.info("%s:\n%s", report.title, report.table)
        log.info(
            "metrics: %s%s",
            ", ".join(f"{k}={v:.4f}" for k, v in evaluation.values.items()),
            skipped_note(metrics, len(evaluation.raw.image_ids)),
        )
        log.info("wrote metrics.json, predictions and reports in %s", self.output_dir)

    @staticmethod
    def provenance(trainer: L.Trainer) -> dict[str, Any]:
        """What the values were measured on: the checkpoint (when one was loaded for this
        evaluation; during training the weights of that epoch), the boxes and ground truth."""
        datamodule = trainer.datamodule
        evaluating_a_checkpoint = trainer.state.fn == "validate"
        return {
            "checkpoint": (trainer.ckpt_path or "") if evaluating_a_checkpoint else "",
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "box_source": getattr(datamodule, "box_source", None),
            "val_annotations": str(getattr(datamodule, "val_annotations", "")),
        }

    def write_json(self, name: str, content: Any) -> None:
        (self.output_dir / name).write_text(json.dumps(content, indent=2) + "\n")


def skipped_counts(pl_module: L.LightningModule) -> dict[str, int]:
    """Samples the loaders dropped (unreadable images): in training so far and in this
    evaluation, summed over processes."""
    skipped = getattr(pl_module, "skipped_samples", {"train": 0, "val": 0})
    return {"skipped_train_samples": skipped["train"], "skipped_val_samples": skipped["val"]}


def skipped_note(metrics: Mapping[str, Any], evaluated: int) -> str:
    """Said next to the metrics when this evaluation dropped samples (their people then count
    as missed against the ground truth)."""
    skipped = metrics["skipped_val_samples"]
    if not skipped:
        return ""
    return (
        f" -- {skipped} of {skipped + evaluated} evaluation samples skipped (unreadable images, "
        f"named in the warnings above): their people count as missed"
    )


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; the message gives the step, the learning rate
    and the last finite loss."""


class StopOnDivergence(L.Callback):
    """Raise `TrainingDiverged` at the first non-finite training loss, and before saving or
    validating weights that are no longer finite (an update can break the weights in a step
    whose loss was still finite). The checkpoints saved before stay as they are."""

    def __init__(self) -> None:
        self.last_finite: tuple[int, float] | None = None  # (step, loss)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if loss is None:  # a batch whose every image was unreadable
            return
        value = float(loss.detach())
        step = trainer.global_step  # the optimizer step this loss was computed for, from 1
        if math.isfinite(value):
            self.last_finite = (step, value)
            return
        raise TrainingDiverged(self.message(trainer, f"at step {step}: loss {value}"))

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self.check_weights(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check_weights(trainer, pl_module)

    def check_weights(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        broken = [n for n, p in pl_module.named_parameters() if not torch.isfinite(p).all()]
        if broken:
            where = f"after step {trainer.global_step}: weights not finite (e.g. {broken[0]})"
            raise TrainingDiverged(self.message(trainer, where))

    def message(self, trainer: L.Trainer, where: str) -> str:
        groups = [group for optimizer in trainer.optimizers for group in optimizer.param_groups]
        rates = ", ".join(sorted({f"{group['lr']:g}" for group in groups}))
        configured = ", ".join(sorted({f"{g.get('initial_lr', g['lr']):g}" for g in groups}))
        if configured != rates:  # a schedule's warm-up or decay
            rates += f", scheduled from {configured}"
        last = (
            f"last finite loss {self.last_finite[1]:.4g} at step {self.last_finite[0]}"
            if self.last_finite
            else "no finite loss before"
        )
        return (
            f"training diverged {where} (learning rate {rates}; "
            f"{last}); stopped without saving these weights, last good checkpoint: "
            f"{last_checkpoint(trainer) or 'none saved yet'}"
        )


def last_checkpoint(trainer: L.Trainer) -> str:
    """The most recently written checkpoint of this run ('' when none was written)."""
    paths = {
        path
        for callback in trainer.checkpoint_callbacks
        for path in (getattr(callback, "last_model_path", ""), callback.best_model_path)
        if path and Path(path).is_file()
    }
    return max(paths, key=lambda p: (Path(p).stat().st_mtime, p), default="")


def save_raw_predictions(path: Path, people: People, metrics: dict[str, Any]) -> None:
    """The network's image-space poses before post-processing, with what they were made from."""
    provenance = {k: metrics[k] for k in PROVENANCE_KEYS}
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
