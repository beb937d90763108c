"""Clips per second of one data-loading worker, against the floor of decoding and warping T frames.

A clip sample (T consecutive frames of one person, one crop for the whole clip,
`posesuite.data.sources.penn_action`) costs a worker T JPEG decodes and T affine warps; the
floor is exactly that (``cv2.imread`` + ``cv2.warpAffine`` per frame, with the clip's affine).
Measured in a single process with one thread (the work of one worker), on the embedded synthetic
video's val clips (160x160 frames, Penn Action's layout), for each clip length:

- floor: T x (imread + warpAffine);
- ``TopDownDataset.__getitem__`` with the validation transform (region decoding of each frame);
- the same with the configured training transform (flip, as ``data=synthetic_video``; the
  geometry is drawn once and shared by the clip's frames), reduced + region decoding.

    .venv/bin/python experiments/benchmarks/clip_loading.py [--frames 1 5 8] [--size 64x64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from dataloader import crop_matrices, parse_size, single_process_rate
from machine import machine_info, warn_if_busy, write_results

from posesuite.data import decoding
from posesuite.data.datamodule import TopDownDataset
from posesuite.data.records import PersonRecord
from posesuite.data.sources.synthetic_video import SyntheticVideoDataset
from posesuite.data.transforms import Augmentation, TopDownTransform
from posesuite.paths import REPO_ROOT
from posesuite.skeleton import load_skeleton

RESULTS_FILE = Path(__file__).resolve().parent / "results/clip_loading.json"
# A small spec of the app's synthetic video cache (paths.cache_dir/synthetic_video): the val
# videos are what is read; at least 8 frames each, so every clip length here fits.
VIDEO_ROOT = REPO_ROOT / "data/cache/synthetic_video"
VIDEO_SPEC = {"num_train_videos": 1, "num_val_videos": 16, "min_frames": 8, "max_frames": 10}
FLOOR = "floor: T x (imread + warpAffine)"
# The training augmentation of data=synthetic_video (flip only; conf/data/synthetic_video.yaml).
TRAINING = Augmentation(scale_factor=0.0, rotation_prob=0.0, half_body_prob=0.0, photometric=False)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[1, 5, 8], help="clip lengths")
    parser.add_argument("--size", type=parse_size, default=(64, 64), help="input size WxH")
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per row (median)")
    parser.add_argument("--output", type=Path, default=RESULTS_FILE, help="JSON results file")
    return parser.parse_args(argv)


def clip_records(clip_length: int) -> list[PersonRecord]:
    _, val = SyntheticVideoDataset(str(VIDEO_ROOT), clip_length=clip_length, **VIDEO_SPEC).prepare()
    return val.read_people(13)


def floor_step(
    records: Sequence[PersonRecord], input_size: tuple[int, int]
) -> Callable[[int], Any]:
    matrices = crop_matrices(records, input_size)

    def step(index: int) -> list[np.ndarray]:
        return [
            cv2.warpAffine(
                cv2.imread(path, cv2.IMREAD_COLOR),
                matrices[index],
                input_size,
                flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=(0, 0, 0),
            )
            for path in records[index].frames
        ]

    return step


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    machine = machine_info(opencv=cv2.__version__)  # first: the machine's load, not ours
    warn_if_busy(machine)
    if decoding.decode_region is None:
        sys.exit("posesuite.data._jpeg_region is not built (`make setup` builds it)")
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    torch.manual_seed(0)  # seeds the augmentation's generator
    skeleton = load_skeleton("penn13")
    rows: list[tuple[int, str, Callable[[int], Any], int]] = []
    for frames in args.frames:
        records = clip_records(frames)

        def dataset(augmentation: Augmentation | None, records=records) -> TopDownDataset:
            transform = TopDownTransform(skeleton, args.size, 1.25, augmentation)
            return TopDownDataset(records, transform, decode_reduced=augmentation is not None)

        rows += [
            (frames, FLOOR, floor_step(records, args.size), len(records)),
            (
                frames,
                "dataset, val transform, region decode",
                dataset(None).__getitem__,
                len(records),
            ),
            (
                frames,
                "dataset, train transform (flip), reduced + region decode (configured)",
                dataset(TRAINING).__getitem__,
                len(records),
            ),
        ]
    rates: list[list[float]] = [[] for _ in rows]
    for repeat in range(args.repeats):  # round all rows, so a slow spell hits each a little
        for (frames, name, step, count), row_rates in zip(rows, rates, strict=True):
            row_rates.append(single_process_rate(step, count, args.seconds))
            print(
                f"repeat {repeat + 1} T={frames} {name}: {row_rates[-1]:.1f} clips/s",
                file=sys.stderr,
            )
    results = []
    for (frames, name, _, count), row_rates in zip(rows, rates, strict=True):
        floor = next(
            statistics.median(r)
            for (f, n, _, _), r in zip(rows, rates, strict=True)
            if f == frames and n == FLOOR
        )
        clips_per_s = statistics.median(row_rates)
        results.append(
            {
                "frames": frames,
                "pipeline": name,
                "clips": count,
                "clips_per_s": clips_per_s,
                "frames_per_s": clips_per_s * frames,
                "ms_per_clip": 1000 / clips_per_s,
                "vs_floor": clips_per_s / floor,
                "runs_clips_per_s": row_rates,
            }
        )
    lines = [
        f"| T | pipeline ({args.size[0]}×{args.size[1]} crops) | clips/s | frames/s | ms/clip "
        "| vs floor |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['frames']} | {r['pipeline']} | {r['clips_per_s']:.0f} | {r['frames_per_s']:.0f} "
        f"| {r['ms_per_clip']:.2f} | {r['vs_floor']:.2f}× |"
        for r in results
    ]
    table = "\n".join(lines)
    print(table)
    write_results(
        args.output,
        {
            "benchmark": "clip_loading",
            "data": f"synthetic video val clips ({VIDEO_SPEC}), 160x160 JPEG frames",
            "machine": machine,
            "settings": {"seconds": args.seconds, "repeats": args.repeats, "threads": 1},
            "results": results,
            "table": table,
        },
    )


if __name__ == "__main__":
    main()
