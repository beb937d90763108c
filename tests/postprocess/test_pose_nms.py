"""Parametric pose NMS (RMPE): hand-checked cases and a literal loop-form reference."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from pose_nms_reference import full_pool_pose_nms, reference_pose_nms

from posesuite.postprocess import pose_nms
from posesuite.postprocess.pose_nms import (
    PartWeights,
    PoseNMSParams,
    parametric_pose_nms,
    part_weights_from_skeleton,
)
from posesuite.skeleton import Skeleton, load_skeleton

PUBLIC = PoseNMSParams.preset("alphapose_public")
PAPER = PoseNMSParams.preset("paper")
# A Halpe-136-like layout: body 0-19, feet 20-25, face 26-93, hands 94-135.
WHOLE_BODY_PARTS = {
    "body": range(0, 20),
    "feet": range(20, 26),
    "face": range(26, 94),
    "hands": range(94, 136),
}


def whole_body_skeleton() -> Skeleton:
    return Skeleton.from_config(
        {
            "name": "wholebody136_like",
            "keypoints": [f"kp{i}" for i in range(136)],
            "sigmas": [0.05] * 136,
            "parts": {name: list(indices) for name, indices in WHOLE_BODY_PARTS.items()},
        }
    )


def whole_body_weights() -> PartWeights:
    parts = {"body": (1.0, 1.0), "feet": (1.0, 1.0), "face": (0.1, 0.5), "hands": (0.2, 0.5)}
    return part_weights_from_skeleton(whole_body_skeleton(), parts)


def run_nms(keypoints, scores, boxes=None, params=PUBLIC, part_weights=None, box_scores=None):
    """Float64 inputs; boxes default to the keypoints' extent."""
    keypoints = torch.as_tensor(keypoints, dtype=torch.float64)
    scores = torch.as_tensor(scores, dtype=torch.float64)
    if boxes is None:
        boxes = torch.cat([keypoints.amin(1), keypoints.amax(1)], dim=-1)
    boxes = torch.as_tensor(boxes, dtype=torch.float64)
    if box_scores is None:
        box_scores = torch.ones(len(keypoints), dtype=torch.float64)
    return parametric_pose_nms(boxes, box_scores, keypoints, scores, params, part_weights)


def line_pose(num_keypoints: int = 17, spacing: float = 10.0, y: float = 0.0) -> torch.Tensor:
    """(K, 2) keypoints along a horizontal line: (spacing·k, y)."""
    x = torch.arange(num_keypoints, dtype=torch.float64) * spacing
    return torch.stack([x, torch.full_like(x, y)], dim=-1)


def clustered_candidates(seed: int, num_keypoints: int = 17, people: int = 4):
    """Several people, each with a few candidates jittered by 0 (exact duplicates) to 10 px.
    Some people are tiny (reference distance below 1 px, so only the similarity can suppress)
    and some candidates weak, so that both rules, both windows and the drops come into play."""
    rng = np.random.default_rng(seed)
    poses, boxes = [], []
    for _ in range(people):
        centre = rng.uniform(0, 400, 2)
        size = rng.uniform(4, 12) if rng.random() < 0.3 else rng.uniform(15, 150)
        base = centre + rng.uniform(-size / 2, size / 2, (num_keypoints, 2))
        for _ in range(rng.integers(1, 8)):
            pose = base + rng.normal(0, rng.choice([0.0, 0.4, 1.0, 1.5, 4.0, 10.0]), base.shape)
            low, high = pose.min(0), pose.max(0)
            pad = rng.uniform(0, 0.2) * (high - low)
            poses.append(pose)
            boxes.append([*(low - pad), *(high + pad)])
    num = len(poses)
    levels = rng.uniform(0.15, 1, (num, 1))
    scores = np.clip(levels + rng.normal(0, 0.15, (num, num_keypoints)), 0, 1)
    scores[rng.random((num, num_keypoints)) < 0.1] = 0
    return np.array(boxes), np.array(poses), scores


