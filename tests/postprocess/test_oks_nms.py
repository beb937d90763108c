"""OKS similarity, greedy (hard and soft) OKS-NMS and top-down person rescoring, checked on
hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from posesuite.postprocess import oks_nms, oks_similarity, rescore
from posesuite.postprocess.oks_nms import soft_oks_nms

SIGMAS = [0.1, 0.1]


def reference_oks(pose_a, pose_b, area_a, area_b, sigmas) -> float:
    """The HRNet/mmpose OKS-NMS definition written out keypoint by keypoint."""
    squared_scale = (area_a + area_b) / 2
    terms = []
    for (xa, ya, *_), (xb, yb, *_), sigma in zip(pose_a, pose_b, sigmas, strict=True):
        variance = (2 * sigma) ** 2
        terms.append(math.exp(-((xa - xb) ** 2 + (ya - yb) ** 2) / (2 * squared_scale * variance)))
    return sum(terms) / len(terms)


def test_oks_matches_hand_computed_value():
    # s² = 100, (2σ)² = 0.04: exponents 1 / 8 and 4 / 8.
    pose_a = torch.tensor([[0.0, 0.0, 1.0], [10.0, 0.0, 1.0]], dtype=torch.float64)
    pose_b = torch.tensor([[[1.0, 0.0, 0.3], [10.0, 2.0, 0.9]]], dtype=torch.float64)
    similarity = oks_similarity(pose_a, pose_b, 100.0, torch.tensor([100.0]), SIGMAS)
    expected = (math.exp(-1 / 8) + math.exp(-4 / 8)) / 2
    assert similarity.shape == (1,)
    assert similarity.item() == pytest.approx(expected, abs=1e-12)


def test_oks_matches_numpy_reference_and_ignores_scores():
    generator = torch.Generator().manual_seed(0)
    sigmas = [0.026, 0.079, 0.107, 0.089]
    pose = torch.rand(4, 3, generator=generator, dtype=torch.float64) * 50
    others = torch.rand(5, 4, 3, generator=generator, dtype=torch.float64) * 50
    areas = torch.rand(5, generator=generator, dtype=torch.float64) * 2000 + 100
    similarity = oks_similarity(pose, others, 900.0, areas, sigmas)
    expected = [
        reference_oks(pose.tolist(), other.tolist(), 900.0, area, sigmas)
        for other, area in zip(others, areas.tolist(), strict=True)
    ]
    np.testing.assert_allclose(similarity.numpy(), expected, rtol=1e-12)
    rescored = others.clone()
    rescored[..., 2] = 0
    torch.testing.assert_close(oks_similarity(pose, rescored, 900.0, areas, sigmas), similarity)


def test_oks_broadcasts_to_a_pairwise_matrix():
    generator = torch.Generator().manual_seed(1)
    poses = torch.rand(4, 2, 2, generator=generator) * 20
    areas = torch.rand(4, generator=generator) * 100 + 50
    matrix = oks_similarity(poses[:, None], poses[None], areas[:, None], areas[None], SIGMAS)
    assert matrix.shape == (4, 4)
    for row, (pose, area) in enumerate(zip(poses, areas, strict=True)):
        torch.testing.assert_close(matrix[row], oks_similarity(pose, poses, area, areas, SIGMAS))
    torch.testing.assert_close(matrix.diagonal(), torch.ones(4))


def make_poses(*poses: list[list[float]]) -> torch.Tensor:
    """(N, K, 3) poses with keypoint score 1 from lists of [x, y] points."""
    xy = torch.tensor(poses, dtype=torch.float64)
    return torch.cat([xy, torch.ones(*xy.shape[:2], 1, dtype=torch.float64)], dim=-1)


def test_identical_poses_keep_only_the_higher_score():
    poses = make_poses([[0, 0], [10, 0]], [[0, 0], [10, 0]])
    kept = oks_nms(poses, torch.tensor([0.3, 0.8]), torch.tensor([100.0, 100.0]), SIGMAS)
    assert kept.dtype == torch.long
    assert kept.tolist() == [1]


def test_far_apart_poses_are_all_kept_in_descending_score_order():
    poses = make_poses([[0, 0], [10, 0]], [[500, 500], [510, 500]], [[-400, 0], [-390, 0]])
    kept = oks_nms(poses, torch.tensor([0.2, 0.9, 0.5]), torch.full((3,), 100.0), SIGMAS)
    assert kept.tolist() == [1, 2, 0]


def test_threshold_suppresses_strictly_above():
    poses = make_poses([[0, 0], [10, 0]], [[1, 0], [10, 2]])
    scores, areas = torch.tensor([0.9, 0.5]), torch.tensor([100.0, 100.0], dtype=torch.float64)
    similarity = oks_similarity(poses[0], poses[1:], areas[0], areas[1:], SIGMAS).item()
    assert similarity == pytest.approx(0.7445, abs=1e-4)
    assert oks_nms(poses, scores, areas, SIGMAS, threshold=0.74).tolist() == [0]
    assert oks_nms(poses, scores, areas, SIGMAS, threshold=0.75).tolist() == [0, 1]
    # Equal to the threshold survives, as in HRNet/mmpose (`oks <= thr` is kept).
    assert oks_nms(poses, scores, areas, SIGMAS, threshold=similarity).tolist() == [0, 1]


def test_suppression_is_greedy_not_transitive():
    # B is close to A and C is close to B, but C is far enough from A: once A removes B, C stays.
    poses = make_poses([[0, 0], [10, 0]], [[3, 0], [13, 0]], [[6, 0], [16, 0]])
    areas = torch.full((3,), 300.0, dtype=torch.float64)
    pairwise = oks_similarity(poses[:, None], poses[None], areas[:, None], areas[None], SIGMAS)
    assert pairwise[0, 1] > 0.5 and pairwise[1, 2] > 0.5 and pairwise[0, 2] < 0.5
    kept = oks_nms(poses, torch.tensor([0.9, 0.8, 0.7]), areas, SIGMAS, threshold=0.5)
    assert kept.tolist() == [0, 2]


def test_ties_keep_input_order_and_empty_input_gives_empty_indices():
    poses = make_poses([[0, 0], [10, 0]], [[300, 0], [310, 0]])
    kept = oks_nms(poses, torch.tensor([0.5, 0.5]), torch.full((2,), 100.0), SIGMAS)
    assert kept.tolist() == [0, 1]
    empty = oks_nms(torch.empty(0, 2, 3), torch.empty(0), torch.empty(0), SIGMAS)
    assert empty.dtype == torch.long and empty.numel() == 0


def test_rescore_averages_only_keypoints_above_threshold():
    keypoint_scores = torch.tensor([[0.1, 0.3, 0.5], [0.1, 0.2, 0.0], [0.9, 0.9, 0.9]])
    box_scores = torch.tensor([0.5, 1.0, 0.8])
    # 0.5 × mean(0.3, 0.5); 0.2 is not above 0.2, so the second person scores 0.
    # With threshold 0 the zero score is still left out of the mean: 1.0 × mean(0.1, 0.2).
    expected = torch.tensor([0.2, 0.0, 0.72])
    torch.testing.assert_close(rescore(keypoint_scores, box_scores), expected)
    torch.testing.assert_close(
        rescore(keypoint_scores, box_scores, threshold=0.0), torch.tensor([0.15, 0.15, 0.72])
    )
    np.testing.assert_allclose(
        rescore(keypoint_scores.numpy(), box_scores.numpy()), expected.numpy(), rtol=1e-6
    )


def test_soft_oks_nms_decays_instead_of_removing():
    # Identical poses have OKS 1: the second keeps its place with its score × exp(−1 / 0.9).
    poses = make_poses([[0, 0], [10, 0]], [[0, 0], [10, 0]])
    scores = torch.tensor([0.3, 0.8], dtype=torch.float64)
    kept, kept_scores = soft_oks_nms(poses, scores, torch.full((2,), 100.0), SIGMAS)
    assert kept.dtype == torch.long and kept.tolist() == [1, 0]
    torch.testing.assert_close(
        kept_scores, torch.tensor([0.8, 0.3 * math.exp(-1 / 0.9)], dtype=torch.float64)
    )


def test_soft_oks_nms_reorders_and_compounds_the_decay():
    # A and its two copies B and C, and D far away. After A, B drops below D; each pick decays
    # what is left again, so C carries the penalty of A and of B.
    pose, far = [[0, 0], [10, 0]], [[500, 500], [510, 500]]
    poses = make_poses(pose, pose, pose, far)
    scores = torch.tensor([0.9, 0.85, 0.8, 0.5], dtype=torch.float64)
    kept, kept_scores = soft_oks_nms(poses, scores, torch.full((4,), 100.0), SIGMAS)
    decay = math.exp(-1 / 0.9)
    assert kept.tolist() == [0, 3, 1, 2]
    expected = torch.tensor([0.9, 0.5, 0.85 * decay, 0.8 * decay**2], dtype=torch.float64)
    torch.testing.assert_close(kept_scores, expected)


def test_soft_oks_nms_penalty_is_gaussian_in_oks():
    poses = make_poses([[0, 0], [10, 0]], [[1, 0], [10, 2]])
    areas = torch.tensor([100.0, 100.0], dtype=torch.float64)
    similarity = oks_similarity(poses[0], poses[1:], areas[0], areas[1:], SIGMAS).item()
    for decay_sigma in (0.5, 0.9):
        _, kept_scores = soft_oks_nms(
            poses, torch.tensor([0.9, 0.5]), areas, SIGMAS, decay_sigma=decay_sigma
        )
        expected = 0.5 * math.exp(-(similarity**2) / decay_sigma)
        assert kept_scores[1].item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="decay_sigma"):
        soft_oks_nms(poses, torch.tensor([0.9, 0.5]), areas, SIGMAS, decay_sigma=0.0)


def test_soft_oks_nms_max_detections_and_empty_input():
    poses = make_poses([[0, 0], [10, 0]], [[500, 500], [510, 500]], [[-400, 0], [-390, 0]])
    scores, areas = torch.tensor([0.2, 0.9, 0.5]), torch.full((3,), 100.0)
    kept, kept_scores = soft_oks_nms(poses, scores, areas, SIGMAS, max_detections=2)
    assert kept.tolist() == [1, 2]
    torch.testing.assert_close(kept_scores, torch.tensor([0.9, 0.5]))  # far apart: no decay
    assert soft_oks_nms(poses, scores, areas, SIGMAS, max_detections=None)[0].tolist() == [1, 2, 0]
    kept, kept_scores = soft_oks_nms(torch.empty(0, 2, 3), torch.empty(0), torch.empty(0), SIGMAS)
    assert kept.dtype == torch.long and kept.numel() == 0 and kept_scores.numel() == 0


def reference_soft_oks_nms(poses, scores, areas, sigmas, decay_sigma, max_detections):
    """The common codebases' loop: sort, take the head, decay the rest, sort again."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    current = dict(enumerate(scores))
    kept, kept_scores = [], []
    while order and len(kept) < max_detections:
        pick, order = order[0], order[1:]
        kept.append(pick)
        kept_scores.append(current[pick])
        for i in order:
            oks = reference_oks(poses[pick], poses[i], areas[pick], areas[i], sigmas)
            current[i] *= math.exp(-(oks**2) / decay_sigma)
        order.sort(key=lambda i: -current[i])
    return kept, kept_scores


def test_soft_oks_nms_matches_the_sort_and_decay_loop():
    generator = torch.Generator().manual_seed(2)
    sigmas = [0.026, 0.079, 0.107, 0.089]
    # Twelve poses around three people, so that decays reorder the ranking.
    centres = torch.rand(3, 1, 2, generator=generator, dtype=torch.float64) * 100
    poses = (
        centres.repeat(4, 4, 1)
        + torch.randn(12, 4, 2, generator=generator, dtype=torch.float64) * 3
    )
    scores = torch.rand(12, generator=generator, dtype=torch.float64)
    areas = torch.rand(12, generator=generator, dtype=torch.float64) * 300 + 200
    kept, kept_scores = soft_oks_nms(poses, scores, areas, sigmas, max_detections=8)
    expected, expected_scores = reference_soft_oks_nms(
        poses.tolist(), scores.tolist(), areas.tolist(), sigmas, 0.9, 8
    )
    assert kept.tolist() == expected
    np.testing.assert_allclose(kept_scores.numpy(), expected_scores, rtol=1e-12)
