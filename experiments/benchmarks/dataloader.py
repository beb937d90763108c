"""Crops per second of one data-loading worker, against the floor of decoding and warping.

Design rule 4, "cheap workers, busy device": a worker only decodes, crops and augments; targets
and the photometric augmentation are made on the device. So a worker's cost should sit at its
floor, one JPEG decode plus one affine warp per person crop. This measures, in a single process
with one thread (the work of one worker), at each input size:

- floor: ``cv2.imread`` + ``cv2.warpAffine`` with the crop's affine, nothing else;
- ``TopDownDataset.__getitem__`` with the validation transform (no augmentation);
- the same with the training augmentation (``Augmentation()`` defaults), as before this change
  (albumentations' photometric step in the worker), with the random geometry only (the
  photometric step now runs on the device), and with reduced JPEG decoding as well (the
  configured training worker, ``data.decode_reduced=true``);
- a ``DataLoader`` with 1 and 2 workers serving the configured training batches;
- the device photometric step (``PhotometricAugmentation``) on batches of ``--batch-size``
  crops on the CPU, per crop: it now runs in the training process;
- with a CUDA device, ``decode_crops_on_device`` (``data.device_jpeg_decode=true``): nvJPEG
  decoding and the warp of a batch on the GPU, the worker only reading the files' bytes.

``--breakdown`` adds the parts of a crop timed apart: decoding, and the transform alone.

    .venv/bin/python experiments/benchmarks/dataloader.py [--seconds 3] [--sizes 96x128 192x256]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from machine import machine_info, warn_if_busy, write_results
from torch.utils.data import DataLoader

from posesuite.data.datamodule import (
    TopDownDataset,
    collate_skipping,
    decode_crops_on_device,
    read_image,
)
from posesuite.data.geometry import box_to_center_scale, crop_affine
from posesuite.data.photometric import PhotometricAugmentation, albumentations_reference
from posesuite.data.records import PersonRecord
from posesuite.data.sources.coco import read_coco_keypoints
from posesuite.data.transforms import Augmentation, TopDownTransform
from posesuite.paths import REPO_ROOT
from posesuite.skeleton import Skeleton, load_skeleton

REAL_COCO_DIR = REPO_ROOT.parent / "shared/data/real/coco"
REAL_COCO_ANNOTATIONS = REAL_COCO_DIR / "test_coco.json"
# The app's synthetic cache (paths.cache_dir/synthetic); a small spec gets its own sub-folder.
SYNTHETIC_ROOT = REPO_ROOT / "data/cache/synthetic"
SYNTHETIC_VAL_IMAGES = 16
RESULTS_FILE = Path(__file__).resolve().parent / "results/dataloader.json"
FLOOR = "floor: imread + warpAffine"


@dataclass(frozen=True)
class Pipeline:
    input_size: tuple[int, int]  # (W, H)
    name: str
    measure: Callable[[], float]


@dataclass(frozen=True)
class Measurement:
    input_size: tuple[int, int]  # (W, H)
    pipeline: str
    rates: list[float]  # crops/s of each repeat

    @property
    def crops_per_s(self) -> float:
        return statistics.median(self.rates)


def parse_size(text: str) -> tuple[int, int]:
    width, height = text.lower().split("x")
    return int(width), int(height)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="minimum duration of each measurement"
    )
    parser.add_argument("--repeats", type=int, default=3, help="measurements per row (median)")
    parser.add_argument(
        "--sizes",
        type=parse_size,
        nargs="+",
        default=[(96, 128), (192, 256)],
        help="network input sizes as WxH",
    )
    parser.add_argument(
        "--workers", type=int, nargs="*", default=[1, 2], help="DataLoader reference rows"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="DataLoader batch size")
    parser.add_argument(
        "--data",
        choices=["auto", "real", "synthetic"],
        default="auto",
        help="auto: the real COCO images when present, else the synthetic dataset",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="add rows that time the parts of a crop apart: decoding, and the transform alone",
    )
    parser.add_argument("--output", type=Path, default=RESULTS_FILE, help="JSON results file")
    return parser.parse_args(argv)


def load_records(data: str, num_keypoints: int) -> tuple[str, list[PersonRecord]]:
    """The real COCO images when present (or required), else a small synthetic set."""
    if data != "synthetic":
        if REAL_COCO_ANNOTATIONS.is_file():
            records = read_coco_keypoints(REAL_COCO_ANNOTATIONS, REAL_COCO_DIR, num_keypoints)
            return f"COCO val2017 subset ({REAL_COCO_ANNOTATIONS})", records
        if data == "real":
            sys.exit(f"no real COCO data: {REAL_COCO_ANNOTATIONS} does not exist")
        print(f"no real COCO data at {REAL_COCO_DIR}; using the synthetic dataset", file=sys.stderr)
    try:
        # Imported here: the synthetic generator is optional for this benchmark.
        from posesuite.data.sources.synthetic import SyntheticSpec, ensure_synthetic_coco
    except ImportError as err:
        sys.exit(f"the synthetic dataset is not available either ({err})")
    spec = SyntheticSpec(num_train_images=1, num_val_images=SYNTHETIC_VAL_IMAGES)
    paths = ensure_synthetic_coco(SYNTHETIC_ROOT, spec)
    records = read_coco_keypoints(paths.val_annotations, paths.val_images, num_keypoints)
    return f"synthetic val split, {SYNTHETIC_VAL_IMAGES} images ({paths.root})", records


def crop_matrices(records: Sequence[PersonRecord], input_size: tuple[int, int]) -> list[np.ndarray]:
    """The validation crop of each person, as the transform computes it (padding 1.25)."""
    aspect_ratio = input_size[0] / input_size[1]
    return [
        crop_affine(*box_to_center_scale(record.bbox, aspect_ratio), 0.0, input_size)
        for record in records
    ]


def floor_step(
    records: Sequence[PersonRecord], input_size: tuple[int, int]
) -> Callable[[int], Any]:
    paths = [record.image_path for record in records]
    matrices = crop_matrices(records, input_size)

    def step(index: int) -> np.ndarray:
        image = cv2.imread(paths[index], cv2.IMREAD_COLOR)
        return cv2.warpAffine(
            image,
            matrices[index],
            input_size,
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )

    return step


def single_process_rate(step: Callable[[int], Any], num_items: int, seconds: float) -> float:
    """Crops/s of whole passes over the records, lasting at least ``seconds``."""
    for index in range(num_items):  # warm-up: page cache, lazy set-up of the augmentation
        step(index)
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for index in range(num_items):
            step(index)
        done += num_items
    return done / elapsed


def batch_rate(step: Callable[[], Any], batch_size: int, seconds: float) -> float:
    """Crops/s of a step that handles one batch of ``batch_size`` crops at a time."""
    for _ in range(3):  # warm-up
        step()
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        step()
        done += batch_size
    return done / elapsed


def data_loader_rate(
    dataset: TopDownDataset, num_workers: int, batch_size: int, seconds: float
) -> float:
    """Crops/s delivered to the main process once every worker is busy."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=itertools.cycle(range(len(dataset))),  # endless: the clock decides the end
        num_workers=num_workers,
        collate_fn=collate_skipping,
    )
    batches = iter(loader)
    # Start-up, and the batches prefetched meanwhile (2 per worker), are not steady state.
    for _ in range(2 * num_workers + 1):
        next(batches)
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        done += len(next(batches)["image"])
    del batches  # shuts the workers down now, not when the next loader starts its own
    return done / elapsed


