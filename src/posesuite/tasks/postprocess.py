"""task=postprocess: re-run post-processing and evaluation on cached raw predictions.

``task=eval`` and ``task=train`` save the network's image-space poses before NMS
(``raw_predictions_val.pt`` in their run folder). This task applies ``model.postprocess`` to
them and evaluates with the configured metric, without the network or the images, so a sweep
over NMS parameters costs NMS + evaluation per trial::

    python run.py task=postprocess raw_predictions=logs/eval/runs/<run> \
        model.postprocess.nms=parametric
    python run.py -m hparams_search=pose_nms_optuna raw_predictions=logs/eval/runs/<run>
"""

from __future__ import annotations

import json
import logging

import hydra
from omegaconf import DictConfig

from posesuite.lit.callbacks import load_raw_predictions
from posesuite.metrics.predictions import coco_results
from posesuite.postprocess.pipeline import PostProcess
from posesuite.skeleton import Skeleton
from posesuite.tasks.common import optimized_value, output_dir

log = logging.getLogger(__name__)


def postprocess(cfg: DictConfig) -> float | None:
    source = cfg.get("raw_predictions")
    if not source:
        raise ValueError(
            "task=postprocess needs raw_predictions=<run folder or raw_predictions_val.pt> "
            "written by task=eval or task=train"
        )
    people, provenance = load_raw_predictions(source)
    skeleton = Skeleton.coerce(cfg.skeleton)
    if people.keypoints.shape[1] != skeleton.num_keypoints:
        raise ValueError(
            f"raw_predictions {source}: poses have {people.keypoints.shape[1]} keypoints, "
            f"skeleton={skeleton.name} has {skeleton.num_keypoints}"
        )
    config: PostProcess = hydra.utils.instantiate(cfg.model.postprocess)
    kept = config.bind(skeleton.sigmas.tolist(), skeleton)(people)
    metric = hydra.utils.instantiate(cfg.metric)(
        ground_truth=provenance["val_annotations"], skeleton=skeleton
    )
    stats = metric.evaluate(kept)
    out_dir = output_dir(cfg)
    metrics = {**stats, **provenance, "raw_predictions": str(source), "nms": config.nms}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out_dir / "predictions_val.json").write_text(json.dumps(coco_results(kept)))
    log.info("metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in stats.items()))
    return optimized_value(cfg, metrics)
