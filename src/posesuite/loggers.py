"""Logger factories that need more than a constructor call."""

from __future__ import annotations

import logging
import os
from typing import Any

from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)


def wandb_logger(**kwargs: Any) -> WandbLogger:
    """A WandbLogger that runs offline unless the user is logged in (or chose a mode: WANDB_MODE,
    or ``mode`` / ``offline`` among the arguments).

    Offline is wandb's own ``mode="offline"``: no key and no network needed. Lightning's
    ``offline=True`` is turned into it too, because Lightning implements that flag by setting
    WANDB_MODE=dryrun, which this wandb still rejects without an API key.
    """
    if kwargs.pop("offline", False):
        kwargs["mode"] = "offline"
    if "WANDB_MODE" not in os.environ and "mode" not in kwargs and not wandb_logged_in():
        kwargs["mode"] = "offline"
        log.info("wandb: not logged in, logging offline (sync later with `wandb sync`)")
    return WandbLogger(**kwargs)


def wandb_logged_in() -> bool:
    """An API key in the environment, wandb's settings or ~/.netrc (read locally, no network)."""
    import wandb

    return bool(os.environ.get("WANDB_API_KEY")) or bool(wandb.api.api_key)