def with_worker_photometric(step: Callable[[int], dict[str, Any]]) -> Callable[[int], Any]:
    """A dataset step followed by the former worker-side photometric step on its crop."""
    pipeline = albumentations_reference(seed=0)

    def augmented(index: int) -> np.ndarray:
        crop = step(index)["image"].transpose(1, 2, 0)
        return pipeline(image=np.ascontiguousarray(crop))["image"]

    return augmented


def device_batch(
    records: Sequence[PersonRecord],
    skeleton: Skeleton,
    input_size: tuple[int, int],
    batch_size: int,
) -> dict[str, Any]:
    """One training batch as the workers hand it to the training process."""
    dataset = TopDownDataset(
        records,
        TopDownTransform(skeleton, input_size, 1.25, Augmentation(photometric=False)),
        decode_reduced=True,
    )
    return collate_skipping([dataset[i % len(dataset)] for i in range(batch_size)])


def reduction_shares(dataset: TopDownDataset, draws: int = 2000) -> dict[str, float]:
    """Share of training crops decoded at each JPEG reduction, over ``draws`` crop plans."""
    counts: dict[int, int] = {}
    for draw in range(draws):
        factor = dataset.transform.plan(dataset.records[draw % len(dataset)]).decode_reduction()
        counts[factor] = counts.get(factor, 0) + 1
    return {f"1/{f}": counts[f] / draws for f in sorted(counts)}


