"""Crops per second of one data-loading worker, against the floor of decoding and warping.

Design rule 4, "cheap workers, busy device": a worker only decodes, crops and augments; targets
are made on the device. So a worker's cost should sit close to its floor, one JPEG decode plus
one affine warp per person crop. This measures, in a single process with one thread (the work of
one worker), at each input size:

- floor: ``cv2.imread`` + ``cv2.warpAffine`` with the crop's affine, nothing else;
- ``TopDownDataset.__getitem__`` with the validation transform (no augmentation);
- the same with the training augmentation (``Augmentation()`` defaults, photometric on);

and, for reference, a ``DataLoader`` with 1 and 2 workers serving augmented batches.
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

from posesuite.data.datamodule import TopDownDataset, collate_skipping, read_image
from posesuite.data.geometry import box_to_center_scale, crop_affine
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


def pipelines(
    records: Sequence[PersonRecord],
    skeleton: Skeleton,
    input_size: tuple[int, int],
    args: argparse.Namespace,
) -> list[Pipeline]:
    """The rows of one input size; ``measure()`` runs one timed repeat and returns crops/s."""

    def dataset(augmentation: Augmentation | None) -> TopDownDataset:
        return TopDownDataset(records, TopDownTransform(skeleton, input_size, 1.25, augmentation))

    def single(name: str, step: Callable[[int], Any]) -> Pipeline:
        return Pipeline(
            input_size, name, lambda: single_process_rate(step, len(records), args.seconds)
        )

    def loader(workers: int) -> Pipeline:
        name = f"DataLoader, {workers} worker{'s' if workers > 1 else ''}, train aug."
        return Pipeline(
            input_size,
            name,
            lambda: data_loader_rate(train_set, workers, args.batch_size, args.seconds),
        )

    train_set = dataset(Augmentation())
    rows = [
        single(FLOOR, floor_step(records, input_size)),
        single("dataset, val transform", dataset(None).__getitem__),
        single("dataset, train augmentation", train_set.__getitem__),
    ]
    rows += [loader(workers) for workers in args.workers]
    if args.breakdown:
        rows += [single(name, step) for name, step in part_steps(records, skeleton, input_size)]
    return rows


def part_steps(
    records: Sequence[PersonRecord], skeleton: Skeleton, input_size: tuple[int, int]
) -> list[tuple[str, Callable[[int], Any]]]:
    """Decoding alone, and the transform alone on frames decoded beforehand."""
    paths = [record.image_path for record in records]
    frames = {path: read_image(path) for record in records for path in record.frames}

    def transform_only(augmentation: Augmentation | None) -> Callable[[int], Any]:
        transform = TopDownTransform(skeleton, input_size, 1.25, augmentation)
        return lambda index: transform(
            records[index], [frames[path] for path in records[index].frames]
        )

    return [
        ("part: cv2.imread", lambda index: cv2.imread(paths[index], cv2.IMREAD_COLOR)),
        ("part: read_image (imread + BGR->RGB)", lambda index: read_image(paths[index])),
        ("part: val transform of decoded frames", transform_only(None)),
        (
            "part: train aug. w/o photometric, decoded",
            transform_only(Augmentation(photometric=False)),
        ),
        ("part: train augmentation of decoded frames", transform_only(Augmentation())),
    ]


def floor_rate(measurements: Sequence[Measurement], input_size: tuple[int, int]) -> float:
    return next(
        m.crops_per_s for m in measurements if m.input_size == input_size and m.pipeline == FLOOR
    )


def markdown_table(measurements: Sequence[Measurement]) -> str:
    lines = [
        "| input (W×H) | pipeline | crops/s | ms/crop | vs floor | runs (crops/s) |",
        "|---|---|---:|---:|---:|---|",
    ]
    for m in measurements:
        rate = m.crops_per_s
        ratio = rate / floor_rate(measurements, m.input_size)
        runs = ", ".join(f"{r:.0f}" for r in m.rates)
        lines.append(
            f"| {m.input_size[0]}×{m.input_size[1]} | {m.pipeline} | {rate:.0f} "
            f"| {1000 / rate:.2f} | {ratio:.2f}× | {runs} |"
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
                "vs_floor": m.crops_per_s / floor_rate(measurements, m.input_size),
                "runs_crops_per_s": m.rates,
            }
            for m in measurements
        ],
        "table": table,
    }
    write_results(args.output, results)


if __name__ == "__main__":
    main()
