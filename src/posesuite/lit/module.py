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

from posesuite.codecs.base import KeypointCodec
from posesuite.data.batch import flatten_time
from posesuite.data.geometry import crop_to_image_points
from posesuite.metrics.base import Evaluation, PoseMetric
from posesuite.models.rmpe import SymmetricSTN
from posesuite.postprocess.pipeline import PostProcess
from posesuite.skeleton import Skeleton

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The checkpoint entry that says which model and skeleton the weights belong to.
CHECKPOINT_KEY = "posesuite"


class CheckpointMismatch(ValueError):
    """A checkpoint's weights do not fit the configured model; the message names both models."""


class NonFinitePredictions(RuntimeError):
    """The network predicted NaN or infinite keypoints; the message says where they come from."""


class PoseEstimationModule(L.LightningModule):
    def __init__(
        self,
        network: nn.Module,
        codec: KeypointCodec,
        loss: nn.Module,
        skeleton: Skeleton | Mapping[str, Any],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        postprocess: PostProcess | None = None,
        metric: Callable[..., PoseMetric] | None = None,
        flip_test: bool = True,
        channels_last: bool = False,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        spatial_transformer: SymmetricSTN | None = None,
    ) -> None:
        super().__init__()
        self.network = network
        self.codec = codec
        self.loss = loss
        self.skeleton = Skeleton.coerce(skeleton)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.postprocess = postprocess or PostProcess()
        self.person_filter = self.postprocess.bind(self.skeleton.sigmas.tolist(), self.skeleton)
        self.metric_factory = metric
        self.flip_test = flip_test
        self.channels_last = channels_last
        self.register_buffer(
            "image_mean", torch.tensor(image_mean).view(1, 3, 1, 1) * 255, persistent=False
        )
        self.register_buffer(
            "image_std", torch.tensor(image_std).view(1, 3, 1, 1) * 255, persistent=False
        )
        self.val_metric: PoseMetric | None = None
        self.last_evaluation: Evaluation | None = None
        # The model's config (``cfg.model``), stored in checkpoints to name the model they hold.
        self.model_config: dict[str, Any] | None = None
        # Samples dropped by the loaders (unreadable images): training in total (kept across a
        # resume), validation in the current / last evaluation; summed over processes in
        # `skipped_samples` at the end of each evaluation.
        self.train_skipped = 0
        self.val_skipped = 0
        self.skipped_samples = {"train": 0, "val": 0}
        if channels_last:
            self.network.to(memory_format=torch.channels_last)
        # RMPE's STN, SDTN and parallel SPPE around the network (posesuite/models/rmpe.py).
        self.spatial_transformer = spatial_transformer
        if spatial_transformer is not None:
            if getattr(network, "temporal", False):
                raise ValueError(
                    "model.module.spatial_transformer works on single frames: a clip network "
                    f"({type(network).__name__}) cannot take it"
                )
            spatial_transformer.bind(self.network)

    # --- set-up ------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        # Evaluation needs the ground-truth file; training alone (plain loaders) does not.
        if (
            self.val_metric is None
            and self.metric_factory
            and hasattr(datamodule, "val_annotations")
        ):
            self.val_metric = self.metric_factory(
                ground_truth=datamodule.val_annotations, skeleton=self.skeleton
            )

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(params=self.parameter_groups())
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(
            optimizer=optimizer, total_steps=self.trainer.estimated_stepping_batches
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The optimizer's groups: the network, and the STN's own parameters at ``lr_scale``
        times the rate (never the frozen parallel SPPE's)."""
        groups: list[dict[str, Any]] = [{"params": list(self.network.parameters())}]
        stn = self.spatial_transformer
        if stn is not None:
            group: dict[str, Any] = {"params": stn.trainable_parameters()}
            if stn.lr_scale != 1.0:
                rate = getattr(self.optimizer_factory, "keywords", {}).get("lr")
                if rate is None:
                    raise ValueError(
                        "model.module.spatial_transformer.lr_scale needs the optimizer's lr "
                        "(model.module.optimizer.lr) to scale"
                    )
                group["lr"] = rate * stn.lr_scale
            groups.append(group)
        return groups

    # --- forward -----------------------------------------------------------------------------
    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images from the workers -> normalised floats, on the device."""
        images = (images.float() - self.image_mean) / self.image_std
        return (
            images.contiguous(memory_format=torch.channels_last) if self.channels_last else images
        )

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 clips (B, T, 3, H, W) -> the network's named outputs, for the B * T frames in
        order. A frame network sees the frames; a clip network (``temporal = True``, e.g. a
        recurrent one) sees (B, T, 3, H, W) and returns per-frame outputs itself."""
        clips, frames = images.shape[:2]
        normalized = self.normalize(images.flatten(0, 1))
        if getattr(self.network, "temporal", False):
            return self.network(normalized.view(clips, frames, *normalized.shape[1:]))
        if self.spatial_transformer is None:
            return self.network(normalized)
        # The SPPE reads the STN frame; ``theta`` travels with its outputs for the targets and
        # the SDTN, and the frames for the parallel SPPE.
        frame_images, theta = self.spatial_transformer(normalized)
        outputs = {**self.network(frame_images), "theta": theta}
        if self.spatial_transformer.parallel_active:
            outputs["stn_images"] = frame_images
        return outputs

    def predict_crop_keypoints(
        self, batch: Mapping[str, Any], frames: Mapping[str, Any] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Crop-space keypoints (B * T, K, 2) and scores (B * T, K) of the batch's frames
        (``frames``: its `flatten_time` view, made here if not given); with ``flip_test`` the
        codec merges the mirrored crop's outputs in its own way."""
        frames = flatten_time(batch) if frames is None else frames
        images = batch["image"]
        outputs = self(images)
        flipped = self(images.flip(-1)) if self.flip_test else None
        # Decoding is exact arithmetic on the maps: never in the bf16 of mixed precision.
        with torch.autocast(images.device.type, enabled=False):
            if self.spatial_transformer is not None:
                size = (images.shape[-1], images.shape[-2])
                return self.decode_through_stn(outputs, flipped, frames, size)
            if flipped is None:
                return self.codec.decode(outputs, frames)
            return self.codec.flip_test(outputs, flipped, frames, self.skeleton.flip_index)

    def decode_through_stn(
        self,
        outputs: Mapping[str, torch.Tensor],
        flipped: Mapping[str, torch.Tensor] | None,
        frames: Mapping[str, Any],
        size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each pass decoded in its own STN frame and mapped back by its own SDTN; the mirrored
        crop's keypoints are mirrored back (x -> W - 1 - x, left and right swapped) and the two
        passes averaged."""
        width = size[0]
        keypoints, scores = self.codec.decode(outputs, frames)
        keypoints = self.spatial_transformer.to_crop(keypoints, outputs["theta"], size)
        if flipped is None:
            return keypoints, scores
        mirrored, mirrored_scores = self.codec.decode(flipped, frames)
        mirrored = self.spatial_transformer.to_crop(mirrored, flipped["theta"], size)
        index = torch.as_tensor(self.skeleton.flip_index, device=keypoints.device)
        mirrored = mirrored.index_select(1, index)
        mirrored = torch.stack([width - 1 - mirrored[..., 0], mirrored[..., 1]], dim=-1)
        return 0.5 * (keypoints + mirrored), 0.5 * (scores + mirrored_scores.index_select(1, index))

    def predict_poses(
        self, batch: Mapping[str, Any], frames: Mapping[str, Any] | None = None
    ) -> torch.Tensor:
        """(B * T, K, 3) poses [x, y, score] in image pixels, one per frame."""
        frames = flatten_time(batch) if frames is None else frames
        keypoints, scores = self.predict_crop_keypoints(batch, frames)
        image_points = crop_to_image_points(keypoints.float(), frames["affine"])
        return torch.cat([image_points, scores.float().unsqueeze(-1)], dim=-1)

    # --- steps -------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        self.train_skipped += int(batch["num_skipped"])
        self.log(
            "train/skipped_samples",
            float(batch["num_skipped"]),
            reduce_fx="sum",
            on_epoch=True,
            on_step=False,
        )
        if "image" not in batch:
            return None  # every image of this batch failed to decode (reported by the dataset)
        if self.spatial_transformer is not None:
            self.spatial_transformer.refresh_parallel(self.network, self.global_step)
        outputs = self(batch["image"])
        frames = flatten_time(batch)
        if self.spatial_transformer is None:
            losses = self.loss(outputs, self.codec.encode(frames, outputs))
        else:
            losses = self.stn_losses(outputs, frames)
        batch_size = frames["keypoints"].shape[0]
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=batch_size)
        for name, value in losses.items():
            if name != "loss":
                self.log(f"train/{name}", value, batch_size=batch_size)
        return losses["loss"]

    def stn_losses(
        self, outputs: Mapping[str, torch.Tensor], frames: Mapping[str, Any]
    ) -> dict[str, torch.Tensor]:
        """The family's loss on the SPPE's maps taken back to the loose crop by the SDTN, plus
        the parallel SPPE's loss on targets centred in the STN frame (`posesuite.models.rmpe`)."""
        stn = self.spatial_transformer
        size = (frames["image"].shape[-1], frames["image"].shape[-2])
        theta = outputs["theta"]
        in_crop = stn.to_crop_maps(outputs, theta)
        losses = {
            **self.loss(in_crop, self.codec.encode(frames, in_crop)),
            # What the STN does, logged beside the losses: its zoom (the frame's side over the
            # crop's: 1 at the identity, below 1 zooming in) and its shift (normalised units).
            "stn_zoom": torch.linalg.det(theta[:, :, :2].float()).abs().sqrt().mean().detach(),
            "stn_shift": theta[:, :, 2].float().norm(dim=-1).mean().detach(),
        }
        if "stn_images" in outputs:
            parallel = stn.parallel_outputs(outputs["stn_images"])
            parallel_loss = self.loss(
                parallel, self.codec.encode(stn.centred(frames, size), parallel)
            )
            losses = {
                **losses,
                "loss": losses["loss"] + stn.parallel_weight * parallel_loss["loss"],
                "loss_parallel": parallel_loss["loss"].detach(),
            }
        return losses

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if self.val_metric is None:
            raise RuntimeError(
                "validation needs model.module.metric (conf/metric/) and a datamodule with a "
                "ground-truth file (val_annotations), such as "
                "posesuite.data.datamodule.PoseDataModule"
            )
        self.val_skipped += int(batch["num_skipped"])
        if "image" not in batch:
            return
        frames = flatten_time(batch)
        poses = self.predict_poses(batch, frames)
        if not torch.isfinite(poses).all():
            raise NonFinitePredictions(self.non_finite_cause(poses, frames))
        self.val_metric.update(
            sample_ids=frames["sample_id"],
            image_ids=frames["image_id"],
            keypoints=poses,
            box_scores=frames["box_score"],
            areas=frames["area"],
            boxes=frames["box"],
            annotation_ids=frames.get("annotation_id"),
        )

    def on_validation_epoch_start(self) -> None:
        self.val_skipped = 0

    def on_validation_epoch_end(self) -> None:
        """Gather (every rank), post-process, evaluate; every rank gets the same values."""
        skipped = torch.tensor([self.train_skipped, self.val_skipped], device=self.device)
        train, val = self.trainer.strategy.reduce(skipped, reduce_op="sum").tolist()
        self.skipped_samples = {"train": int(train), "val": int(val)}
        raw = self.val_metric.people()
        kept = self.person_filter(raw)
        values = self.val_metric.evaluate(kept)
        self.last_evaluation = Evaluation(raw=raw, kept=kept, values=values, metric=self.val_metric)
        self.val_metric.reset()
        # Already gathered across processes: no further sync.
        for name, value in values.items():
            self.log(
                f"val/{name}", value, prog_bar=name == self.val_metric.primary, sync_dist=False
            )

    def non_finite_cause(self, poses: torch.Tensor, batch: Mapping[str, Any]) -> str:
        """Which people got NaN / infinite keypoints, and whether the weights are to blame."""
        bad_people = ~torch.isfinite(poses).flatten(1).all(dim=1)
        image_ids = sorted({int(i) for i in batch["image_id"][bad_people.cpu()]})
        where = (
            f"the network predicted NaN or infinite keypoints for {int(bad_people.sum())} of "
            f"{len(poses)} people of a batch (image ids {image_ids[:5]})"
        )
        broken = [name for name, p in self.named_parameters() if not torch.isfinite(p).all()]
        checkpoint = getattr(self._trainer, "ckpt_path", None) or "the current weights"
        if broken:
            return (
                f"{where}: {len(broken)} weight tensors of {checkpoint} hold NaN or inf (e.g. "
                f"{broken[0]}), as after a training that diverged; evaluate an earlier checkpoint"
            )
        return f"{where}, although the weights of {checkpoint} are finite: check those images"

    # --- checkpoints -------------------------------------------------------------------------
    def checkpoint_description(self) -> dict[str, Any]:
        """What the weights belong to: the model's config, the skeleton's name and keypoints."""
        return {
            "model": self.model_config,
            "network": type(self.network).__name__,
            "skeleton": {"name": self.skeleton.name, "keypoints": list(self.skeleton.keypoints)},
            "skipped_train_samples": self.train_skipped,
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = self.checkpoint_description()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Runs before the weights are loaded: a checkpoint of another model ends in one line
        naming both models, instead of one ``size mismatch`` line per tensor."""
        stored = checkpoint.get(CHECKPOINT_KEY) or {}
        difference = state_dict_difference(checkpoint.get("state_dict", {}), self.state_dict())
        if difference:
            path = getattr(self._trainer, "ckpt_path", None) or "the checkpoint"
            raise CheckpointMismatch(
                f"{path} holds {describe_model(stored)}, the config builds "
                f"{describe_model(self.checkpoint_description())} ({difference}): choose the "
                f"checkpoint's model and skeleton (model=..., skeleton=...) or another checkpoint"
            )
        if self._trainer is not None and self._trainer.state.fn == "fit":  # resuming: it goes on
            self.train_skipped = int(stored.get("skipped_train_samples", 0))


def describe_model(description: Mapping[str, Any]) -> str:
    """E.g. ``model simplebaseline_res18 (TopDownNet) for skeleton coco17 (17 keypoints)``."""
    if not description:
        return "a model of unknown config (a checkpoint saved without posesuite's description)"
    name = (description.get("model") or {}).get("name", "unnamed")
    skeleton = description.get("skeleton") or {}
    keypoints = len(skeleton.get("keypoints", []))
    return (
        f"model {name} ({description.get('network')}) for skeleton "
        f"{skeleton.get('name')} ({keypoints} keypoints)"
    )


def state_dict_difference(
    stored: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> str:
    """How two state dicts differ, in a few words ('' when every tensor fits)."""
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in expected]
    resized = [k for k in expected if k in stored and stored[k].shape != expected[k].shape]
    parts = []
    if resized:
        first = resized[0]
        parts.append(
            f"{len(resized)} tensors differ in shape, e.g. {first}: "
            f"{tuple(stored[first].shape)} in the checkpoint, {tuple(expected[first].shape)} here"
        )
    if missing:
        parts.append(f"{len(missing)} missing, e.g. {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
    return "; ".join(parts)