def pipelines(
    records: Sequence[PersonRecord],
    skeleton: Skeleton,
    input_size: tuple[int, int],
    args: argparse.Namespace,
) -> list[Pipeline]:
    """The rows of one input size; ``measure()`` runs one timed repeat and returns crops/s."""

    def dataset(augmentation: Augmentation | None, decode_reduced: bool = False) -> TopDownDataset:
        transform = TopDownTransform(skeleton, input_size, 1.25, augmentation)
        return TopDownDataset(records, transform, decode_reduced=decode_reduced)

    def single(name: str, step: Callable[[int], Any]) -> Pipeline:
        return Pipeline(
            input_size, name, lambda: single_process_rate(step, len(records), args.seconds)
        )

    def loader(workers: int) -> Pipeline:
        name = f"DataLoader, {workers} worker{'s' if workers > 1 else ''}, train (reduced decode)"
        return Pipeline(
            input_size,
            name,
            lambda: data_loader_rate(train_set, workers, args.batch_size, args.seconds),
        )

    geometry = Augmentation(photometric=False)  # the photometric step runs on the device now
    train_set = dataset(geometry, decode_reduced=True)
    batch = device_batch(records, skeleton, input_size, args.batch_size)
    photometric = PhotometricAugmentation()
    rows = [
        single(FLOOR, floor_step(records, input_size)),
        single("dataset, val transform", dataset(None).__getitem__),
        single(
            "dataset, train aug. + worker photometric (before)",
            with_worker_photometric(dataset(geometry).__getitem__),
        ),
        single(
            "dataset, train aug. (geometry; photometric on device)", dataset(geometry).__getitem__
        ),
        single("dataset, train aug. + reduced decode (configured)", train_set.__getitem__),
    ]
    rows += [loader(workers) for workers in args.workers]
    rows.append(
        Pipeline(
            input_size,
            f"device photometric on the CPU, batch {args.batch_size} (training process)",
            lambda: batch_rate(lambda: photometric(batch["image"]), args.batch_size, args.seconds),
        )
    )
    if torch.cuda.is_available():
        rows.append(device_decode_row(records, skeleton, input_size, args))
    if args.breakdown:
        rows += [single(name, step) for name, step in part_steps(records, skeleton, input_size)]
    return rows


def device_decode_row(
    records: Sequence[PersonRecord],
    skeleton: Skeleton,
    input_size: tuple[int, int],
    args: argparse.Namespace,
) -> Pipeline:
    """nvJPEG decoding and the warp of one batch on the GPU, from the bytes the workers read."""
    undecoded = TopDownDataset(
        records,
        TopDownTransform(skeleton, input_size, 1.25, Augmentation(photometric=False)),
        device_jpeg_decode=True,
    )
    batch = collate_skipping([undecoded[i % len(undecoded)] for i in range(args.batch_size)])
    device = torch.device("cuda")

    def step() -> None:
        decode_crops_on_device(batch["jpeg"], batch["affine"], input_size, device)
        torch.cuda.synchronize(device)

    return Pipeline(
        input_size,
        f"device JPEG decode + warp (CUDA), batch {args.batch_size}",
        lambda: batch_rate(step, args.batch_size, args.seconds),
    )


