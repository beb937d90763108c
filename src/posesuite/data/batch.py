"""The batch layout every family sees, and its per-frame view.

Workers deliver samples with a time axis (T = 1 for images, `posesuite.data.transforms`), so a
collated batch has the same shapes whatever the data: ``image`` (B, T, 3, H, W) uint8,
``keypoints`` (B, T, K, 2), ``keypoint_weight`` and ``visibility`` (B, T, K), ``image_id`` (B, T);
and per record ``sample_id``, ``affine`` (B, 2, 3), ``box`` (B, 4), ``box_score``, ``area`` (B,),
``keypoint_mask`` (B, K). Codecs, losses and metrics work on frames: `flatten_time` gives them
the B * T frames, each with its record's affine and box.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

PER_FRAME_KEYS = ("image", "keypoints", "keypoint_weight", "visibility", "image_id")


def num_frames(batch: Mapping[str, Any]) -> int:
    return int(batch["keypoints"].shape[1])


def flatten_time(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The (B * T)-frame view of a batch: per-frame entries lose the time axis, per-record
    tensors are repeated for each of their frames, and ``sample_id`` becomes unique per frame
    (sample_id * T + t; unchanged for T = 1). Other entries are kept as they are."""
    frames = num_frames(batch)
    flat: dict[str, Any] = {}
    for key, value in batch.items():
        if not isinstance(value, torch.Tensor) or value.ndim == 0:
            flat[key] = value
        elif key in PER_FRAME_KEYS:
            flat[key] = value.flatten(0, 1)
        elif key == "sample_id" and frames > 1:
            offsets = torch.arange(frames, device=value.device, dtype=value.dtype)
            flat[key] = (value[:, None] * frames + offsets).flatten()
        else:
            flat[key] = value.repeat_interleave(frames, dim=0) if frames > 1 else value
    return flat
