"""Learning-rate schedule built from config (``_partial_: true``); Lightning steps it per batch."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def warmup_then_decay(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    decay: str = "cosine",
    warmup_steps: int = 100,
    milestones: Sequence[float] = (0.71, 0.86),
    gamma: float = 0.1,
    final_ratio: float = 0.01,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then either

    - ``cosine``: cosine decay to ``final_ratio`` of the base rate at ``total_steps``, or
    - ``multistep``: the rate times ``gamma`` at each milestone, given as fractions of the run
      (the step schedule of the published top-down baselines, independent of the run's length).
    """
    if decay not in {"cosine", "multistep"}:
        raise ValueError(f"scheduler decay must be 'cosine' or 'multistep', got {decay!r}")
    boundaries = [m * total_steps for m in milestones]

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / max(1, warmup_steps))
        if decay == "multistep":
            return warm * gamma ** sum(step >= b for b in boundaries)
        progress = min(1.0, max(0, step - warmup_steps) / max(1, total_steps - warmup_steps))
        return warm * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
