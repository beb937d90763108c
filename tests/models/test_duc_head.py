"""FastPose's DUC head: maps at stride 4 (64x48 at 256x192), the public FastPose-R50's size, and
channel counts that cannot be shuffled refused."""

from __future__ import annotations

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import posesuite.config  # noqa: F401  (resolvers)
from posesuite.models.heads.duc import DUCHead
from posesuite.paths import CONF_DIR

RESNET50_WITHOUT_CLASSIFIER = 23_508_032
# The public FastPose's head for K = 17: DUC 512 -> 1024 (3x3, no bias, BN), DUC 256 -> 512,
# 3x3 conv 128 -> 17 with bias.
FASTPOSE_HEAD = (512 * 1024 * 9 + 2 * 1024) + (256 * 512 * 9 + 2 * 512) + (128 * 17 * 9 + 17)


def test_fastpose_r50_has_the_public_models_size_and_64x48_maps():
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["model=fastpose", "paths.output_dir=/tmp/unused"])
    network = hydra.utils.instantiate(cfg.model.module.network, _convert_="partial").eval()
    assert (
        sum(p.numel() for p in network.parameters()) == RESNET50_WITHOUT_CLASSIFIER + FASTPOSE_HEAD
    )
    with torch.no_grad():
        assert network(torch.rand(1, 3, 256, 192))["heatmaps"].shape == (1, 17, 64, 48)


def test_each_duc_halves_the_stride_without_interpolation():
    head = DUCHead(512, num_keypoints=5, duc_channels=(64, 32, 16)).eval()
    features = torch.rand(2, 512, 3, 4)
    with torch.no_grad():
        assert head([features])["heatmaps"].shape == (2, 5, 3 * 16, 4 * 16)


def test_channels_that_do_not_shuffle_are_refused():
    with pytest.raises(ValueError, match="do not shuffle"):
        DUCHead(510, 17)
    with pytest.raises(ValueError, match="divide by 4"):
        DUCHead(512, 17, duc_channels=(1022,))
