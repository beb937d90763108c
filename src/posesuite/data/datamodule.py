"""Top-down dataset and the LightningDataModule that serves it."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, default_collate

from posesuite.data.boxes import BOX_SOURCES, BoxJitter, BoxSource
from posesuite.data.decoding import decode_for_crop, is_jpeg
from posesuite.data.pgpg import PoseGuidedProposals
from posesuite.data.photometric import PhotometricAugmentation
from posesuite.data.records import DataError, PersonRecord, Split
from posesuite.data.sampler import MultiSourceSampler
from posesuite.data.sources.mixing import MixedDataset, Source
from posesuite.data.transforms import CropPlan, TopDownTransform
from posesuite.skeleton import Skeleton

log = logging.getLogger(__name__)


class DatasetFiles(Protocol):
    """A dataset description: ``prepare()`` makes its files available and returns them."""

    def prepare(self) -> tuple[Split, Split]: ...


class TopDownDataset(Dataset):
    """One person crop (of T frames, `posesuite.data.transforms`) per item. Items whose image
    cannot be decoded are reported and skipped (returned as None and dropped by
    `collate_skipping`, which counts them).

    ``decode_reduced``: decode JPEG frames at 1/2, 1/4 or 1/8 scale when the crop samples the
    image that coarsely anyway (`posesuite.data.decoding.decode_for_crop`); the sample's affine
    still maps the original image's pixels. ``device_jpeg_decode``: the worker reads the file's
    bytes (``jpeg``) instead of decoding it, and `decode_crops_on_device` makes the crops in the
    training process (single-frame JPEG records only; a file that is there but corrupt then fails
    its batch instead of being skipped).

    ``boxes``: the box source, which may redraw each sample's box (`BoxSource.draw`): from the
    transform's random stream when it augments (training), else from a generator seeded with
    (``seed``, index), the same box for a record at every evaluation.
    """

    def __init__(
        self,
        records: Sequence[PersonRecord],
        transform: TopDownTransform,
        decode_reduced: bool = False,
        device_jpeg_decode: bool = False,
        boxes: BoxSource | None = None,
        seed: int = 0,
    ) -> None:
        self.records = list(records)
        self.transform = transform
        self.decode_reduced = decode_reduced
        self.device_jpeg_decode = device_jpeg_decode
        self.boxes = boxes or BoxSource()
        self.seed = seed

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        record = self.records[index]
        if self.boxes.redraws:
            rng = (
                self.transform.rng()
                if self.transform.augmentation is not None
                else np.random.default_rng([self.seed, index])
            )
            record = self.boxes.draw(record, rng)
        plan = self.transform.plan(record)
        if self.device_jpeg_decode:
            return self._undecoded_sample(index, record, plan)
        size = self.transform.input_size
        frames = [
            decode_for_crop(path, plan.matrix, size, self.decode_reduced) for path in record.frames
        ]
        broken = [path for path, frame in zip(record.frames, frames, strict=True) if frame is None]
        if broken:
            log.warning(
                "skipping sample %d: cannot decode %s (image id %d)",
                index,
                broken[0],
                record.image_id,
            )
            return None
        sample = self.transform(
            record,
            [frame.pixels for frame in frames],
            plan,
            [frame.to_original for frame in frames],
        )
        return self._with_record(index, record, sample)

    def _undecoded_sample(
        self, index: int, record: PersonRecord, plan: CropPlan
    ) -> dict[str, Any] | None:
        if record.num_frames != 1 or not is_jpeg(record.image_path):
            raise DataError(
                f"data.device_jpeg_decode reads single JPEG images only: image id "
                f"{record.image_id}, {record.frames[0]}"
            )
        path = record.image_path
        try:
            jpeg = np.fromfile(path, np.uint8)
        except OSError as err:
            log.warning("skipping sample %d: %s (image id %d)", index, err, record.image_id)
            return None
        sample = self.transform.crop_targets(record, plan)
        sample["jpeg"] = torch.from_numpy(jpeg)
        return self._with_record(index, record, sample)

    def _with_record(
        self, index: int, record: PersonRecord, sample: dict[str, Any]
    ) -> dict[str, Any]:
        sample.update(
            sample_id=index,
            image_id=np.asarray(record.image_ids, dtype=np.int64),  # (T,)
            annotation_id=np.int64(record.annotation_id),  # -1 for detector boxes
            box_score=np.float32(record.box_score),
            # x1, y1, x2, y2 of the person box the crop came from (parametric pose NMS reads it)
            box=np.concatenate([record.bbox[:2], record.bbox[:2] + record.bbox[2:]]).astype(
                np.float32
            ),
        )
        return sample


def stop_opencv_threads() -> None:
    """Shut OpenCV's thread pool down in this process before workers are forked from it.

    A worker forked while the parent holds a started pool (the synthetic generator starts one)
    inherits the pool's bookkeeping but not its threads, and its first ``cv2.setNumThreads``
    then waits for them forever: measured 5 hangs in 20 forks here, 0 in 20 after this call.
    The training process decodes no images itself, so one OpenCV thread costs it nothing.
    """
    cv2.setNumThreads(1)


def init_worker(worker_id: int) -> None:
    """One thread per worker: the workers already run in parallel with each other and with the
    training process, and nested OpenCV / torch thread pools only make them contend."""
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def collate_skipping(samples: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Default collation of the decodable samples; ``num_skipped`` counts the others. Encoded
    images (``jpeg``, of different lengths) stay a list."""
    kept = [s for s in samples if s is not None]
    jpegs = [s.pop("jpeg") for s in kept if "jpeg" in s]
    batch = default_collate(kept) if kept else {}
    if jpegs:
        batch["jpeg"] = jpegs
    batch["num_skipped"] = len(samples) - len(kept)
    return batch