def part_steps(
    records: Sequence[PersonRecord], skeleton: Skeleton, input_size: tuple[int, int]
) -> list[tuple[str, Callable[[int], Any]]]:
    """Decoding alone, and the transform alone on frames decoded beforehand."""
    paths = [record.image_path for record in records]
    frames = {path: read_image(path) for record in records for path in record.frames}
    plans = TopDownTransform(skeleton, input_size, 1.25, Augmentation(photometric=False))

    def transform_only(augmentation: Augmentation | None) -> Callable[[int], Any]:
        transform = TopDownTransform(skeleton, input_size, 1.25, augmentation)
        return lambda index: transform(
            records[index], [frames[path] for path in records[index].frames]
        )

    def reduced_read(index: int) -> np.ndarray:
        return read_image(paths[index], plans.plan(records[index]).decode_reduction())

    photometric = albumentations_reference(seed=0)
    crops = [
        np.ascontiguousarray(
            TopDownTransform(skeleton, input_size)(record, [frames[record.image_path]])[
                "image"
            ].transpose(1, 2, 0)
        )
        for record in records
    ]

    return [
        ("part: cv2.imread (BGR)", lambda index: cv2.imread(paths[index], cv2.IMREAD_COLOR)),
        (
            "part: imread + BGR->RGB (read_image before)",
            lambda index: cv2.cvtColor(
                cv2.imread(paths[index], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
            ),
        ),
        ("part: read_image (RGB decode)", lambda index: read_image(paths[index])),
        ("part: read_image at the train plan's reduction", reduced_read),
        ("part: val transform of decoded frames", transform_only(None)),
        (
            "part: train aug. (geometry) of decoded frames",
            transform_only(Augmentation(photometric=False)),
        ),
        (
            "part: albumentations photometric of a crop (before)",
            lambda index: photometric(image=crops[index])["image"],
        ),
    ]


def floor_rate(measurements: Sequence[Measurement], input_size: tuple[int, int]) -> float:
    return next(
        m.crops_per_s for m in measurements if m.input_size == input_size and m.pipeline == FLOOR
    )


def in_training_process(pipeline: str) -> bool:
    """Rows timing work of the training process, not of a worker: no ratio to the floor."""
    return pipeline.startswith("device")


def vs_floor(measurements: Sequence[Measurement], m: Measurement) -> float | None:
    if in_training_process(m.pipeline):
        return None
    return m.crops_per_s / floor_rate(measurements, m.input_size)


def markdown_table(measurements: Sequence[Measurement]) -> str:
    lines = [
        "| input (W×H) | pipeline | crops/s | ms/crop | vs floor | runs (crops/s) |",
        "|---|---|---:|---:|---:|---|",
    ]
    for m in measurements:
        rate = m.crops_per_s
        ratio = vs_floor(measurements, m)
        runs = ", ".join(f"{r:.0f}" for r in m.rates)
        lines.append(
            f"| {m.input_size[0]}×{m.input_size[1]} | {m.pipeline} | {rate:.0f} "
            f"| {1000 / rate:.3f} | {'—' if ratio is None else f'{ratio:.2f}×'} | {runs} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    machine = machine_info(
        opencv=cv2.__version__
    )  # first, so the load average is the machine's, not ours
    warn_if_busy(machine)
    # One worker's work: a worker process gets one torch thread, and OpenCV must not fan out.
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    torch.manual_seed(0)  # seeds the augmentation's generator (TopDownTransform.rng)
    skeleton = load_skeleton("coco17")
    dataset, records = load_records(args.data, skeleton.num_keypoints)
    images = len({record.image_path for record in records})
    print(f"data: {dataset}: {len(records)} people in {images} images", file=sys.stderr)

    rows = [row for size in args.sizes for row in pipelines(records, skeleton, size, args)]
    reductions = {
        f"{width}x{height}": reduction_shares(
            TopDownDataset(
                records,
                TopDownTransform(skeleton, (width, height), 1.25, Augmentation()),
                decode_reduced=True,
            )
        )
        for width, height in args.sizes
    }
    print(f"share of training crops per JPEG reduction: {reductions}", file=sys.stderr)
    rates: list[list[float]] = [[] for _ in rows]
    # Repeats go round all rows, so a slow spell of this shared machine hits each row a little
    # instead of one row entirely.
    for repeat in range(args.repeats):
        for row, row_rates in zip(rows, rates, strict=True):
            row_rates.append(row.measure())
            width, height = row.input_size
            print(
                f"repeat {repeat + 1}/{args.repeats} {width}x{height} {row.name}:"
                f" {row_rates[-1]:.0f} crops/s",
                file=sys.stderr,
            )
    measurements = [
        Measurement(row.input_size, row.name, row_rates)
        for row, row_rates in zip(rows, rates, strict=True)
    ]

    table = markdown_table(measurements)
    print(table)
    results = {
        "benchmark": "dataloader",
        "data": {"description": dataset, "people": len(records), "images": images},
        "train_crops_per_decode_reduction": reductions,
        "machine": machine,
        "settings": {
            "seconds": args.seconds,
            "repeats": args.repeats,
            "torch_threads": 1,
            "opencv_threads": 1,
            "batch_size": args.batch_size,
        },
        "results": [
            {
                "input_size": list(m.input_size),
                "pipeline": m.pipeline,
                "crops_per_s": m.crops_per_s,
                "ms_per_crop": 1000 / m.crops_per_s,
                "vs_floor": vs_floor(measurements, m),
                "runs_crops_per_s": m.rates,
            }
            for m in measurements
        ],
        "table": table,
    }
    write_results(args.output, results)


if __name__ == "__main__":
    main()
