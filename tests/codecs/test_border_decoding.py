"""Decoding of clean targets over the whole heatmap, the outer band included.

Every codec is built from its config. Positions are in heatmap pixels, 0 to W - 1 and 0 to H - 1.
The reference is the plain rule on the unsmoothed map: integer argmax, then the quarter shift
(0.25 px per axis toward the higher neighbour, a neighbour outside the map counting as 0) or, for
``second_max``, 0.25 px toward the second highest pixel.
"""

from __future__ import annotations

import functools

import hydra
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import posesuite.config  # noqa: F401  (resolvers)
from posesuite.codecs.heatmap import HeatmapCodec
from posesuite.codecs.multi_sigma import MultiSigmaHeatmapCodec
from posesuite.paths import CONF_DIR

CONFIGS = {
    # name: (overrides, expected refine, expected smoothing kernel of the rule)
    "simplebaseline_small": ["model=simplebaseline_small"],
    "simplebaseline_256x192": ["model=simplebaseline"],
    "cpn_256x192": ["model=cpn"],
    "cpn_256x192_shift": ["model=cpn", "model.module.codec.refine=shift"],
    "cpn_384x288": ["experiment=cpn_res50_coco-384x288"],
    "cpn_res18_128x96": ["experiment=cpn_res18_synthetic-128x96"],
}
DARK_EPS = 0.05  # heatmap px, where the Newton step applies
EPS = 1e-4


@functools.cache
def codec_from_config(name: str) -> HeatmapCodec:
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["paths.output_dir=/tmp/unused", *CONFIGS[name]])
    return hydra.utils.instantiate(cfg.model.module.codec)


def test_the_configs_are_the_documented_ones():
    small = codec_from_config("simplebaseline_small")
    assert (small.heatmap_size, small.sigma, small.refine, small.blur_kernel) == (
        (24, 32),
        0.75,
        "dark",
        3,
    )
    full = codec_from_config("simplebaseline_256x192")
    assert (full.heatmap_size, full.sigma, full.refine, full.blur_kernel) == (
        (48, 64),
        2.0,
        "dark",
        11,
    )
    cpn = codec_from_config("cpn_256x192")
    assert isinstance(cpn, MultiSigmaHeatmapCodec)
    assert (cpn.heatmap_size, cpn.refine, cpn.peak_blur_kernel) == ((48, 64), "second_max", 21)
    assert cpn.sigma == pytest.approx(1.4)
    res18 = codec_from_config("cpn_res18_128x96")
    assert (res18.refine, res18.blur_kernel, res18.peak_blur_kernel) == ("dark", 3, 1)


def whole_map_points(codec: HeatmapCodec, n: int = 3000, seed: int = 0) -> torch.Tensor:
    """(N, 2) heatmap positions: uniform over the map, plus dense sweeps of each border band."""
    width, height = codec.heatmap_size
    generator = torch.Generator().manual_seed(seed)
    uniform = torch.rand(n, 2, generator=generator) * torch.tensor([width - 1.0, height - 1.0])
    depth = torch.linspace(0.0, min(6.0 * codec.sigma, 12.0), 241)
    along_x = torch.rand(depth.numel(), generator=generator) * (width - 1)
    along_y = torch.rand(depth.numel(), generator=generator) * (height - 1)
    bands = [
        torch.stack([depth, along_y], -1),
        torch.stack([width - 1 - depth, along_y], -1),
        torch.stack([along_x, depth], -1),
        torch.stack([along_x, height - 1 - depth], -1),
    ]
    # The corners, both coordinates in the band.
    corner = torch.rand(400, 2, generator=generator) * 3.0
    corners = [corner, torch.tensor([width - 1.0, height - 1.0]) - corner]
    return torch.cat([uniform, *bands, *corners])


def clean_targets(codec: HeatmapCodec, points: torch.Tensor) -> torch.Tensor:
    """(1, N, h, w) targets as ``encode`` draws them, for heatmap positions (N, 2)."""
    return codec.gaussian_heatmaps(codec.heatmap_to_crop(points)[None])