def decode_crops_on_device(
    jpegs: Sequence[torch.Tensor],
    affines: torch.Tensor,
    input_size: Sequence[int],
    device: torch.device | str,
) -> torch.Tensor:
    """uint8 (B, 1, 3, H, W) crops (a time axis of one frame) from encoded JPEGs (CPU byte
    tensors) and their (B, 2, 3) image -> crop affines: `torchvision.io.decode_jpeg` on
    ``device`` (nvJPEG on a CUDA device), then a bilinear warp with black outside the image, as
    `warp_image` does in a worker."""
    # Imported here: only this option needs torchvision's image codecs.
    from torchvision.io import ImageReadMode, decode_jpeg

    images = decode_jpeg(list(jpegs), mode=ImageReadMode.RGB, device=device)
    width, height = int(input_size[0]), int(input_size[1])
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float64),
        torch.arange(width, device=device, dtype=torch.float64),
        indexing="ij",
    )
    crop_points = torch.stack([xs, ys], -1)  # pixel centres of the crop, (H, W, 2)
    linear = affines[:, :, :2].to(device, torch.float64)
    inverse = torch.linalg.inv(linear)
    shift = affines[:, :, 2].to(device, torch.float64)
    crops = []
    for image, to_image, offset in zip(images, inverse, shift, strict=True):
        source = (crop_points - offset) @ to_image.T  # image pixel coordinates
        size = torch.tensor([image.shape[2], image.shape[1]], device=device, dtype=torch.float64)
        # align_corners=True: -1 and 1 are the centres of the first and last pixels.
        grid = (2 * source / (size - 1) - 1).float()[None]
        crop = F.grid_sample(
            image[None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True
        )
        crops.append(crop.round().clamp(0, 255).to(torch.uint8))
    return torch.stack(crops)


class PoseDataModule(L.LightningDataModule):
    """Serves top-down person crops from a COCO-format dataset.

    ``dataset`` is called with ``root`` (``data.root``: the dataset's folder, or for the synthetic
    data the cache folder it is generated into) and describes the files.

    Box sources (`posesuite.data.boxes`: ``gt``, ``detections``, ``jitter``) choose the boxes of
    the crops: ``box_source`` for evaluation (``detections``: ``det_file``, or the dataset's own
    detections; setting ``det_file`` selects them), ``train_box_source`` for training
    (``detections``: ``train_det_file``, matched to the people at IoU >= ``box_match_iou``;
    setting ``train_det_file`` selects them). ``box_jitter`` holds the `BoxJitter` constants.

    Training batches get the photometric augmentation (when the training transform's
    ``augmentation.photometric`` is on) in batch on the training device, in
    `on_after_batch_transfer`; evaluation batches are left as they are. ``decode_reduced``
    decodes training JPEGs at reduced scale where the crop allows (`TopDownDataset`);
    evaluation crops are always decoded in full, as the reference protocols do.
    ``device_jpeg_decode`` (for GPU runs) moves the decoding of every JPEG, and the crop's
    warp, from the workers to the training device (`decode_crops_on_device`).

    ``sources`` (`posesuite.data.sources.mixing.Source` by name): train on these sources, each
    mapped into the skeleton and drawn at its ratio by a `MultiSourceSampler` seeded with
    ``seed``, instead of the dataset's train split alone; their mappings are checked here.
    """

    def __init__(
        self,
        dataset: Callable[..., DatasetFiles],
        root: str,
        skeleton: Skeleton | Mapping[str, Any],
        train_transform: Callable[..., TopDownTransform],
        val_transform: Callable[..., TopDownTransform],
        batch_size: int = 32,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        box_source: str = "gt",
        det_file: str | None = None,
        det_min_score: float = 0.0,
        train_box_source: str = "gt",
        train_det_file: str | None = None,
        box_match_iou: float = 0.5,
        box_jitter: BoxJitter | Mapping[str, Any] | None = None,
        pgpg_file: str | None = None,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        decode_reduced: bool = False,
        device_jpeg_decode: bool = False,
        sources: Mapping[str, Source] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for setting, kind in (("box_source", box_source), ("train_box_source", train_box_source)):
            if kind not in BOX_SOURCES:
                raise DataError(
                    f"data.{setting} must be one of {', '.join(BOX_SOURCES)}, got {kind!r}"
                )
        jitter = (
            box_jitter if isinstance(box_jitter, BoxJitter) else BoxJitter(**(box_jitter or {}))
        )
        self.root = root
        self.dataset = dataset(root=root)
        self.skeleton = Skeleton.coerce(skeleton)
        self.train_transform = train_transform
        self.val_transform = val_transform
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.box_source = "detections" if det_file else box_source
        self.train_box_source = "detections" if train_det_file else train_box_source
        self.det_file = det_file
        proposals = None
        if "pgpg" in (self.box_source, self.train_box_source):
            if pgpg_file is None:
                raise DataError(
                    "data.box_source / data.train_box_source=pgpg needs data.pgpg_file: the "
                    "pgpg.json written by python run.py task=fit_pgpg"
                )
            proposals = PoseGuidedProposals.load(pgpg_file)
            proposals.check_keypoints(self.skeleton.keypoints, pgpg_file)
        self.val_boxes = BoxSource(
            self.box_source, det_file, det_min_score, box_match_iou, jitter, proposals
        )
        self.train_boxes = BoxSource(
            self.train_box_source, train_det_file, det_min_score, box_match_iou, jitter, proposals
        )
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.decode_reduced = decode_reduced
        self.device_jpeg_decode = device_jpeg_decode
        self.sources = [
            source.bind(name, self.skeleton, root) for name, source in (sources or {}).items()
        ]
        self.seed = seed
        self.photometric: PhotometricAugmentation | None = None
        self.train_split: Split | None = None
        self.val_split: Split | None = None
        self.train_set: TopDownDataset | None = None
        self.val_set: TopDownDataset | None = None

    def prepare_data(self) -> None:
        # Runs once per node before setup: generates the synthetic dataset on first use.
        self.dataset.prepare()

    def _splits(self) -> None:
        if self.val_split is None:
            self.train_split, self.val_split = self.dataset.prepare()

    @property
    def val_annotations(self) -> Path:
        self._splits()
        return self.val_split.annotations

    def setup(self, stage: str | None = None) -> None:
        self._splits()
        k = self.skeleton.num_keypoints
        if stage in (None, "fit") and self.train_set is None:
            transform = self.train_transform(skeleton=self.skeleton)

            def dataset(records: list[PersonRecord]) -> TopDownDataset:
                return TopDownDataset(
                    records,
                    transform,
                    self.decode_reduced,
                    self.device_jpeg_decode,
                    self.train_boxes,
                    self.seed,
                )

            if self.sources:
                if self.train_boxes.kind == "detections":
                    raise DataError(
                        "data.train_box_source=detections reads one split's detections; with "
                        "data.sources choose gt or jitter"
                    )
                parts = [dataset(source.records()) for source in self.sources]
                self.train_set = MixedDataset(parts)
                for source, part in zip(self.sources, parts, strict=True):
                    log.info("train: %d people from source %r", len(part), source.name)
            else:
                split = self.train_split
                boxes = self.own_detections(self.train_boxes, split)
                self.train_set = dataset(boxes.records(split, k, training=True))
                log.info("train: %d people, %s", len(self.train_set), boxes.describe(split))
            augmentation = transform.augmentation
            if augmentation is not None and augmentation.photometric:
                self.photometric = PhotometricAugmentation()
        if self.val_set is None:
            split = self.val_split
            boxes = self.own_detections(self.val_boxes, split)
            records = boxes.records(split, k, training=False)
            self.val_set = TopDownDataset(
                records,
                self.val_transform(skeleton=self.skeleton),
                device_jpeg_decode=self.device_jpeg_decode,
                boxes=boxes,
                seed=self.seed,
            )
            log.info("val: %d %s", len(records), boxes.describe(split))

    @staticmethod
    def own_detections(boxes: BoxSource, split: Split) -> BoxSource:
        """Detections without a file read the split's own detections, where it has them (the
        synthetic data's, for example)."""
        detections = getattr(split, "detections", None)
        if boxes.kind == "detections" and boxes.det_file is None and detections:
            return dataclasses.replace(boxes, det_file=detections)
        return boxes

    def _loader(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool,
        sampler: MultiSourceSampler | None = None,
    ) -> DataLoader:
        if self.num_workers > 0:
            stop_opencv_threads()
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            drop_last=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            collate_fn=collate_skipping,
            worker_init_fn=init_worker,
        )

    def on_before_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> Any:
        if "jpeg" in batch:  # device_jpeg_decode: the encoded images are still on the CPU
            dataset = self.train_set if self.trainer.training else self.val_set
            batch["image"] = decode_crops_on_device(
                batch.pop("jpeg"),
                batch["affine"],
                dataset.transform.input_size,
                self.trainer.strategy.root_device,
            )
        return batch

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> Any:
        # Training batches only; a batch whose every sample failed to decode has no image.
        training = self.trainer is not None and self.trainer.training
        if self.photometric is not None and training and "image" in batch:
            batch["image"] = self.photometric(batch["image"])
        return batch

    def train_dataloader(self) -> DataLoader:
        sampler = None
        if self.sources:  # built here, where the process group (if any) is up
            sizes = [len(part) for part in self.train_set.datasets]
            ratios = [source.ratio for source in self.sources]
            sampler = MultiSourceSampler(sizes, ratios, seed=self.seed)
        return self._loader(self.train_set, self.batch_size, shuffle=True, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.val_batch_size, shuffle=False)
