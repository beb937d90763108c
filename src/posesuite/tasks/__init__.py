"""Entry points dispatched by run.py on ``cfg.task``."""

from __future__ import annotations

from omegaconf import DictConfig


def run_task(cfg: DictConfig) -> float | None:
    from posesuite.tasks import evaluate, fit_pgpg, postprocess, summary, train
    from posesuite.tasks.common import log_lightning_once

    log_lightning_once()
    tasks = {
        "train": train.train,
        "eval": evaluate.evaluate,
        "summary": summary.summary,
        "postprocess": postprocess.postprocess,
        "fit_pgpg": fit_pgpg.fit_pgpg,
    }
    if cfg.task not in tasks:
        raise ValueError(f"task={cfg.task!r} is not one of: {', '.join(tasks)}")
    return tasks[cfg.task](cfg)
