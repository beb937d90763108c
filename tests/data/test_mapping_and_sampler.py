"""Sources mapped into the target skeleton, and the ratio sampler that mixes them."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from posesuite.data.mapping import KeypointMapping
from posesuite.data.records import DataError
from posesuite.data.sampler import MultiSourceSampler
from posesuite.skeleton import load_skeleton

COCO = load_skeleton("coco17")


def test_same_keypoint_set_maps_by_name_as_the_identity():
    mapping = KeypointMapping.between("coco", COCO.keypoints, COCO)
    assert mapping.is_identity and mapping.mask.all()
    keypoints = np.random.default_rng(0).uniform(size=(17, 3))
    np.testing.assert_array_equal(mapping.apply(keypoints), keypoints)


def test_a_partial_source_fills_its_slots_and_masks_the_rest():
    # A face-and-shoulders source in its own order, with its own names for two joints.
    source = ["r_shoulder", "l_shoulder", "nose", "chin"]
    pairs = {"right_shoulder": "r_shoulder", "left_shoulder": "l_shoulder", "nose": "nose"}
    mapping = KeypointMapping.between("portraits", source, COCO, pairs)
    keypoints = np.array([[10, 11, 2], [20, 21, 1], [30, 31, 2], [40, 41, 2]], dtype=np.float32)
    mapped = mapping.apply(keypoints)
    assert mapped.shape == (17, 3)
    np.testing.assert_array_equal(mapped[COCO.index("right_shoulder")], [10, 11, 2])
    np.testing.assert_array_equal(mapped[COCO.index("left_shoulder")], [20, 21, 1])
    np.testing.assert_array_equal(mapped[COCO.index("nose")], [30, 31, 2])
    expected_mask = np.zeros(17, bool)
    expected_mask[[COCO.index(n) for n in pairs]] = True
    np.testing.assert_array_equal(mapping.mask, expected_mask)
    assert (mapped[~expected_mask] == 0).all()  # unmapped slots are unlabelled


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ({"left_toe": "nose"}, r"'portraits'.*target keypoint 'left_toe'.*'coco17'"),
        ({"nose": "beak"}, r"'portraits'.*maps 'nose' from 'beak'"),
        ({"nose": "nose", "left_eye": "nose"}, r"source keypoint 'nose' fills both"),
        ({}, r"no keypoint of the source maps into skeleton 'coco17'"),
    ],
)
def test_a_wrong_mapping_names_the_source_and_the_keypoint(pairs, message):
    with pytest.raises(DataError, match=message):
        KeypointMapping.between("portraits", ["nose", "chin"], COCO, pairs)


def test_a_record_of_the_wrong_size_is_refused():
    mapping = KeypointMapping.between("coco", COCO.keypoints, COCO)
    with pytest.raises(DataError, match="'coco': a record has 16 keypoints, its keypoint set 17"):
        mapping.apply(np.zeros((16, 3)))


def source_of(index: int, sizes: list[int]) -> int:
    return int(np.searchsorted(np.cumsum(sizes), index, side="right"))


def test_sampler_draws_each_source_at_its_ratio_on_every_rank():
    sizes, ratios = [50, 400, 7, 9], [1 / 3, 1 / 3, 1 / 6, 1 / 6]
    ranks = [
        MultiSourceSampler(sizes, ratios, num_samples=600, seed=3, num_replicas=2, rank=r)
        for r in range(2)
    ]
    drawn = [list(sampler) for sampler in ranks]
    for indices in drawn:
        assert len(indices) == 300
        counts = Counter(source_of(i, sizes) for i in indices)
        assert [counts[s] for s in range(4)] == [100, 100, 50, 50]  # exact, per rank
    # The ranks' draws from a source larger than its share do not overlap.
    big = [{i for i in indices if source_of(i, sizes) == 1} for indices in drawn]
    assert not big[0] & big[1]
    # A source smaller than its share is cycled through: every sample used, evenly.
    small = Counter(i for indices in drawn for i in indices if source_of(i, sizes) == 2)
    assert set(small) == set(range(450, 457)) and max(small.values()) - min(small.values()) <= 1


def test_sampler_is_fixed_by_seed_and_epoch():
    def draw(seed: int, epoch: int) -> list[int]:
        sampler = MultiSourceSampler([20, 30], [0.5, 0.5], seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert draw(0, 0) == draw(0, 0) and draw(0, 1) == draw(0, 1)
    assert draw(0, 0) != draw(0, 1) and draw(0, 0) != draw(1, 0)
    assert len(draw(0, 0)) == 50  # one epoch is the sources' total by default


def test_sampler_refuses_impossible_ratios():
    with pytest.raises(ValueError, match="one ratio per source"):
        MultiSourceSampler([10, 10], [1.0])
    with pytest.raises(ValueError, match="not all 0"):
        MultiSourceSampler([10, 10], [0.0, 0.0])
    with pytest.raises(ValueError, match="no samples"):
        MultiSourceSampler([10, 0], [0.5, 0.5])
