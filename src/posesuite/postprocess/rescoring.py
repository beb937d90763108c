"""Person scores for top-down pose estimation.

The standard top-down rescoring (SimpleBaseline, HRNet, mmpose): a person's score is its box
score times the mean of its confident keypoint scores, so that boxes whose pose the network is
unsure about rank lower in COCO AP.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)


def rescore(keypoint_scores: ArrayT, box_scores: ArrayT, threshold: float = 0.2) -> ArrayT:
    """Box score × mean of the keypoint scores strictly above ``threshold``.

    Args:
        keypoint_scores: (N, K) per-keypoint confidences (torch tensor or numpy array).
        box_scores: (N,) detector (or ground-truth box) scores, same kind as ``keypoint_scores``.
        threshold: keypoint scores must exceed it to count.

    Returns:
        (N,) person scores; 0 for a person with no keypoint score above ``threshold``.
    """
    confident = keypoint_scores > threshold
    confident_sum = (keypoint_scores * confident).sum(-1)
    # Clipping the count at 1 makes the mean 0 (not NaN) when nothing is confident.
    confident_count = confident.sum(-1).clip(min=1)
    return box_scores * (confident_sum / confident_count)
