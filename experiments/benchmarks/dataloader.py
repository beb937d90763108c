"""Crops per second of one data-loading worker, against the floor of decoding and warping.

Design rule 4, "cheap workers, busy device": a worker only decodes, crops and augments; targets
and the photometric augmentation are made on the device. So a worker's cost should sit at its
floor, one JPEG decode plus one affine warp per person crop. This measures, in a single process
with one thread (the work of one worker), at each input size:

- floor: ``cv2.imread`` + ``cv2.warpAffine`` with the crop's affine, nothing else;
- ``TopDownDataset.__getitem__`` with the validation transform (no augmentation), decoding only
  the region of the JPEG the crop reads (``posesuite.data._jpeg_region``) and, for comparison,
  the whole image (as without the extension);
- the same with the training augmentation (``Augmentation()`` defaults), decoding whole images:
  as before the photometric step moved to the device (albumentations' step in the worker), with
  the random geometry only, and with reduced JPEG decoding (``data.decode_reduced=true``); then
  the configured training worker: reduced and region decoding;
- a ``DataLoader`` with 1 and 2 workers serving the configured training batches;
- the device photometric step (``PhotometricAugmentation``) on batches of ``--batch-size``
  crops on the CPU, per crop: it now runs in the training process;
- with a CUDA device, ``decode_crops_on_device`` (``data.device_jpeg_decode=true``): nvJPEG
  decoding and the warp of a batch on the GPU, the worker only reading the files' bytes.

``--breakdown`` adds the parts of a crop timed apart: decoding (whole, region), and the transform
alone.

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
from unittest import mock

import cv2
import numpy as np
import simplejpeg
import torch
from machine import machine_info, warn_if_busy, write_results
from torch.utils.data import DataLoader

from posesuite.data import decoding
from posesuite.data.datamodule import TopDownDataset, collate_skipping, decode_crops_on_device
from posesuite.data.decoding import crop_region, decode_for_crop, read_image
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
        crop = step(index)["image"][0].transpose(1, 2, 0)  # the sample's one frame
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


def region_shares(dataset: TopDownDataset, draws: int = 2000) -> dict[str, float]:
    """Means over ``draws`` training crop plans (reduced decode) of the share of the image's
    pixels a region decode outputs, before the extension widens it to iMCU columns, and of its
    rows that are entropy-decoded (all rows down to the region's last)."""
    pixels, rows = [], []
    for draw in range(draws):
        record = dataset.records[draw % len(dataset)]
        plan = dataset.transform.plan(record)
        reduction = plan.decode_reduction()
        height, width = simplejpeg.decode_jpeg_header(Path(record.image_path).read_bytes())[:2]
        width, height = -(-width // reduction), -(-height // reduction)
        x0, y0, x1, y1 = crop_region(plan.matrix, dataset.transform.input_size, reduction)
        x0, x1 = np.clip([x0, x1], 0, width)
        y0, y1 = np.clip([y0, y1], 0, height)
        pixels.append((x1 - x0) * (y1 - y0) / (width * height))
        rows.append(y1 / height)
    return {"pixels_decoded": float(np.mean(pixels)), "rows_entropy_decoded": float(np.mean(rows))}


def whole_frames(measure: Callable[[], float]) -> Callable[[], float]:
    """``measure`` with every frame decoded whole, as where the extension is not built."""

    def measure_whole() -> float:
        with mock.patch.object(decoding, "decode_region", None):
            return measure()

    return measure_whole


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

    def single(name: str, step: Callable[[int], Any], whole: bool = False) -> Pipeline:
        def measure() -> float:
            return single_process_rate(step, len(records), args.seconds)

        return Pipeline(input_size, name, whole_frames(measure) if whole else measure)

    def loader(workers: int) -> Pipeline:
        workers_name = f"{workers} worker{'s' if workers > 1 else ''}"
        name = f"DataLoader, {workers_name}, train (reduced + region decode)"
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
        single("dataset, val transform, region decode", dataset(None).__getitem__),
        single("dataset, val transform, whole decode", dataset(None).__getitem__, whole=True),
        single(
            "dataset, train aug. + worker photometric, whole decode (before)",
            with_worker_photometric(dataset(geometry).__getitem__),
            whole=True,
        ),
        single(
            "dataset, train aug. (geometry; photometric on device), whole decode",
            dataset(geometry).__getitem__,
            whole=True,
        ),
        single(
            "dataset, train aug. + reduced decode, whole (before)",
            train_set.__getitem__,
            whole=True,
        ),
        single("dataset, train aug. + reduced + region decode (configured)", train_set.__getitem__),
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
    # Fixed draws of the training plans, so that the region rows time the same regions.
    train_plans = [[plans.plan(record).matrix for record in records] for _ in range(8)]
    draw = itertools.count()

    def transform_only(augmentation: Augmentation | None) -> Callable[[int], Any]:
        transform = TopDownTransform(skeleton, input_size, 1.25, augmentation)
        return lambda index: transform(
            records[index], [frames[path] for path in records[index].frames]
        )

    def reduced_read(index: int) -> np.ndarray:
        return read_image(paths[index], plans.plan(records[index]).decode_reduction())

    def region_read(reduce: bool) -> Callable[[int], Any]:
        def read(index: int) -> decoding.DecodedFrame | None:
            matrix = train_plans[next(draw) // len(records) % len(train_plans)][index]
            return decode_for_crop(paths[index], matrix, input_size, reduce)

        return read

    def whole_by_extension(index: int) -> Any:
        big = 1 << 30
        return decoding.decode_region(np.fromfile(paths[index], np.uint8), 0, 0, big, big, 1)

    photometric = albumentations_reference(seed=0)
    crops = [
        np.ascontiguousarray(
            TopDownTransform(skeleton, input_size)(record, [frames[record.image_path]])["image"][
                0
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
        ("part: the extension decoding the whole image", whole_by_extension),
        ("part: region decode of the train plan, full resolution", region_read(False)),
        ("part: region decode of the train plan at its reduction", region_read(True)),
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
    if decoding.decode_region is None:
        sys.exit("posesuite.data._jpeg_region is not built (`make setup` builds it)")
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
    regions = {
        f"{width}x{height}": region_shares(
            TopDownDataset(
                records,
                TopDownTransform(skeleton, (width, height), 1.25, Augmentation()),
                decode_reduced=True,
            )
        )
        for width, height in args.sizes
    }
    print(f"training crops' region decodes: {regions}", file=sys.stderr)
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
        "train_crops_region_decoded": regions,
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
