"""posesuite entry point: ``python run.py [task=train|eval|summary] [overrides...]``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import posesuite.config  # noqa: F401  (registers the OmegaConf resolvers used by conf/)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from posesuite.tasks import run_task

    return run_task(cfg)


if __name__ == "__main__":
    main()
