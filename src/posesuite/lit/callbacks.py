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
"""

from __future__ import annotations

import json
import logging
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
        }
        self.write_json("metrics.json", metrics)
        (self.output_dir / "predictions_val.json").write_text(
            json.dumps(coco_results(evaluation.kept))
        )
        save_raw_predictions(self.output_dir / RAW_PREDICTIONS, evaluation.raw, metrics)
        for report in evaluation.metric.reports(evaluation.kept):
            self.write_json(f"{report.name}.json", report.data)
            log.info("%s:\n%s", report.title, report.table)
        log.info("metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in evaluation.values.items()))
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
