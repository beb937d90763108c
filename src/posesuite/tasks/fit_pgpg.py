"""task=fit_pgpg: fit RMPE's pose-guided proposal generator on a dataset's training split.

    python run.py task=fit_pgpg                                   # the synthetic data's own
    python run.py task=fit_pgpg data=coco data.root=/data/coco \
        data.train_det_file=/data/coco/person_detections_train2017.json

Reads the training split's people and its detections (``data.train_det_file``, else
``data.det_file``, else the split's own, as the synthetic data has), matches them at
``data.box_match_iou``, fits the atoms and their offset mixtures (``pgpg.*``,
`posesuite.data.pgpg.fit_proposals`) and writes into the run folder ``pgpg.json`` (the artifact
``data.pgpg_file`` reads), ``pgpg.png`` (each atom with boxes drawn from its offsets) and the
report in the log. Then train with ``data.train_box_source=pgpg data.pgpg_file=<run>/pgpg.json``.
"""

from __future__ import annotations

import json
import logging

from omegaconf import DictConfig

from posesuite.data.boxes import match_pairs
from posesuite.data.pgpg import fit_proposals, plot_proposals
from posesuite.data.records import DataError
from posesuite.data.sources.coco import CocoSplit, read_detections
from posesuite.tasks.common import build_datamodule, output_dir

log = logging.getLogger(__name__)


def fit_pgpg(cfg: DictConfig) -> None:
    data = build_datamodule(cfg)
    data.prepare_data()
    split, _ = data.dataset.prepare()
    det_file = cfg.data.get("train_det_file") or cfg.data.get("det_file") or split.detections
    if not isinstance(split, CocoSplit) or det_file is None:
        raise DataError(
            f"task=fit_pgpg matches COCO detection results to the training split: set "
            f"data.train_det_file (the split is {split.annotations})"
        )
    skeleton = data.skeleton
    people = split.read_people(skeleton.num_keypoints)
    detections = read_detections(
        det_file, split.annotations, split.images, skeleton.num_keypoints, cfg.data.det_min_score
    )
    pairs = match_pairs(detections, people, cfg.data.box_match_iou)
    log.info(
        "PGPG: %d people of %s, %d of them matched by the %d detections of %s",
        len(people),
        split.annotations,
        len(pairs),
        len(detections),
        det_file,
    )
    proposals, report = fit_proposals(people, pairs, skeleton.keypoints, seed=cfg.seed, **cfg.pgpg)
    report = {"annotations": str(split.annotations), "detections": str(det_file), **report}
    out = output_dir(cfg)
    proposals.save(out / "pgpg.json", report)
    plot_proposals(proposals, skeleton.limbs, out / "pgpg.png", seed=cfg.seed)
    log.info("PGPG report: %s", json.dumps(report))
    log.info(
        "wrote %s and %s: train with data.train_box_source=pgpg data.pgpg_file=%s",
        out / "pgpg.json",
        out / "pgpg.png",
        out / "pgpg.json",
    )