def decoded_positions(codec: HeatmapCodec, maps: torch.Tensor) -> torch.Tensor:
    keypoints, _ = codec.decode_heatmaps(maps)
    return codec.crop_to_heatmap(keypoints)[0]


def argmax_xy(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    width = maps.shape[-1]
    index = maps.flatten(-2).argmax(-1)[0]
    return index % width, index // width


def plain_reference(maps: torch.Tensor, rule: str) -> torch.Tensor:
    """Heatmap positions (N, 2) of the plain rule on unsmoothed (1, N, h, w) maps."""
    height, width = maps.shape[-2:]
    x, y = argmax_xy(maps)
    if rule == "second_max":
        flat = maps[0].flatten(-2).clone()
        flat[torch.arange(flat.shape[0]), y * width + x] = float("-inf")
        second = flat.argmax(-1)
        step = torch.stack([second % width - x, second // width - y], -1).float()
        offset = 0.25 * step / step.norm(dim=-1, keepdim=True)
    else:
        padded = F.pad(maps[0], (1, 1, 1, 1))
        rows = torch.arange(maps.shape[1])
        right, left = padded[rows, y + 1, x + 2], padded[rows, y + 1, x]
        below, above = padded[rows, y + 2, x + 1], padded[rows, y, x + 1]
        offset = 0.25 * torch.stack([torch.sign(right - left), torch.sign(below - above)], -1)
    points = torch.stack([x, y], -1).float() + offset
    return torch.minimum(points.clamp_min(0), torch.tensor([width - 1.0, height - 1.0]))


def on_border(codec: HeatmapCodec, maps: torch.Tensor) -> torch.Tensor:
    width, height = codec.heatmap_size
    x, y = argmax_xy(maps)
    return (x == 0) | (x == width - 1) | (y == 0) | (y == height - 1)


@pytest.mark.parametrize(
    "name", ["simplebaseline_small", "simplebaseline_256x192", "cpn_res18_128x96"]
)
def test_dark_is_exact_wherever_its_stencil_fits_and_no_worse_than_the_shift_elsewhere(name):
    codec = codec_from_config(name)
    points = whole_map_points(codec)
    maps = clean_targets(codec, points)
    error = (decoded_positions(codec, maps) - points).abs().amax(-1)
    reference = (plain_reference(maps, "shift") - points).abs().amax(-1)
    border = on_border(codec, maps)
    assert border.sum() > 100 and (~border).sum() > 1000
    assert error[~border].max() < DARK_EPS
    assert (error[border] <= reference[border] + EPS).all()


@pytest.mark.parametrize("name", ["cpn_256x192", "cpn_256x192_shift", "cpn_384x288"])
def test_cpn_blur_then_step_matches_the_plain_rule_over_the_whole_map(name):
    # On clean targets the blur-21 maximum is the raw one, so the decode is the plain rule's, in
    # the interior as in the border band (where plain zero padding would move it inward).
    codec = codec_from_config(name)
    points = whole_map_points(codec)
    maps = clean_targets(codec, points)
    error = (decoded_positions(codec, maps) - points).norm(dim=-1)
    reference = (plain_reference(maps, codec.refine) - points).norm(dim=-1)
    assert (error <= reference + EPS).all()
    assert error.max() < 0.5**0.5 + EPS


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_decoding_never_moves_a_border_maximum_out_of_the_map(name):
    codec = codec_from_config(name)
    width, height = codec.heatmap_size
    generator = torch.Generator().manual_seed(1)
    n = 400
    # Peaks on and beyond the left and top borders, plus noise, some of it negative.
    depth = torch.rand(n, generator=generator) * 1.4 - 1.0
    across = torch.rand(n, generator=generator)
    points = torch.cat(
        [
            torch.stack([depth, 2 + across * (height - 5)], -1),
            torch.stack([2 + across * (width - 5), depth], -1),
        ]
    )
    maps = clean_targets(codec, points)
    maps = maps + 0.1 * torch.randn(maps.shape, generator=generator)
    # And the mirrored maps, for the right and bottom borders.
    for candidate in (maps, maps.flip(-1), maps.flip(-2)):
        decoded = decoded_positions(codec, candidate)
        x, y = argmax_xy(candidate)
        assert (decoded >= 0).all()
        assert (decoded <= torch.tensor([width - 1.0, height - 1.0])).all()
        assert (decoded[x == 0, 0] >= 0).all() and (decoded[x == width - 1, 0] <= width - 1).all()
        assert (decoded[y == 0, 1] >= 0).all() and (decoded[y == height - 1, 1] <= height - 1).all()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_maximum_on_the_border_with_a_negative_inner_neighbour_stays_put(name):
    codec = codec_from_config(name)
    width, height = codec.heatmap_size
    maps = torch.full((1, 1, height, width), -0.2)
    maps[0, 0, 5, 0] = 1.0
    decoded = decoded_positions(codec, maps)
    assert decoded[0, 0] == 0.0


def test_dark_no_longer_decodes_joints_near_the_border_outward():
    # Before: replicate padding decoded joints within 3 sigma of the edge up to 1.2 px outward.
    codec = codec_from_config("simplebaseline_256x192")
    depth = torch.linspace(0.55, 3 * codec.sigma, 50)
    points = torch.stack([depth, torch.full_like(depth, 20.3)], -1)
    decoded = decoded_positions(codec, clean_targets(codec, points))
    assert (decoded - points).abs().max() < DARK_EPS


@pytest.mark.parametrize("name", ["cpn_256x192", "cpn_256x192_shift"])
def test_cpn_blur_21_no_longer_moves_joints_near_the_border_by_pixels(name):
    # Before: replicate padding decoded x = 2 at about -0.25 (2.25 px off); zero padding alone
    # would pull them 0.75 px inward. Now within the quarter-pixel rule's error.
    codec = codec_from_config(name)
    depth = torch.linspace(0.0, 3.0, 61)
    points = torch.stack([depth, torch.full_like(depth, 30.2)], -1)
    decoded = decoded_positions(codec, clean_targets(codec, points))
    assert (decoded - points)[:, 0].abs().max() <= 0.25 + EPS


def test_second_maximum_shift_on_a_constructed_map():
    codec = HeatmapCodec((192, 256), (48, 64), refine="second_max")
    maps = torch.zeros(1, 2, 64, 48)
    maps[0, 0, 12, 10] = 1.0
    maps[0, 0, 16, 13] = 0.6  # second maximum at (+3, +4): unit vector (0.6, 0.8)
    maps[0, 0, 40, 30] = 0.3
    maps[0, 1, 7, 0] = 1.0  # on the border, second maximum inward and up
    maps[0, 1, 6, 1] = 0.9
    decoded = decoded_positions(codec, maps)
    torch.testing.assert_close(decoded[0], torch.tensor([10.15, 12.2]))
    step = 0.25 / 2**0.5
    torch.testing.assert_close(decoded[1], torch.tensor([step, 7 - step]))


def test_second_maximum_shift_works_on_the_blurred_map():
    # Deltas 1 at y = 30 and 0.5 at y = 33. Blurred with 21 (sigma 3.5), the column reads
    # 1.346, 1.385, 1.329 at y = 30, 31, 32: the maximum is at 31, the second at 30, so the
    # decode is 30.75 (on the raw map it would be 30.25, toward y = 33).
    codec = MultiSigmaHeatmapCodec((192, 256), (48, 64), refine="second_max", peak_blur_kernel=21)
    maps = torch.zeros(1, 1, 64, 48)
    maps[0, 0, 30, 20] = 1.0
    maps[0, 0, 33, 20] = 0.5
    torch.testing.assert_close(decoded_positions(codec, maps)[0], torch.tensor([20.0, 30.75]))


@pytest.mark.parametrize("codec_class", [HeatmapCodec, MultiSigmaHeatmapCodec])
def test_second_max_is_a_refinement_of_both_codecs(codec_class):
    assert codec_class((192, 256), (48, 64), refine="second_max").refine == "second_max"
