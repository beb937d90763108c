"""An oracle for the evaluation path: a network that returns the ground truth's heatmaps, run
through the one LightningModule's `validation_step` by a Lightning `Trainer.validate`."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from posesuite.codecs.heatmap import HeatmapCodec
from posesuite.data.batch import flatten_time
from posesuite.lit.module import PoseEstimationModule
from posesuite.metrics.base import PoseMetric
from posesuite.skeleton import Skeleton


class OracleNetwork(nn.Module):
    """A network that knows the answer: for the crops it is about to be shown (`show`), it
    returns the codec's targets of the ground truth, and for the mirrored crops of the flip test
    the targets of the mirrored ground truth (x -> W - 1 - x, left and right swapped)."""

    def __init__(self, codec: HeatmapCodec, flip_index: list[int]) -> None:
        super().__init__()
        self.codec = codec
        self.flip_index = flip_index
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the optimizer something to hold
        self.expected: list[tuple[torch.Tensor, torch.Tensor]] = []

    def show(self, images: torch.Tensor, frames: dict) -> None:
        width = self.codec.input_size[0]
        mirrored = frames["keypoints"][:, self.flip_index].clone()
        mirrored[..., 0] = width - 1 - mirrored[..., 0]
        weight = frames["keypoint_weight"]
        self.expected = [
            (images, self.codec.encode_keypoints(frames["keypoints"], weight)["heatmaps"]),
            (
                images.flip(-1),
                self.codec.encode_keypoints(mirrored, weight[:, self.flip_index])["heatmaps"],
            ),
        ]

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        for shown, heatmaps in self.expected:
            if torch.equal(images, shown):
                return {"heatmaps": heatmaps}
        raise AssertionError("the module passed the network crops it was not shown")


class ShowTheAnswer(Callback):
    def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
        frames = flatten_time(batch)
        module.network.show(module.normalize(batch["image"].flatten(0, 1)), frames)


def validate_with_oracle(
    datamodule: L.LightningDataModule,
    codec: HeatmapCodec,
    skeleton: Skeleton,
    metric: Callable[..., PoseMetric],
) -> tuple[dict[str, float], PoseEstimationModule]:
    """The validation values of the oracle on ``datamodule``'s validation split, and the module
    (its ``last_evaluation`` holds the predictions)."""
    module = PoseEstimationModule(
        network=OracleNetwork(codec, list(skeleton.flip_index)),
        codec=codec,
        loss=nn.MSELoss(),
        skeleton=skeleton,
        optimizer=partial(torch.optim.SGD, lr=0.0),
        metric=metric,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ShowTheAnswer()],
    )
    (values,) = trainer.validate(module, datamodule=datamodule, verbose=False)
    return values, module
