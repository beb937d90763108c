"""RMPE's symmetric STN on the device: the training step with the STN and the parallel SPPE
against the SPPE alone, and the cost of the on-device resampling per crop.

1. *Training step.* The module of ``--experiment`` (default: the CPU-sized RMPE) with its STN and
   parallel SPPE, and the same config without the STN (``~model.module.spatial_transformer``),
   train on one pre-built batch of uint8 crops (forward, loss, backward, Adam step), the two
   alternating step by step so that a drifting machine speed hits both alike. Median of
   ``--steps`` steps after two warm-up steps each.
2. *Resampling.* `SpatialTransformer.resample` (affine_grid + bilinear grid_sample) alone on a
   batch of normalised float crops with a non-identity theta, forward and backward: crops/s,
   to set against the data loader's crops/s (experiments/benchmarks/README.md): the resampling
   must not make the device the data bottleneck.

    .venv/bin/python experiments/benchmarks/stn.py [--experiment ...] [--steps N] [--device ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra import compose, initialize_config_dir
from machine import machine_info, warn_if_busy, write_results

import posesuite.config  # noqa: F401  (resolvers)
from posesuite.data.batch import flatten_time
from posesuite.lit.module import PoseEstimationModule
from posesuite.models.stn import SpatialTransformer
from posesuite.paths import CONF_DIR

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import fixed_batch, synchronize

RESULTS_FILE = Path(__file__).resolve().parent / "results/stn.json"


def build(
    experiment: str, with_stn: bool, device: torch.device
) -> tuple[PoseEstimationModule, Any]:
    overrides = [f"experiment={experiment}", "paths.output_dir=/tmp/unused"]
    if not with_stn:
        overrides.append("~model.module.spatial_transformer")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose("config", overrides=overrides)
    torch.manual_seed(0)
    module = hydra.utils.instantiate(cfg.model.module, _convert_="partial").to(device)
    if module.spatial_transformer is not None:
        module.spatial_transformer.refresh_parallel(module.network, step=10**9)  # parallel on
    module.train()
    return module, cfg


class Stepper:
    """One training step of a module, timed."""

    def __init__(self, module: PoseEstimationModule, batch: dict[str, Any], device: torch.device):
        self.module = module
        self.batch = {
            k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
        }
        self.optimizer = torch.optim.Adam(module.trainable_parameters(), lr=1e-4)
        self.device = device
        self.times: list[float] = []

    def step(self) -> None:
        synchronize(self.device)
        start = time.perf_counter()
        outputs = self.module(self.batch["image"])
        frames = flatten_time(self.batch)
        if self.module.spatial_transformer is None:
            loss = self.module.loss(outputs, self.module.codec.encode(frames, outputs))["loss"]
        else:
            loss = self.module.stn_losses(outputs, frames)["loss"]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        synchronize(self.device)
        self.times.append(time.perf_counter() - start)


def training_steps(experiment: str, steps: int, batch_size: int, device: torch.device) -> dict:
    with_stn, cfg = build(experiment, True, device)
    plain, _ = build(experiment, False, device)
    input_size = tuple(cfg.model.input_size)
    batch = fixed_batch(batch_size, input_size, len(cfg.skeleton.keypoints), seed=0)
    batch["affine"] = torch.eye(2, 3).expand(batch_size, 2, 3)
    sides = {
        "sppe_alone": Stepper(plain, batch, device),
        "stn_parallel": Stepper(with_stn, batch, device),
    }
    for _ in range(steps + 2):
        for stepper in sides.values():
            stepper.step()
    medians = {name: statistics.median(s.times[2:]) for name, s in sides.items()}
    return {
        "experiment": experiment,
        "input_size": list(input_size),
        "batch_size": batch_size,
        "steps": steps,
        "median_step_s": medians,
        "stn_parallel_over_sppe_alone": medians["stn_parallel"] / medians["sppe_alone"],
    }


def resampling(sizes: Sequence[tuple[int, int]], batch_size: int, repeats: int, device) -> list:
    stn = SpatialTransformer().to(device)
    theta = torch.tensor([[0.8, -0.1, 0.05], [0.1, 0.7, -0.04]], device=device)
    rows = []
    for width, height in sizes:
        images = torch.randn(batch_size, 3, height, width, device=device, requires_grad=True)
        times = []
        for _ in range(repeats + 2):
            synchronize(device)
            start = time.perf_counter()
            frames = stn.resample(images, theta.expand(batch_size, 2, 3))
            frames.sum().backward()
            synchronize(device)
            times.append(time.perf_counter() - start)
        median = statistics.median(times[2:])
        rows.append(
            {
                "input_size": [width, height],
                "batch_size": batch_size,
                "median_s": median,
                "crops_per_s": batch_size / median,
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", default="rmpe_res18_synthetic-128x96")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    machine = machine_info(device)
    warn_if_busy(machine)
    steps = training_steps(args.experiment, args.steps, args.batch_size, device)
    print(steps)
    crops = resampling([(96, 128), (192, 256), (256, 320)], 64, args.steps, device)
    print(crops)
    write_results(
        RESULTS_FILE,
        {"machine": machine, "device": str(device), "training_step": steps, "resampling": crops},
    )


if __name__ == "__main__":
    main()
