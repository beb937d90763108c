"""The one LightningModule: network, codec, loss, post-processing and metric composed from config.

A new model family brings new network / codec / loss classes and config files; this training and
evaluation loop stays as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import nn

from posesuite.codecs.heatmap import HeatmapCodec
from posesuite.metrics.coco import COCOKeypointAP
from posesuite.postprocess.pipeline import People, PostProcess
from posesuite.skeleton import Skeleton

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PoseEstimationModule(L.LightningModule):
    def __init__(
        self,
        network: nn.Module,
        codec: HeatmapCodec,
        loss: nn.Module,
        skeleton: Skeleton | Mapping[str, Any],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        postprocess: PostProcess | None = None,
        flip_test: bool = True,
        channels_last: bool = False,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.network = network
        self.codec = codec
        self.loss = loss
        self.skeleton = Skeleton.coerce(skeleton)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.postprocess = postprocess or PostProcess()
        self.flip_test = flip_test
        self.channels_last = channels_last
        self.register_buffer(
            "image_mean", torch.tensor(image_mean).view(1, 3, 1, 1) * 255, persistent=False
        )
        self.register_buffer(
            "image_std", torch.tensor(image_std).view(1, 3, 1, 1) * 255, persistent=False
        )
        self.val_metric: COCOKeypointAP | None = None
        self.last_predictions: list[dict[str, Any]] = []
        self.last_metrics: dict[str, float] = {}
        self.last_people: People | None = None  # the last evaluation's raw (pre-NMS) poses
        if channels_last:
            self.network.to(memory_format=torch.channels_last)

    # --- set-up ------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        # Evaluation needs the ground-truth file; training alone (plain loaders) does not.
        if self.val_metric is None and hasattr(datamodule, "val_annotations"):
            sigmas = self.skeleton.sigmas.tolist()
            self.val_metric = COCOKeypointAP(
                ann_file=str(datamodule.val_annotations),
                sigmas=sigmas,
                postprocess=self.postprocess.bind(sigmas, self.skeleton),
            )

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(params=self.network.parameters())
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(
            optimizer=optimizer, total_steps=self.trainer.estimated_stepping_batches
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # --- forward -----------------------------------------------------------------------------
    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images from the workers -> normalised floats, on the device."""
        images = (images.float() - self.image_mean) / self.image_std
        return (
            images.contiguous(memory_format=torch.channels_last) if self.channels_last else images
        )

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self.network(self.normalize(images))
        self.check_heatmap_size(outputs["heatmaps"])
        return outputs

    def check_heatmap_size(self, heatmaps: torch.Tensor) -> None:
        """The network's maps must have the codec's size, or targets and decoding would not
        line up with them (e.g. an input side that is not a multiple of the backbone stride)."""
        width, height = self.codec.heatmap_size
        if tuple(heatmaps.shape[-2:]) != (height, width):
            raise ValueError(
                f"the network outputs {heatmaps.shape[-1]}x{heatmaps.shape[-2]} (W x H) heatmaps "
                f"for {tuple(self.codec.input_size)} inputs, but model.heatmap_size is "
                f"[{width}, {height}]: make model.input_size a multiple of the backbone's stride "
                "or set model.heatmap_size to what the network gives"
            )

    def predict_heatmaps(self, images: torch.Tensor) -> torch.Tensor:
        """Heatmaps of the crop, averaged with those of the mirrored crop when flip_test is on."""
        inputs = self.normalize(images)
        heatmaps = self.network(inputs)["heatmaps"].float()
        self.check_heatmap_size(heatmaps)
        if self.flip_test:
            flipped = self.network(inputs.flip(-1))["heatmaps"].float()
            heatmaps = 0.5 * (heatmaps + self.codec.flip_back(flipped, self.skeleton.flip_index))
        return heatmaps

    def predict_poses(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, K, 3) poses [x, y, score] in image pixels."""
        keypoints, scores = self.codec.decode(self.predict_heatmaps(batch["image"]))
        image_points = apply_inverse_affine(keypoints, batch["affine"].float())
        return torch.cat([image_points, scores.unsqueeze(-1)], dim=-1)

    # --- steps -------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        self.log(
            "train/skipped_samples",
            float(batch["num_skipped"]),
            reduce_fx="sum",
            on_epoch=True,
            on_step=False,
        )
        if "image" not in batch:
            return None  # every image of this batch failed to decode (reported by the dataset)
        outputs = self(batch["image"])
        targets = self.codec.encode(batch["keypoints"], batch["keypoint_weight"])
        losses = self.loss(outputs, targets)
        batch_size = batch["image"].shape[0]
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=batch_size)
        for name, value in losses.items():
            if name != "loss":
                self.log(f"train/{name}", value, batch_size=batch_size)
        return losses["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if self.val_metric is None:
            raise RuntimeError(
                "validation needs a datamodule with a COCO ground-truth file (val_annotations), "
                "such as posesuite.data.datamodule.PoseDataModule"
            )
        if "image" not in batch:
            return
        poses = self.predict_poses(batch)
        self.val_metric.update(
            sample_ids=batch["sample_id"],
            image_ids=batch["image_id"],
            keypoints=poses,
            box_scores=batch["box_score"],
            areas=batch["area"],
            boxes=batch["box"],
        )

    def on_validation_epoch_end(self) -> None:
        metrics = self.val_metric.compute()
        self.last_predictions = self.val_metric.results()
        self.last_people = self.val_metric.people()
        self.last_metrics = {k: float(v) for k, v in metrics.items()}
        self.val_metric.reset()
        # Already gathered across processes by the metric: no further sync.
        for name, value in self.last_metrics.items():
            self.log(f"val/{name}", value, prog_bar=name == "AP", sync_dist=False)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        self.on_validation_epoch_end()


def apply_inverse_affine(points: torch.Tensor, affine: torch.Tensor) -> torch.Tensor:
    """(B, K, 2) crop points -> image points, through the exact inverse of the (B, 2, 3) affines."""
    linear, shift = affine[..., :2], affine[..., 2:]
    inverse = torch.linalg.inv(linear.double())
    image_points = (points.double() - shift.transpose(-1, -2).double()) @ inverse.transpose(-1, -2)
    return image_points.to(points.dtype)
