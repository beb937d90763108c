"""Training-step time of the LightningModule under ``lightning.Trainer`` vs a plain PyTorch loop.

Both sides train the same network (same config, same initial weights) on the same pre-built batch
of uint8 crops with the same optimizer (Adam) and learning-rate schedule. The plain loop is written
against the module's parts (``network``, ``codec``, ``loss``, ``normalize``); the Lightning side
fits the module on a DataLoader that yields that batch, so no decoding is timed on either side.
The sides alternate step by step in one process (a callback runs a plain step after every
Lightning step), so the comparison holds on a machine whose speed drifts. Two precisions: fp32
(``32-true``, contiguous) and bf16 autocast with channels_last.

    .venv/bin/python experiments/benchmarks/train_step.py [--models ...] [--steps N]

torch keeps its default thread count (all cores), as in a training run.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra import compose, initialize_config_dir
from machine import machine_info, warn_if_busy, write_results
from torch.utils.data import DataLoader

import posesuite.config  # noqa: F401  (registers the ${len:} and ${repo_root:} resolvers)
from posesuite.data.batch import flatten_time
from posesuite.lit.module import PoseEstimationModule
from posesuite.paths import CONF_DIR, REPO_ROOT

RESULTS_FILE = Path(__file__).resolve().parent / "results/train_step.json"
# The module's setup() builds its validation metric from the datamodule's annotation file; it only
# stores the path, and nothing is validated here, so the file is never read.
VAL_ANNOTATIONS = REPO_ROOT.parent / "shared/data/real/coco/test_coco.json"


@dataclass(frozen=True)
class Precision:
    name: str
    trainer_precision: str
    channels_last: bool

    @property
    def bf16(self) -> bool:
        return self.trainer_precision == "bf16-mixed"


PRECISIONS = (
    Precision("fp32", "32-true", channels_last=False),
    Precision("bf16 + channels_last", "bf16-mixed", channels_last=True),
)
# Per model config: (batch size, timed steps). ResNet-50 at 256x192 takes B=16 and fewer steps to
# keep the default run within a few minutes on two CPU cores; UniPose-R101 at 368x368 (40 GFLOPs
# a crop) is measured on demand (--models unipose) with B=2.
MODEL_DEFAULTS = {"simplebaseline_small": (32, 30), "simplebaseline": (16, 10)}
ON_DEMAND_DEFAULTS = {"unipose": (2, 4)}


@dataclass(frozen=True)
class Result:
    model: str
    backbone: str
    input_size: tuple[int, int]  # (W, H)
    batch_size: int
    precision: Precision
    plain_ms: list[float]  # per timed step
    lightning_ms: list[float]  # per timed step, everything Lightning's loop does
    lightning_hook_ms: list[float]  # per timed step, on_train_batch_start -> on_train_batch_end

    @property
    def plain_median(self) -> float:
        return statistics.median(self.plain_ms)

    @property
    def lightning_median(self) -> float:
        return statistics.median(self.lightning_ms)

    @property
    def overhead_percent(self) -> float:
        return 100 * (self.lightning_median / self.plain_median - 1)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", nargs="+", default=list(MODEL_DEFAULTS), help="model configs (conf/model/)"
    )
    parser.add_argument(
        "--steps",
        type=int,
        help="timed steps per side (default: 30 small model, 10 ResNet-50)",
    )
    parser.add_argument(
        "--batch-size", type=int, help="batch size (default: 32 small model, 16 ResNet-50)"
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per side")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS_FILE, help="JSON results file")
    args = parser.parse_args(argv)
    if args.warmup < 1:
        parser.error("--warmup must be at least 1: the first Lightning step includes its set-up")
    return args


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so that a timestamp closes the step it follows."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compose_model(model: str, channels_last: bool) -> Any:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(
            "config",
            overrides=[
                f"model={model}",
                f"model.module.channels_last={str(channels_last).lower()}",
            ],
        ).model


def build_module(model_cfg: Any, seed: int) -> PoseEstimationModule:
    torch.manual_seed(seed)  # the same initial weights on both sides
    return hydra.utils.instantiate(model_cfg.module, _convert_="partial")


def fixed_batch(
    batch_size: int, input_size: tuple[int, int], num_keypoints: int, seed: int
) -> dict[str, Any]:
    """Random uint8 crops (one frame each) with every keypoint labelled and inside the crop."""
    generator = torch.Generator().manual_seed(seed)
    width, height = input_size
    return {
        "image": torch.randint(
            0, 256, (batch_size, 1, 3, height, width), dtype=torch.uint8, generator=generator
        ),
        "keypoints": torch.rand(batch_size, 1, num_keypoints, 2, generator=generator)
        * torch.tensor([width - 1.0, height - 1.0]),
        "keypoint_weight": torch.ones(batch_size, 1, num_keypoints),
        "visibility": torch.full((batch_size, 1, num_keypoints), 2, dtype=torch.uint8),
        "num_skipped": 0,
    }


class PlainLoop:
    """The training step written by hand against the module's parts."""

    def __init__(
        self,
        module: PoseEstimationModule,
        batch: dict[str, Any],
        precision: Precision,
        total_steps: int,
        device: torch.device,
    ) -> None:
        # Moves the normalisation buffers and the loss weights too. With channels_last on, the
        # module has converted the network and normalize() returns channels_last images.
        self.module = module.to(device).train()
        self.batch = batch
        self.precision = precision
        self.device = device
        self.optimizer = module.optimizer_factory(params=module.network.parameters())
        # As configure_optimizers() does under Lightning.
        self.scheduler = (
            module.scheduler_factory(optimizer=self.optimizer, total_steps=total_steps)
            if module.scheduler_factory is not None
            else None
        )

    def step(self) -> None:
        module, device = self.module, self.device
        # Copied every step, as Lightning does (a no-op on the CPU).
        batch = {
            name: value.to(device) if isinstance(value, torch.Tensor) else value
            for name, value in self.batch.items()
        }
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.precision.bf16):
            outputs = module.network(module.normalize(batch["image"].flatten(0, 1)))
            targets = module.codec.encode(flatten_time(batch), outputs)
            loss = module.loss(outputs, targets)["loss"]
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()


