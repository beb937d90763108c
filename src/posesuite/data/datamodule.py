"""Top-down dataset and the LightningDataModule that serves it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from posesuite.data.records import DataError, PersonRecord
from posesuite.data.sources.coco import CocoSplit, read_coco_keypoints, read_detections
from posesuite.data.transforms import TopDownTransform
from posesuite.skeleton import Skeleton

log = logging.getLogger(__name__)


class DatasetFiles(Protocol):
    """A dataset description: ``prepare()`` makes its files available and returns them."""

    def prepare(self) -> tuple[CocoSplit, CocoSplit]: ...


def read_image(path: str) -> np.ndarray | None:
    """RGB uint8 image, or None when the file cannot be decoded."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        return None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class TopDownDataset(Dataset):
    """One person crop per item. Items whose image cannot be decoded are reported and skipped
    (returned as None and dropped by `collate_skipping`, which counts them)."""

    def __init__(self, records: Sequence[PersonRecord], transform: TopDownTransform) -> None:
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        record = self.records[index]
        frames = [read_image(path) for path in record.frames]
        broken = [path for path, frame in zip(record.frames, frames, strict=True) if frame is None]
        if broken:
            log.warning(
                "skipping sample %d: cannot decode %s (image id %d)",
                index,
                broken[0],
                record.image_id,
            )
            return None
        sample = self.transform(record, frames)
        sample.update(
            sample_id=index,
            image_id=record.image_id,
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
    """Default collation of the decodable samples; ``num_skipped`` counts the others."""
    kept = [s for s in samples if s is not None]
    batch = default_collate(kept) if kept else {}
    batch["num_skipped"] = len(samples) - len(kept)
    return batch


class PoseDataModule(L.LightningDataModule):
    """Serves top-down person crops from a COCO-format dataset.

    ``dataset`` is called with ``root`` (``data.root``: the dataset's folder, or for the synthetic
    data the cache folder it is generated into) and describes the files. ``box_source`` chooses
    evaluation crops: ``gt`` (ground-truth boxes) or ``detections`` (a COCO detection results
    file: ``det_file``, or the dataset's own detections). Setting ``det_file`` selects detections.
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
        pin_memory: bool = False,
        persistent_workers: bool = True,
    ) -> None:
        super().__init__()
        if box_source not in {"gt", "detections"}:
            raise DataError(f"data.box_source must be 'gt' or 'detections', got {box_source!r}")
        self.root = root
        self.dataset = dataset(root=root)
        self.skeleton = Skeleton.coerce(skeleton)
        self.train_transform = train_transform
        self.val_transform = val_transform
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.box_source = "detections" if det_file else box_source
        self.det_file = det_file
        self.det_min_score = det_min_score
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.train_split: CocoSplit | None = None
        self.val_split: CocoSplit | None = None
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

    def val_detections(self) -> Path:
        self._splits()
        path = Path(self.det_file) if self.det_file else self.val_split.detections
        if path is None:
            raise DataError(
                "data.box_source=detections needs data.det_file=<COCO detection results json>"
            )
        return path

    def setup(self, stage: str | None = None) -> None:
        self._splits()
        k = self.skeleton.num_keypoints
        if stage in (None, "fit") and self.train_set is None:
            records = read_coco_keypoints(self.train_split.annotations, self.train_split.images, k)
            self.train_set = TopDownDataset(records, self.train_transform(skeleton=self.skeleton))
            log.info("train: %d people from %s", len(records), self.train_split.annotations)
        if self.val_set is None:
            split = self.val_split
            if self.box_source == "detections":
                records = read_detections(
                    self.val_detections(), split.annotations, split.images, k, self.det_min_score
                )
            else:
                records = read_coco_keypoints(split.annotations, split.images, k)
            self.val_set = TopDownDataset(records, self.val_transform(skeleton=self.skeleton))
            log.info("val: %d %s boxes from %s", len(records), self.box_source, split.annotations)

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        if self.num_workers > 0:
            stop_opencv_threads()
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            collate_fn=collate_skipping,
            worker_init_fn=init_worker,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.val_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()
