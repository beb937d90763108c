"""Logger factories that need more than a constructor call."""

from __future__ import annotations

import logging
import os

from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)


def wandb_logger(**kwargs) -> WandbLogger:
    """A WandbLogger that runs offline unless the user is logged in (or set WANDB_MODE)."""
    if "WANDB_MODE" not in os.environ and "offline" not in kwargs:
        import wandb

        logged_in = bool(os.environ.get("WANDB_API_KEY")) or bool(wandb.api.api_key)
        kwargs["offline"] = not logged_in
        if not logged_in:
            log.info("wandb: not logged in, logging offline (sync later with `wandb sync`)")
    return WandbLogger(**kwargs)