class FixedBatchData(L.LightningDataModule):
    """Serves one pre-built batch again and again: the training step is timed without decoding."""

    def __init__(self, batch: dict[str, Any], num_batches: int) -> None:
        super().__init__()
        self.batch = batch
        self.num_batches = num_batches
        self.val_annotations = VAL_ANNOTATIONS

    def train_dataloader(self) -> DataLoader:
        return DataLoader([self.batch] * self.num_batches, batch_size=None)


class AlternatingTimer(L.Callback):
    """Runs one plain step after every Lightning step, so the two sides alternate step by step
    and a slow spell of the machine falls on both alike.

    A Lightning step is timed from the end of the plain step before it to its
    ``on_train_batch_end``: everything Lightning's loop does (fetching the batch, hooks,
    training_step, backward, optimizer and scheduler steps). Also kept: the time between its
    ``on_train_batch_start`` and ``on_train_batch_end``.
    """

    def __init__(self, plain: PlainLoop, device: torch.device) -> None:
        self.plain = plain
        self.device = device
        self.lightning_ms: list[float] = []
        self.lightning_hook_ms: list[float] = []
        self.plain_ms: list[float] = []
        self._resumed = 0.0
        self._batch_start = 0.0

    def on_train_start(self, *args: Any) -> None:
        self._resumed = time.perf_counter()

    def on_train_batch_start(self, *args: Any) -> None:
        synchronize(self.device)
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        synchronize(self.device)
        lightning_end = time.perf_counter()
        self.lightning_ms.append(1000 * (lightning_end - self._resumed))
        self.lightning_hook_ms.append(1000 * (lightning_end - self._batch_start))
        self.plain.step()
        synchronize(self.device)
        self._resumed = time.perf_counter()
        self.plain_ms.append(1000 * (self._resumed - lightning_end))


