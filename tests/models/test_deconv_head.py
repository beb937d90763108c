"""SimpleBaseline's deconvolution head, with and without lateral skips from finer levels."""

from __future__ import annotations

import pytest
import torch

from posesuite.models.heads.deconv import DeconvHead

R18_CHANNELS = [64, 128, 256, 512]  # C2-C5


def r18_features(batch: int = 2, size=(32, 24), seed: int = 0) -> list[torch.Tensor]:
    """Random C2-C5 maps of a 128x96 crop: strides 4, 8, 16, 32."""
    generator = torch.Generator().manual_seed(seed)
    height, width = size
    return [
        torch.randn(batch, channels, height >> level, width >> level, generator=generator)
        for level, channels in enumerate(R18_CHANNELS)
    ]


@pytest.mark.parametrize("levels", [1, 2, 4])
def test_heatmaps_come_out_at_stride_4_whatever_the_levels_given(levels):
    head = DeconvHead(R18_CHANNELS[-levels:], num_keypoints=17, deconv_channels=[32, 32, 32])
    assert len(head.laterals) == levels - 1
    heatmaps = head(r18_features()[-levels:])["heatmaps"]
    assert heatmaps.shape == (2, 17, 32, 24)


def test_a_single_level_given_as_an_int_has_no_skips():
    head = DeconvHead(512, num_keypoints=17, deconv_channels=[32, 32, 32])
    assert len(head.laterals) == 0
    assert head(r18_features()[-1:])["heatmaps"].shape == (2, 17, 32, 24)


def test_the_finest_level_reaches_the_heatmaps_through_its_skip():
    torch.manual_seed(0)
    head = DeconvHead(R18_CHANNELS, 17, deconv_channels=[32, 32, 32]).eval()
    torch.nn.init.normal_(head.final.weight)  # the 0.001 init would hide small differences
    features = r18_features()
    changed = [features[0] + 1.0, *features[1:]]  # C2 only: no deconvolution ever sees it
    difference = head(features)["heatmaps"] - head(changed)["heatmaps"]
    assert difference.abs().max().item() > 1e-3


def test_sides_that_are_not_multiples_of_32_still_give_stride_4_maps():
    # 64x48 crops: C2-C5 are 16x12, 8x6, 4x3 and 2x2 (the last two rounded up).
    features = [
        torch.randn(1, channels, height, width)
        for channels, (height, width) in zip(
            R18_CHANNELS, [(16, 12), (8, 6), (4, 3), (2, 2)], strict=True
        )
    ]
    head = DeconvHead(R18_CHANNELS, 17, deconv_channels=[32, 32, 32])
    assert head(features)["heatmaps"].shape == (1, 17, 16, 12)


def test_more_levels_than_deconvolutions_is_refused():
    with pytest.raises(ValueError, match="4 backbone levels need at least 3 deconvolutions"):
        DeconvHead(R18_CHANNELS, 17, deconv_channels=[32, 32])
