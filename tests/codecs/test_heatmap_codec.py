import numpy as np
import pytest
import torch

from posesuite.codecs.heatmap import HeatmapCodec
from posesuite.skeleton import load_skeleton


def interior_points(n: int, input_size=(192, 256), margin=24.0, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    low = torch.tensor([margin, margin])
    span = torch.tensor(input_size, dtype=torch.float32) - 2 * margin
    return low + torch.rand(n, 17, 2, generator=generator) * span


@pytest.mark.parametrize(
    ("refine", "tolerance"), [("dark", 0.05), ("shift", 0.5 * 4), ("none", 0.5 * 4 * 1.5)]
)
def test_encode_decode_round_trip_at_subpixel_positions(refine, tolerance):
    codec = HeatmapCodec((192, 256), (48, 64), sigma=2.0, refine=refine)
    keypoints = interior_points(8)
    targets = codec.encode_keypoints(keypoints, torch.ones(8, 17))
    decoded, scores = codec.decode_heatmaps(targets["heatmaps"])
    assert (decoded - keypoints).abs().max() < tolerance
    assert scores.min() > 0.9


def test_dark_beats_the_quarter_pixel_shift():
    keypoints = interior_points(16, seed=1)
    errors = {}
    for refine in ("dark", "shift"):
        codec = HeatmapCodec((192, 256), (48, 64), sigma=2.0, refine=refine)
        decoded, _ = codec.decode_heatmaps(
            codec.encode_keypoints(keypoints, torch.ones(16, 17))["heatmaps"]
        )
        errors[refine] = (decoded - keypoints).norm(dim=-1).mean()
    assert errors["dark"] < 0.1 * errors["shift"]


def test_gaussian_peak_and_width():
    codec = HeatmapCodec((192, 256), (48, 64), sigma=3.0)
    # Crop point (41.5, 57.5) is heatmap pixel (10, 14) exactly: (x + 0.5) / 4 - 0.5.
    heatmap = codec.gaussian_heatmaps(torch.tensor([[[41.5, 57.5]]]))[0, 0]
    assert heatmap[14, 10] == pytest.approx(1.0)
    assert heatmap[14, 13] == pytest.approx(np.exp(-9 / 18))
    assert heatmap[17, 10] == pytest.approx(np.exp(-9 / 18))


def test_unlabelled_keypoints_give_empty_targets_and_zero_weight():
    codec = HeatmapCodec((192, 256), (48, 64))
    weight = torch.ones(2, 17)
    weight[1, 3] = 0
    targets = codec.encode_keypoints(interior_points(2), weight)
    assert targets["heatmaps"][1, 3].abs().sum() == 0
    assert targets["target_weight"][1, 3] == 0 and targets["heatmaps"][1, 4].max() > 0.9


def test_flip_back_of_the_mirrored_crop_recovers_the_heatmaps_exactly():
    skeleton = load_skeleton("coco17")
    codec = HeatmapCodec((192, 256), (48, 64), sigma=2.0)
    keypoints = interior_points(4)
    mirrored = keypoints.clone()
    mirrored[..., 0] = 192 - 1 - mirrored[..., 0]  # mirror of the crop: x -> W - 1 - x
    mirrored = mirrored[:, skeleton.flip_index]  # a left wrist becomes a right wrist
    original = codec.encode_keypoints(keypoints, torch.ones(4, 17))["heatmaps"]
    flipped_back = codec.flip_back(
        codec.encode_keypoints(mirrored, torch.ones(4, 17))["heatmaps"], skeleton.flip_index
    )
    torch.testing.assert_close(flipped_back, original, atol=1e-5, rtol=0)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="refine"):
        HeatmapCodec((192, 256), (48, 64), refine="argmax")
    with pytest.raises(ValueError, match="odd"):
        HeatmapCodec((192, 256), (48, 64), blur_kernel=4)


def test_round_trip_at_the_default_cpu_size_with_narrow_targets():
    # conf/model/simplebaseline_small.yaml: 96x128 crops, 24x32 maps, sigma 0.75, DARK blur 3.
    codec = HeatmapCodec((96, 128), (24, 32), sigma=0.75, refine="dark", blur_kernel=3)
    keypoints = interior_points(8, input_size=(96, 128), margin=12.0)
    decoded, _ = codec.decode_heatmaps(
        codec.encode_keypoints(keypoints, torch.ones(8, 17))["heatmaps"]
    )
    assert (decoded - keypoints).abs().max() < 0.05


def test_joints_outside_the_source_keypoint_set_get_zero_weight():
    codec = HeatmapCodec((192, 256), (48, 64))
    mask = torch.ones(2, 17, dtype=torch.bool)
    mask[0, 5] = False
    targets = codec.encode_keypoints(interior_points(2), torch.ones(2, 17), keypoint_mask=mask)
    assert targets["target_weight"][0, 5] == 0 and targets["heatmaps"][0, 5].abs().sum() == 0
    assert targets["target_weight"].sum() == 33 and targets["keypoint_mask"] is mask


@pytest.mark.parametrize("rule", ["drop", "overlap"])
def test_out_of_crop_rule(rule):
    """drop: a joint outside the crop is not trained; overlap: it is while its Gaussian reaches
    the map within 3 sigma (sigma 2 heatmap px = 8 crop px at stride 4)."""
    codec = HeatmapCodec((192, 256), (48, 64), sigma=2.0, out_of_crop=rule)
    keypoints = torch.tensor([[[-10.0, 100.0], [-30.0, 100.0], [100.0, 100.0]]])
    weight = torch.tensor([[0.0, 0.0, 1.0]])  # the data's: labelled and inside the crop
    visibility = torch.tensor([[2, 1, 2]], dtype=torch.uint8)
    targets = codec.encode_keypoints(keypoints, weight, visibility)
    # x = -10 crop px is heatmap -2.875: within 3 sigma (6 px) of the map; -30 is -7.875: not.
    expected = [0.0, 0.0, 1.0] if rule == "drop" else [1.0, 0.0, 1.0]
    assert targets["target_weight"].tolist() == [expected]
    assert (targets["heatmaps"][0, 0].max() > 0) == (rule == "overlap")
    with pytest.raises(ValueError, match="out_of_crop"):
        HeatmapCodec((192, 256), (48, 64), out_of_crop="keep")