def run_case(
    model: str, precision: Precision, args: argparse.Namespace, device: torch.device
) -> Result:
    model_cfg = compose_model(model, precision.channels_last)
    default_batch_size, default_steps = (MODEL_DEFAULTS | ON_DEMAND_DEFAULTS).get(
        model, MODEL_DEFAULTS["simplebaseline_small"]
    )
    batch_size = args.batch_size or default_batch_size
    total_steps = args.warmup + (args.steps or default_steps)
    input_size = (int(model_cfg.input_size[0]), int(model_cfg.input_size[1]))
    num_keypoints = len(model_cfg.module.skeleton.keypoints)
    batch = fixed_batch(batch_size, input_size, num_keypoints, args.seed)
    # Two modules built alike: the same initial weights on both sides.
    plain = PlainLoop(build_module(model_cfg, args.seed), batch, precision, total_steps, device)
    lightning_module = build_module(model_cfg, args.seed)
    timer = AlternatingTimer(plain, device)
    trainer = L.Trainer(
        max_steps=total_steps,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        precision=precision.trainer_precision,
        callbacks=[timer],
    )
    trainer.fit(lightning_module, datamodule=FixedBatchData(batch, total_steps))
    warmup = args.warmup
    result = Result(
        model=model,
        backbone=str(model_cfg.module.network.backbone.name),
        input_size=input_size,
        batch_size=batch_size,
        precision=precision,
        plain_ms=timer.plain_ms[warmup:],
        lightning_ms=timer.lightning_ms[warmup:],
        lightning_hook_ms=timer.lightning_hook_ms[warmup:],
    )
    print(
        f"{model} {precision.name} B={batch_size}: plain {result.plain_median:.1f} ms,"
        f" Lightning {result.lightning_median:.1f} ms ({result.overhead_percent:+.1f}%)",
        file=sys.stderr,
    )
    return result


def markdown_table(results: Sequence[Result]) -> str:
    lines = [
        "| model | input (W×H) | batch | precision | plain ms/step | Lightning ms/step "
        "| plain img/s | Lightning img/s | Lightning overhead |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.model} ({r.backbone}) | {r.input_size[0]}×{r.input_size[1]} | {r.batch_size} "
            f"| {r.precision.name} | {r.plain_median:.1f} | {r.lightning_median:.1f} "
            f"| {1000 * r.batch_size / r.plain_median:.1f} "
            f"| {1000 * r.batch_size / r.lightning_median:.1f} "
            f"| {r.overhead_percent:+.1f}% ({r.lightning_median - r.plain_median:+.1f} ms) |"
        )
    return "\n".join(lines)


def result_record(result: Result, results: Sequence[Result]) -> dict[str, Any]:
    fp32 = next(
        r for r in results if r.model == result.model and r.precision.name == PRECISIONS[0].name
    )
    return {
        "model": result.model,
        "backbone": result.backbone,
        "input_size": list(result.input_size),
        "batch_size": result.batch_size,
        "precision": result.precision.trainer_precision,
        "channels_last": result.precision.channels_last,
        "timed_steps": len(result.plain_ms),
        "plain": {
            "median_ms_per_step": result.plain_median,
            "images_per_s": 1000 * result.batch_size / result.plain_median,
            "speedup_vs_fp32": fp32.plain_median / result.plain_median,
            "step_ms": result.plain_ms,
        },
        "lightning": {
            "median_ms_per_step": result.lightning_median,
            "median_ms_inside_batch_hooks": statistics.median(result.lightning_hook_ms),
            "images_per_s": 1000 * result.batch_size / result.lightning_median,
            "speedup_vs_fp32": fp32.lightning_median / result.lightning_median,
            "step_ms": result.lightning_ms,
        },
        "lightning_overhead_percent": result.overhead_percent,
        "lightning_overhead_ms": result.lightning_median - result.plain_median,
    }


def quiet_lightning() -> None:
    """Keep the output to the measurements: no banner lines, and no warnings about what this
    benchmark leaves out on purpose (loader workers: the batch is pre-built; validation)."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    machine = machine_info(
        device, lightning=L.__version__
    )  # first, so the load average is the machine's, not ours
    warn_if_busy(machine)
    quiet_lightning()
    results = [
        run_case(model, precision, args, device)
        for model in args.models
        for precision in PRECISIONS
    ]
    table = markdown_table(results)
    print(table)
    output = {
        "benchmark": "train_step",
        "device": args.device,
        "machine": machine,
        "settings": {
            "warmup_steps": args.warmup,
            "order": "one plain step after every Lightning step",
            "seed": args.seed,
            "optimizer": "Adam",
        },
        "results": [result_record(result, results) for result in results],
        "table": table,
    }
    write_results(args.output, output)


if __name__ == "__main__":
    main()
