"""The background codec (UniPose): K joint maps + one background map, background first."""

from __future__ import annotations

import pytest
import torch

from posesuite.codecs.background import BackgroundHeatmapCodec
from posesuite.codecs.heatmap import HeatmapCodec
from posesuite.losses import KeypointMSELoss
from posesuite.skeleton import load_skeleton

INPUT, MAPS = (368, 368), (46, 46)


def codec() -> BackgroundHeatmapCodec:
    return BackgroundHeatmapCodec(INPUT, MAPS, sigma=3.0, refine="dark", blur_kernel=17)


def interior_points(n: int, k: int = 16, margin: float = 48.0, seed: int = 0) -> torch.Tensor:
    """Crop points at least ``margin`` px (6 heatmap px) from the border."""
    generator = torch.Generator().manual_seed(seed)
    span = torch.tensor(INPUT, dtype=torch.float32) - 2 * margin
    return margin + torch.rand(n, k, 2, generator=generator) * span


def mirror(keypoints: torch.Tensor, flip_index) -> torch.Tensor:
    mirrored = keypoints.clone()
    mirrored[..., 0] = INPUT[0] - 1 - mirrored[..., 0]  # x -> W - 1 - x
    return mirrored[:, flip_index]


def test_background_target_is_one_minus_the_max_of_the_joints():
    keypoints = interior_points(3)
    weight = torch.ones(3, 16)
    targets = codec().encode_keypoints(keypoints, weight)
    maps = targets["heatmaps"]
    assert maps.shape == (3, 17, 46, 46) and targets["target_weight"].shape == (3, 17)
    torch.testing.assert_close(maps[:, 0], 1 - maps[:, 1:].amax(dim=1))
    # The joint maps are the base codec's, one channel up.
    plain = HeatmapCodec(INPUT, MAPS, sigma=3.0).encode_keypoints(keypoints, weight)
    torch.testing.assert_close(maps[:, 1:], plain["heatmaps"])
    assert maps[:, 0].min() < 0.05 and maps[:, 0].max() == pytest.approx(1.0, abs=1e-6)


def test_joints_without_weight_leave_the_background_at_one():
    keypoints = interior_points(2)
    weight = torch.ones(2, 16)
    weight[0, 5] = 0  # unlabelled
    mask = torch.ones(2, 16)
    mask[0, 7] = 0  # not annotated by the sample's source
    targets = codec().encode_keypoints(keypoints, weight, keypoint_mask=mask)
    background = targets["heatmaps"][:, 0]
    for joint in (5, 7):
        x, y = codec().crop_to_heatmap(keypoints[0, joint]).round().long().tolist()
        others = targets["heatmaps"][0, 1:, y, x]
        # Nothing of the untrained joint's own Gaussian: only the other joints lower it.
        assert background[0, y, x] == pytest.approx(1 - others.max().item(), abs=1e-6)
        assert targets["heatmaps"][0, 1 + joint].abs().sum() == 0
    assert targets["target_weight"][0, [1 + 5, 1 + 7]].tolist() == [0.0, 0.0]
    assert targets["target_weight"][:, 0].tolist() == [1.0, 1.0]


def test_a_crop_without_any_trained_joint_does_not_train_the_background():
    targets = codec().encode_keypoints(interior_points(2), torch.tensor([[0.0] * 16, [1.0] * 16]))
    assert targets["target_weight"][:, 0].tolist() == [0.0, 1.0]
    assert torch.all(targets["heatmaps"][0, 0] == 1)


def test_round_trip_on_clean_targets_is_exact_away_from_the_border():
    keypoints = interior_points(8)
    maps = codec().encode_keypoints(keypoints, torch.ones(8, 16))["heatmaps"]
    decoded, scores = codec().decode_heatmaps(maps)
    assert decoded.shape == (8, 16, 2) and scores.shape == (8, 16)
    # 0.05 heatmap px = 0.4 crop px at stride 8
    assert (
        codec().crop_to_heatmap(decoded) - codec().crop_to_heatmap(keypoints)
    ).abs().max() < 0.05
    assert scores.min() > 0.9


def test_decode_never_returns_the_background_as_a_joint():
    keypoints = interior_points(2)
    maps = codec().encode_keypoints(keypoints, torch.ones(2, 16))["heatmaps"]
    maps[:, 0] = 5.0  # a background far above every joint must change nothing
    decoded, scores = codec().decode({"heatmaps": maps}, {})
    assert decoded.shape == (2, 16, 2)
    assert (decoded - keypoints).abs().max() < 0.4 and scores.max() < 1.01


def test_flip_test_keeps_the_background_out_of_the_joint_swap():
    skeleton = load_skeleton("mpii16")
    flip_index = skeleton.flip_index
    keypoints = interior_points(4)
    maps = codec().encode_keypoints(keypoints, torch.ones(4, 16))["heatmaps"]
    mirrored = codec().encode_keypoints(mirror(keypoints, flip_index), torch.ones(4, 16))
    flipped_back = codec().flip_back(mirrored["heatmaps"], flip_index)
    # Every channel, the background included, back exactly where it belongs.
    torch.testing.assert_close(flipped_back, maps, atol=1e-5, rtol=0)
    outputs, flipped_outputs = {"heatmaps": maps}, {"heatmaps": mirrored["heatmaps"]}
    joints, scores = codec().flip_test(outputs, flipped_outputs, {}, flip_index)
    alone, _ = codec().decode(outputs, {})
    assert joints.shape == (4, 16, 2)
    torch.testing.assert_close(joints, alone, atol=1e-3, rtol=0)
    assert scores.min() > 0.9


def test_flip_test_mirrors_a_lopsided_background_back():
    """A background map that is not symmetric must come back mirrored in channel 0 and never
    reach a joint channel."""
    flip_index = load_skeleton("mpii16").flip_index
    maps = torch.zeros(1, 17, 46, 46)
    maps[0, 0, :, :10] = 1.0  # background on the left of the original crop
    flipped_back = codec().flip_back(maps.flip(-1), flip_index)
    torch.testing.assert_close(flipped_back, maps)
    swapped = torch.zeros(1, 17, 46, 46)
    swapped[0, 1] = 1.0  # right ankle on the mirrored crop
    back = codec().flip_back(swapped, flip_index)
    assert back[0, 1 + flip_index[0]].sum() > 0 and back[0, 0].sum() == 0


def test_encode_refuses_a_network_without_the_background_channel():
    batch = {"keypoints": interior_points(1), "keypoint_weight": torch.ones(1, 16)}
    with pytest.raises(ValueError, match="K \\+ 1 = 17"):
        codec().encode(batch, {"heatmaps": torch.zeros(1, 16, 46, 46)})


def test_the_mse_loss_trains_all_k_plus_one_maps():
    batch = {"keypoints": interior_points(2), "keypoint_weight": torch.ones(2, 16)}
    targets = codec().encode(batch, {"heatmaps": torch.zeros(2, 17, 46, 46)})
    loss = KeypointMSELoss()
    assert loss({"heatmaps": targets["heatmaps"]}, targets)["loss"] == 0
    wrong_background = targets["heatmaps"].clone()
    wrong_background[:, 0] = 0
    assert loss({"heatmaps": wrong_background}, targets)["loss"] > 0