def assert_matches_reference(result, expected) -> None:
    assert result.kept.tolist() == [pick for pick, *_ in expected]
    assert [c.tolist() for c in result.clusters] == [members for _, members, *_ in expected]
    if expected:
        merged = torch.tensor([xy for *_, xy, _ in expected], dtype=torch.float64)
        merged_scores = torch.tensor([s for *_, s in expected], dtype=torch.float64)
        torch.testing.assert_close(result.keypoints, merged, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(result.keypoint_scores, merged_scores, rtol=1e-9, atol=1e-12)


# With the public constants the match count decides almost every suppression; the other sets
# make the similarity rule, the paper's window and the score and area drops decide too.
REFERENCE_CASES = {
    "alphapose_public": PUBLIC,
    "paper": PAPER,
    "similarity_decides": PoseNMSParams.preset("alphapose_public", match_threshold=12, gamma=18),
    "paper_window_decides": PoseNMSParams.preset("paper", match_threshold=18),
    "drops": PoseNMSParams.preset("alphapose_public", score_threshold=0.5, area_threshold=3000),
}


@pytest.mark.parametrize("params", REFERENCE_CASES.values(), ids=REFERENCE_CASES.keys())
def test_vectorised_matches_the_loop_reference_on_random_clustered_candidates(params):
    merged_clusters = 0
    for seed in range(6):
        boxes, poses, scores = clustered_candidates(seed)
        result = run_nms(poses, scores, boxes, params)
        expected = reference_pose_nms(boxes.tolist(), poses.tolist(), scores.tolist(), params)
        assert_matches_reference(result, expected)
        merged_clusters += sum(len(c) > 1 for c in result.clusters)
    assert merged_clusters >= 6  # the cases do exercise merging, not only lone candidates


def test_vectorised_matches_the_loop_reference_with_whole_body_part_weights():
    part_weights = whole_body_weights()
    for seed in range(3):
        boxes, poses, scores = clustered_candidates(seed, num_keypoints=136, people=3)
        result = run_nms(poses, scores, boxes, part_weights=part_weights)
        expected = reference_pose_nms(
            boxes.tolist(),
            poses.tolist(),
            scores.tolist(),
            PUBLIC,
            list(part_weights.weights),
            list(part_weights.scales),
        )
        assert_matches_reference(result, expected)


# --- the pruned sweep against the full-pool sweep, bit for bit ---------------------------------


def layout_candidates(seed: int, num: int, num_keypoints: int, layout: str):
    """Float64 (boxes, keypoints, scores) of ``num`` candidates. ``clustered``: people on a
    300 px grid, 10 candidates each jittered by 0.5, 2 or 5 px; ``independent``: one candidate
    per grid cell; ``crowd``: distinct poses whose keypoint boxes all coincide (every pair a
    neighbour, nothing to prune); ``chain``: poses in a row, each one's keypoint box overlapping
    the next's, scores falling along the row (each pick a neighbour of the next)."""
    generator = torch.Generator().manual_seed(seed)
    per_person = 10 if layout == "clustered" else 1
    people = -(-num // per_person)
    columns = max(1, round(people**0.5))
    cell = torch.arange(people)
    corners = torch.stack([cell % columns, cell // columns], dim=-1).double() * 300
    if layout == "crowd":
        corners = torch.zeros(people, 2, dtype=torch.float64)
    elif layout == "chain":
        corners = torch.stack([cell * 6.0, torch.zeros(people)], dim=-1).double()
    sizes = torch.rand(people, 1, 1, generator=generator, dtype=torch.float64) * 150 + 50
    unit = torch.rand(people, num_keypoints, 2, generator=generator, dtype=torch.float64)
    if layout in ("crowd", "chain"):
        unit[:, :2] = torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    keypoints = (corners[:, None] + unit * sizes).repeat_interleave(per_person, dim=0)[:num]
    if layout == "clustered":
        jitter = torch.tensor([0.5, 2.0, 5.0], dtype=torch.float64)[
            torch.randint(0, 3, (num, 1, 1), generator=generator)
        ]
        keypoints = keypoints + torch.randn(keypoints.shape, generator=generator) * jitter
    boxes = torch.cat([keypoints.amin(1), keypoints.amax(1)], dim=-1)
    scores = torch.rand(num, num_keypoints, generator=generator, dtype=torch.float64) * 0.7 + 0.3
    if layout == "chain":
        scores = scores * torch.linspace(1, 0.5, num, dtype=torch.float64)[:, None]
    return boxes, keypoints, scores


def random_part_weights(seed: int, num_keypoints: int) -> PartWeights:
    """Weights 0, 0.1, 1 or 2 (the first 1) and distance scales 0.5, 1 or 3 per keypoint."""
    rng = np.random.default_rng(seed)
    weights = rng.choice([0.0, 0.1, 1.0, 2.0], num_keypoints)
    weights[0] = 1.0
    return PartWeights(tuple(weights), tuple(rng.choice([0.5, 1.0, 3.0], num_keypoints)))


def assert_identical(result, expected) -> None:
    """Every field equal (NaN where NaN): the pruned sweep gives the full-pool sweep's output."""
    assert torch.equal(result.kept, expected.kept)
    assert len(result.clusters) == len(expected.clusters)
    assert all(torch.equal(a, b) for a, b in zip(result.clusters, expected.clusters, strict=True))
    for field in ("keypoints", "keypoint_scores", "scores", "box_scores"):
        ours, theirs = getattr(result, field), getattr(expected, field)
        assert ours.dtype == theirs.dtype and torch.equal(ours.isnan(), theirs.isnan()), field
        assert torch.equal(ours.nan_to_num(), theirs.nan_to_num()), field


def assert_same_as_full_pool(boxes, keypoints, scores, params, part_weights=None):
    box_scores = torch.linspace(0, 1, len(keypoints), dtype=keypoints.dtype)
    inputs = (boxes, box_scores, keypoints, scores, params, part_weights)
    result = parametric_pose_nms(*inputs)
    assert_identical(result, full_pool_pose_nms(*inputs))
    return result


# 40 and 150 candidates test every pair; 260 sort out the neighbour pairs first.
@pytest.mark.parametrize("num_keypoints", [17, 136])
@pytest.mark.parametrize("layout", ["clustered", "independent"])
@pytest.mark.parametrize("window", ["pixel", "box_fraction"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "part_weights"])
def test_pruned_sweep_is_bit_identical_to_the_full_pool_sweep(
    num_keypoints, layout, window, weighted
):
    merged = 0
    for seed, num in enumerate([40, 150, 260]):
        boxes, keypoints, scores = layout_candidates(seed, num, num_keypoints, layout)
        part_weights = None
        if weighted:
            part_weights = (
                whole_body_weights() if num_keypoints == 136 else random_part_weights(seed, 17)
            )
        params = PoseNMSParams.preset("alphapose_public", ksim_window=window)
        result = assert_same_as_full_pool(boxes, keypoints, scores, params, part_weights)
        merged += sum(len(c) > 1 for c in result.clusters)
    assert (merged > 0) == (layout == "clustered")


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("params", REFERENCE_CASES.values(), ids=REFERENCE_CASES.keys())
def test_pruned_sweep_is_bit_identical_on_varied_clustered_candidates(params, seed):
    # Tiny people, exact duplicates, zero scores; 17 and 136 keypoints, with part weights.
    boxes, poses, scores = map(torch.tensor, clustered_candidates(seed, people=12))
    assert_same_as_full_pool(boxes, poses, scores, params)
    assert_same_as_full_pool(boxes, poses, scores, params, random_part_weights(seed, 17))
    boxes, poses, scores = map(torch.tensor, clustered_candidates(seed, 136, people=6))
    assert_same_as_full_pool(boxes, poses, scores, params, whole_body_weights())


# Every rule off, on for any distance, or reaching far; radii of 0; float32.
EDGE_CONSTANTS = {
    "gamma_inf": {"gamma": math.inf},
    "gamma_zero": {"gamma": 0.0},
    "gamma_negative": {"gamma": -1.0},
    "gamma_tiny": {"gamma": 1e-3},
    "gamma_above_every_similarity": {"gamma": 1e6},
    "mu_zero": {"mu": 0.0},
    "mu_inf": {"mu": math.inf},
    "match_threshold_inf": {"match_threshold": math.inf},
    "match_threshold_above_the_total_weight": {"match_threshold": 17.5},
    "match_threshold_tiny": {"match_threshold": 1e-9},
    "radii_zero": {"match_cap_px": 0.0, "ksim_pixels": 0.0},
    "match_cap_inf": {"match_cap_px": math.inf, "alpha": 1.0},
    "delta2_small": {"delta2": 0.1, "gamma": 1.0},
    "delta2_large": {"delta2": 100.0},
    "wide_pixel_window": {"ksim_pixels": 30.0, "match_threshold": math.inf},
    "paper_window_only": {"ksim_window": "box_fraction", "match_threshold": math.inf},
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("overrides", EDGE_CONSTANTS.values(), ids=EDGE_CONSTANTS.keys())
def test_pruned_sweep_is_bit_identical_with_edge_constants(overrides, dtype):
    params = PoseNMSParams.preset("alphapose_public", **overrides)
    for seed, (num, layout) in enumerate([(60, "clustered"), (250, "clustered"), (120, "chain")]):
        inputs = [t.to(dtype) for t in layout_candidates(seed, num, 17, layout)]
        assert_same_as_full_pool(*inputs, params)
        assert_same_as_full_pool(*inputs, params, random_part_weights(seed, 17))


@pytest.mark.parametrize("layout", ["crowd", "chain"])
@pytest.mark.parametrize("num_keypoints", [17, 136])
def test_pruned_sweep_is_bit_identical_on_crowds_and_chains(layout, num_keypoints):
    # The crowd is too dense to list pairs (one pick at a time over the whole pool); the chain
    # makes one pick per round, so the rounds give way to one pick at a time over neighbours.
    for seed, num in enumerate([30, 220]):
        boxes, keypoints, scores = layout_candidates(seed, num, num_keypoints, layout)
        for params in (PUBLIC, PAPER):
            assert_same_as_full_pool(boxes, keypoints, scores, params)


def test_pair_tests_cut_in_blocks_give_the_same_decisions(monkeypatch):
    # Blocks of 64 pair-keypoints: a few pairs per block, in the rounds and one pick at a time.
    monkeypatch.setattr(pose_nms, "_PAIR_BLOCK", 64)
    for layout in ("clustered", "chain", "crowd"):
        assert_same_as_full_pool(*layout_candidates(0, 200, 17, layout), PUBLIC)


def test_pruned_sweep_is_bit_identical_with_non_finite_and_degenerate_inputs():
    boxes, keypoints, scores = layout_candidates(0, 300, 17, "clustered")
    keypoints[3, 5, 0] = math.nan  # a weighted keypoint
    keypoints[40, 2] = math.inf
    keypoints[41, :, 1] = -math.inf
    keypoints[77, 16, 1] = math.nan  # weight 0 below
    boxes[10] = math.nan
    boxes[20, 2:] = boxes[20, :2]  # zero sides: reference distance 0
    boxes[30, 2] = boxes[30, 0] - 50  # negative width
    scores[50, :3] = math.nan
    weights = PartWeights((1.0,) * 16 + (0.0,), (1.0,) * 17)
    for params in (PUBLIC, PAPER, PoseNMSParams.preset("paper", match_threshold=math.inf)):
        for part_weights in (None, weights):
            assert_same_as_full_pool(boxes, keypoints, scores, params, part_weights)


def compact_pair(offset: tuple[float, float], score_b: float = 0.9):
    """Two candidates, each with all 17 keypoints on one point, the second ``offset`` from the
    first: their keypoint boxes are points, so the box gap is the offset on each axis."""
    keypoints = torch.zeros(2, 17, 2, dtype=torch.float64)
    keypoints[1] += torch.tensor(offset, dtype=torch.float64)
    scores = torch.tensor([[1.0] * 17, [score_b] * 17], dtype=torch.float64)
    boxes = torch.tensor([[-50.0, -50.0, 50.0, 50.0]] * 2, dtype=torch.float64)  # ref 10 px
    return boxes, keypoints, scores


def spatial_similarity(offset: tuple[float, float], params: PoseNMSParams) -> float:
    """μ Σ exp(−d/δ2) over 17 keypoints at ``offset``, rounded as the NMS rounds it."""
    offsets = torch.tensor([offset] * 17, dtype=torch.float64)[None]
    distances = torch.linalg.vector_norm(offsets, dim=-1)
    return float(params.mu * torch.exp(-distances / params.delta2).sum(-1))


@pytest.mark.parametrize("axis", [0, 1])
def test_a_candidate_at_the_edge_of_the_match_radius(axis):
    # Reach 7 px (the match cap); at exactly 7 px all 17 keypoints match (d <= 7), a hair
    # beyond none does, and the box gap is then beyond the reach: pruned, rightly.
    for distance, joins in ((7.0, True), (math.nextafter(7.0, math.inf), False)):
        offset = (distance, 0.0) if axis == 0 else (0.0, -distance)
        result = assert_same_as_full_pool(*compact_pair(offset), PUBLIC)
        assert [c.tolist() for c in result.clusters] == ([[0, 1]] if joins else [[0], [1]])


@pytest.mark.parametrize("distance", [0.5, 3.0, 12.0, 40.0])
def test_a_candidate_at_the_edge_of_the_spatial_reach(distance):
    # Only the spatial term can fire (no matches, 0.01 px window): with γ one step below the
    # pair's similarity it joins, at it it does not. The reach δ2 ln(μ Σw / γ) is then the
    # distance itself (up to the slack), so the pair sits at the edge of what may be pruned.
    offset = (distance * 0.6, distance * 0.8)
    for steps, joins in ((-1, True), (0, False), (1, False)):
        gamma = spatial_similarity(offset, PUBLIC)
        for _ in range(abs(steps)):
            gamma = math.nextafter(gamma, math.inf if steps > 0 else -math.inf)
        params = PoseNMSParams.preset(
            "alphapose_public", gamma=gamma, match_threshold=math.inf, ksim_pixels=0.01
        )
        result = assert_same_as_full_pool(*compact_pair(offset), params)
        assert len(result.kept) == (1 if joins else 2)


def test_a_candidate_at_the_edge_of_the_paper_window():
    # A 100 × 40 box: window half sides 5 × 2 px. Offset (5, 2): inside, and with the K_sim
    # term the similarity passes γ = 8; a hair farther on x it is outside and does not.
    params = PoseNMSParams.preset("paper", match_threshold=math.inf, gamma=8.0)
    pose_term = 17 * math.tanh(1.0) * math.tanh(0.9)
    for dx, joins in ((5.0, True), (math.nextafter(5.0, math.inf), False)):
        boxes, keypoints, scores = compact_pair((dx, 2.0))
        boxes[:] = torch.tensor([-50.0, -20.0, 50.0, 20.0], dtype=torch.float64)
        spatial = spatial_similarity((dx, 2.0), params)
        assert spatial < params.gamma < spatial + pose_term
        result = assert_same_as_full_pool(boxes, keypoints, scores, params)
        assert len(result.kept) == (1 if joins else 2)


def test_the_reach_of_the_public_constants():
    # The largest distance at which a rule can fire: the 7 px match cap for a large person, the
    # 1 px window for a tiny one (spatial term: 2.65 ln(1.7 · 17 / 22.48) ≈ 0.67 px); the
    # paper's window for a large person is half a tenth of its longer side.
    sides = torch.tensor([[100.0, 200.0], [5.0, 5.0]], dtype=torch.float64)
    radius = (0.1 * sides.amax(-1)).clamp(max=7.0)
    slack = 1e-9

    def reach(params):
        return pose_nms._reach(sides, radius, 17.0, slack, params).tolist()

    assert pose_nms._spatial_reach(PUBLIC, 17.0, slack) == pytest.approx(0.666, abs=1e-3)
    assert reach(PUBLIC) == pytest.approx([7.0, 1.0])
    assert reach(PAPER) == pytest.approx([10.0, 0.666], abs=1e-3)
    no_match = {"match_threshold": math.inf}
    assert reach(PoseNMSParams.preset("alphapose_public", **no_match)) == pytest.approx([1, 1])
    off = PoseNMSParams.preset("alphapose_public", gamma=math.inf, ksim_pixels=0.0, **no_match)
    assert all(0 < r < 1e-100 for r in reach(off))  # no rule can fire: only coincident boxes
    assert reach(PoseNMSParams.preset("alphapose_public", gamma=0.0)) == [math.inf] * 2


# --- hand-checked cases for alphapose_public ------------------------------------------------


def test_two_clustered_candidates_merge_by_score_weighted_average():
    # A: 17 points 10 px apart on a line, box 160 × 20 -> reference distance 16, so the match
    # radius is 7 and the merge radius 15. B: A moved by (3, 4) (5 px), except keypoint 0,
    # moved by (12, 16) (20 px: outside both radii). B is first in the input, A scores higher.
    pose_a = line_pose()
    pose_b = pose_a + torch.tensor([3.0, 4.0], dtype=torch.float64)
    pose_b[0] = pose_a[0] + torch.tensor([12.0, 16.0], dtype=torch.float64)
    keypoints = torch.stack([pose_b, pose_a])
    scores = torch.tensor([[0.6] * 17, [0.9] * 17], dtype=torch.float64)
    boxes = torch.tensor([[0.0, -10.0, 160.0, 10.0]] * 2, dtype=torch.float64)
    result = run_nms(keypoints, scores, boxes, box_scores=torch.tensor([0.4, 0.7]))

    assert result.kept.tolist() == [1]
    assert [c.tolist() for c in result.clusters] == [[1, 0]]
    # Keypoints 1-16: (0.9·a + 0.6·(a + (3, 4))) / 1.5 = a + (1.2, 1.6);
    # score (0.9² + 0.6²) / (0.9 + 0.6) = 1.17 / 1.5 = 0.78. Keypoint 0: A alone, score 0.9.
    expected = pose_a + torch.tensor([1.2, 1.6], dtype=torch.float64)
    expected[0] = pose_a[0]
    expected_scores = torch.tensor([0.9] + [0.78] * 16, dtype=torch.float64)
    torch.testing.assert_close(result.keypoints[0], expected)
    torch.testing.assert_close(result.keypoint_scores[0], expected_scores)
    assert result.scores.tolist() == pytest.approx([(0.9 + 16 * 0.78) / 17])
    # Box scores do not take part; the pick's is passed on for rescoring.
    assert result.box_scores.tolist() == pytest.approx([0.7])


def test_far_apart_candidates_are_all_kept_unchanged_in_score_order():
    poses = torch.stack([line_pose(y=0), line_pose(y=500), line_pose(y=-500)])
    scores = torch.stack([torch.full((17,), s, dtype=torch.float64) for s in (0.5, 0.9, 0.7)])
    scores[0, 3] = 0  # a zero score becomes 1e-5, and stays that after merging
    result = run_nms(poses, scores)
    assert result.kept.tolist() == [1, 2, 0]
    assert [c.tolist() for c in result.clusters] == [[1], [2], [0]]
    torch.testing.assert_close(result.keypoints, poses[[1, 2, 0]])
    expected_scores = scores[[1, 2, 0]].clone()
    expected_scores[2, 3] = 1e-5
    torch.testing.assert_close(result.keypoint_scores, expected_scores)
    assert result.keypoints.isfinite().all()


def test_suppressed_by_the_match_count_but_not_by_similarity():
    # Every keypoint 5 px away (inside the 7 px match radius, outside the 1 px K_sim window).
    pose_a = line_pose()
    pose_b = pose_a + torch.tensor([3.0, 4.0], dtype=torch.float64)
    scores = torch.tensor([[0.9] * 17, [0.6] * 17], dtype=torch.float64)
    boxes = torch.tensor([[0.0, -10.0, 160.0, 10.0]] * 2, dtype=torch.float64)
    similarity = 1.7 * 17 * math.exp(-5 / 2.65)  # ≈ 4.38, K_sim term 0
    assert similarity < PUBLIC.gamma
    result = run_nms(torch.stack([pose_a, pose_b]), scores, boxes)
    assert [c.tolist() for c in result.clusters] == [[0, 1]]  # 17 matches >= 5
    unmatched = PoseNMSParams.preset("alphapose_public", match_threshold=18)
    assert run_nms(torch.stack([pose_a, pose_b]), scores, boxes, unmatched).kept.tolist() == [0, 1]


def test_suppressed_by_similarity_but_not_by_the_match_count():
    # A 5 × 5 box: reference distance 0.5, so 0.8 px offsets match nothing, but they are inside
    # the 1 px K_sim window and close in H_sim.
    pose_a = line_pose(spacing=0.25, y=2.5)
    pose_b = pose_a + torch.tensor([0.8, 0.0], dtype=torch.float64)
    scores = torch.tensor([[1.0] * 17, [0.95] * 17], dtype=torch.float64)
    boxes = torch.tensor([[0.0, 0.0, 5.0, 5.0]] * 2, dtype=torch.float64)
    similarity = 17 * math.tanh(1.0) * math.tanh(0.95) + 1.7 * 17 * math.exp(-0.8 / 2.65)
    assert similarity == pytest.approx(30.9, abs=0.1)
    assert similarity > PUBLIC.gamma
    result = run_nms(torch.stack([pose_a, pose_b]), scores, boxes)
    assert [c.tolist() for c in result.clusters] == [[0, 1]]
    # The rule is simi > γ: γ just below the hand-computed similarity suppresses, just above not.
    for gamma, kept in ((similarity - 1e-9, [0]), (similarity + 1e-9, [0, 1])):
        params = PoseNMSParams.preset("alphapose_public", gamma=gamma)
        assert run_nms(torch.stack([pose_a, pose_b]), scores, boxes, params).kept.tolist() == kept


def test_paper_window_is_a_tenth_of_the_box_where_the_public_code_uses_one_pixel():
    # 1.8 px offsets in a 100 × 100 box: inside the paper's 10 × 10 window, outside 1 px.
    pose_a = line_pose(spacing=5.0, y=50)
    pose_b = pose_a + torch.tensor([1.8, 0.0], dtype=torch.float64)
    keypoints = torch.stack([pose_a, pose_b])
    scores = torch.tensor([[1.0] * 17, [0.9] * 17], dtype=torch.float64)
    boxes = torch.tensor([[0.0, 0.0, 100.0, 100.0]] * 2, dtype=torch.float64)
    spatial = 1.7 * 17 * math.exp(-1.8 / 2.65)
    assert spatial < 22.48 < spatial + 17 * math.tanh(1.0) * math.tanh(0.9)
    no_match = {"match_threshold": math.inf}  # the similarity rule alone, as in the paper
    public = PoseNMSParams.preset("alphapose_public", **no_match)
    paper = PoseNMSParams.preset("paper", **no_match)
    assert run_nms(keypoints, scores, boxes, public).kept.tolist() == [0, 1]
    assert run_nms(keypoints, scores, boxes, paper).kept.tolist() == [0]


def test_score_threshold_drops_a_weak_pick_and_a_weak_merge():
    pose = line_pose()
    # Best keypoint score 0.29 < 0.3: dropped.
    assert run_nms(pose[None], torch.full((1, 17), 0.29)).kept.numel() == 0
    # Pick at 0.3 passes its own test, but merged with an identical 0.1 candidate each keypoint
    # scores (0.3² + 0.1²) / (0.3 + 0.1) = 0.25 < 0.3: dropped, and the member goes with it.
    scores = torch.tensor([[0.3] * 17, [0.1] * 17])
    assert run_nms(torch.stack([pose, pose]), scores).kept.numel() == 0
    # A dropped pick still suppresses its cluster, even a member with one strong keypoint.
    scores = torch.tensor([[0.28] * 17, [0.9] + [0.1] * 16])
    assert run_nms(torch.stack([pose, pose]), scores).kept.numel() == 0


def test_area_threshold_uses_the_padded_keypoint_box():
    pose = torch.tensor([[0.0, 0.0], [10.0, 10.0]] + [[5.0, 5.0]] * 15, dtype=torch.float64)
    scores = torch.full((1, 17), 0.9)
    # 2.25 × (10 × 10) = 225.
    for threshold, kept in ((225.0, 1), (226.0, 0)):
        params = PoseNMSParams.preset("alphapose_public", area_threshold=threshold)
        assert run_nms(pose[None], scores, params=params).kept.numel() == kept


@pytest.mark.parametrize("copies", [1, 2, 10, 100])
@pytest.mark.parametrize("layout", ["coco17", "wholebody136"])
def test_exact_duplicates_collapse_to_one_pose_for_any_number_of_copies(copies, layout):
    generator = torch.Generator().manual_seed(copies)
    num_keypoints, part_weights = (17, None) if layout == "coco17" else (136, whole_body_weights())
    pose = torch.rand(num_keypoints, 2, generator=generator, dtype=torch.float64) * 100
    scores = torch.rand(num_keypoints, generator=generator, dtype=torch.float64) * 0.6 + 0.3
    result = run_nms(
        pose.expand(copies, -1, -1), scores.expand(copies, -1), part_weights=part_weights
    )
    assert result.kept.tolist() == [0]
    assert result.clusters[0].tolist() == list(range(copies))
    torch.testing.assert_close(result.keypoints[0], pose)
    torch.testing.assert_close(result.keypoint_scores[0], scores)


def test_empty_input_and_shape_errors():
    result = run_nms(torch.empty(0, 17, 2), torch.empty(0, 17), torch.empty(0, 4))
    assert result.kept.dtype == torch.long and result.kept.numel() == 0
    assert result.clusters == [] and result.keypoints.shape == (0, 17, 2)
    pose = line_pose()[None]
    with pytest.raises(ValueError, match="keypoint_scores"):
        run_nms(pose, torch.ones(1, 16))
    with pytest.raises(ValueError, match="keypoints must be"):
        run_nms(torch.ones(1, 17, 3), torch.ones(1, 17), torch.ones(1, 4))
    with pytest.raises(ValueError, match="part_weights cover 136"):
        run_nms(pose, torch.ones(1, 17), part_weights=whole_body_weights())


# --- parameters -------------------------------------------------------------------------------


def test_presets_hold_the_public_constants_and_the_paper_window():
    assert PoseNMSParams() == PUBLIC
    assert (PUBLIC.delta1, PUBLIC.mu, PUBLIC.delta2, PUBLIC.gamma) == (1.0, 1.7, 2.65, 22.48)
    assert (PUBLIC.score_threshold, PUBLIC.match_threshold, PUBLIC.alpha) == (0.3, 5.0, 0.1)
    assert (PUBLIC.ksim_window, PUBLIC.ksim_pixels) == ("pixel", 1.0)
    assert (PUBLIC.match_cap_px, PUBLIC.merge_cap_px, PUBLIC.zero_score) == (7.0, 15.0, 1e-5)
    assert (PUBLIC.area_threshold, PUBLIC.area_scale) == (0.0, 2.25)
    assert (PAPER.ksim_window, PAPER.ksim_box_fraction) == ("box_fraction", 0.1)
    assert dataclasses.replace(PAPER, ksim_window="pixel") == PUBLIC


def test_params_are_immutable_and_overrides_do_not_leak():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PUBLIC.gamma = 10.0  # type: ignore[misc]
    swept = PoseNMSParams.preset("paper", gamma=30.0, match_threshold=4)
    assert (swept.gamma, swept.match_threshold, swept.ksim_window) == (30.0, 4, "box_fraction")
    assert PoseNMSParams.preset("paper").gamma == 22.48


def test_params_errors_name_the_config_key():
    with pytest.raises(ValueError, match=r"model\.postprocess\.pose_nms\.preset"):
        PoseNMSParams.preset("alphapose")
    with pytest.raises(ValueError, match=r"unknown key model\.postprocess\.pose_nms\.gama\b"):
        PoseNMSParams.preset("alphapose_public", gama=20.0)
    with pytest.raises(ValueError, match=r"model\.postprocess\.pose_nms\.delta1 must be > 0"):
        PoseNMSParams.preset("alphapose_public", delta1=0)
    with pytest.raises(ValueError, match=r"model\.postprocess\.pose_nms\.ksim_window"):
        PoseNMSParams(ksim_window="circle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"model\.postprocess\.pose_nms\.mu must be a number"):
        PoseNMSParams(mu="1.7")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"model\.postprocess\.pose_nms\.area_threshold"):
        PoseNMSParams(area_threshold=-1.0)


# --- whole-body part weights -------------------------------------------------------------------


def test_part_weights_from_skeleton_per_keypoint():
    coco = part_weights_from_skeleton(load_skeleton("coco17"), {"body": (1, 1)})
    assert coco == PartWeights(weights=(1.0,) * 17, scales=(1.0,) * 17)
    whole_body = whole_body_weights()
    assert whole_body.weights == (1.0,) * 26 + (0.1,) * 68 + (0.2,) * 42
    assert whole_body.scales == (1.0,) * 26 + (0.5,) * 110


def test_part_weights_errors():
    skeleton = whole_body_skeleton()
    full = {"body": (1, 1), "feet": (1, 1), "face": (1, 1), "hands": (1, 1)}
    with pytest.raises(ValueError, match=r"pose_nms\.parts\.torso: .* has no part"):
        part_weights_from_skeleton(skeleton, {**full, "torso": (1, 1)})
    with pytest.raises(ValueError, match="leaves 42 keypoints"):
        part_weights_from_skeleton(skeleton, {k: v for k, v in full.items() if k != "hands"})
    with pytest.raises(ValueError, match=r"parts\.face must be \(weight, distance scale\)"):
        part_weights_from_skeleton(skeleton, {**full, "face": (1,)})
    overlapping = Skeleton.from_config(
        {
            "name": "x",
            "keypoints": ["a", "b"],
            "sigmas": [0.1, 0.1],
            "parts": {"p": ["a", "b"], "q": ["b"]},
        }
    )
    with pytest.raises(ValueError, match="more than one part"):
        part_weights_from_skeleton(overlapping, {"p": (1, 1), "q": (1, 1)})
    with pytest.raises(ValueError, match="scales must be finite and > 0"):
        PartWeights(weights=(1.0,), scales=(0.0,))
    with pytest.raises(ValueError, match="at least one weight"):
        PartWeights(weights=(0.0,), scales=(1.0,))


def test_a_part_with_weight_zero_cannot_suppress():
    # Body and feet 200 px apart, face and hands identical: by count alone, 110 matching face
    # and hand points suppress the second person; weighted out, they do not.
    generator = torch.Generator().manual_seed(0)
    pose_a = torch.rand(136, 2, generator=generator, dtype=torch.float64) * 100
    pose_b = pose_a.clone()
    pose_b[:26] += 200
    keypoints, scores = torch.stack([pose_a, pose_b]), torch.full((2, 136), 0.8)
    scores[1] = 0.7
    assert run_nms(keypoints, scores).kept.tolist() == [0]
    skeleton = whole_body_skeleton()
    parts = {"body": (1, 1), "feet": (1, 1), "face": (0, 1), "hands": (0, 1)}
    part_weights = part_weights_from_skeleton(skeleton, parts)
    assert run_nms(keypoints, scores, part_weights=part_weights).kept.tolist() == [0, 1]


def test_a_distance_scale_widens_every_radius_of_its_part():
    # 10 px everywhere: outside the 7 px match radius; inside it at distance scale 2 (5 units).
    pose_a = line_pose()
    pose_b = pose_a + torch.tensor([6.0, 8.0], dtype=torch.float64)
    keypoints = torch.stack([pose_a, pose_b])
    scores = torch.tensor([[0.9] * 17, [0.6] * 17])
    boxes = torch.tensor([[0.0, -10.0, 160.0, 10.0]] * 2)
    assert run_nms(keypoints, scores, boxes).kept.tolist() == [0, 1]
    wide = part_weights_from_skeleton(load_skeleton("coco17"), {"body": (1, 2)})
    result = run_nms(keypoints, scores, boxes, part_weights=wide)
    assert [c.tolist() for c in result.clusters] == [[0, 1]]
    # ... and the merge radius (15 px -> 30 px): B enters the average.
    torch.testing.assert_close(
        result.keypoints[0], pose_a + torch.tensor([2.4, 3.2], dtype=torch.float64)
    )
