import cv2
import numpy as np
import pytest
import torch

from posesuite.codecs.heatmap import kernel_sigma
from posesuite.codecs.multi_sigma import MultiSigmaHeatmapCodec


def measured_sigmas(heatmap: torch.Tensor) -> tuple[float, float]:
    """Standard deviations along x and y of a heatmap read as a distribution (second moments)."""
    heatmap = heatmap.double()
    mass = heatmap.sum()
    ys, xs = torch.meshgrid(
        torch.arange(heatmap.shape[0], dtype=torch.float64),
        torch.arange(heatmap.shape[1], dtype=torch.float64),
        indexing="ij",
    )
    mean_x, mean_y = (xs * heatmap).sum() / mass, (ys * heatmap).sum() / mass
    var_x = ((xs - mean_x) ** 2 * heatmap).sum() / mass
    var_y = ((ys - mean_y) ** 2 * heatmap).sum() / mass
    return var_x.sqrt().item(), var_y.sqrt().item()


@pytest.mark.parametrize(
    ("input_size", "heatmap_size", "global_kernels", "kernel"),
    [((192, 256), (48, 64), (15, 11, 9, 7), 7), ((288, 384), (72, 96), (23, 17, 13, 9), 9)],
)
def test_every_target_has_its_configured_width(input_size, heatmap_size, global_kernels, kernel):
    codec = MultiSigmaHeatmapCodec(input_size, heatmap_size, global_kernels, kernel)
    centre = torch.tensor([[[input_size[0] / 2 + 0.3, input_size[1] / 2 - 1.1]]])
    targets = codec.encode_keypoints(centre, torch.ones(1, 1))
    assert targets["global_heatmaps"].shape == (1, len(global_kernels), 1, *heatmap_size[::-1])
    maps = [*targets["global_heatmaps"][0, :, 0], targets["heatmaps"][0, 0]]
    for level_map, size in zip(maps, [*global_kernels, kernel], strict=True):
        for sigma in measured_sigmas(level_map):
            assert sigma == pytest.approx(kernel_sigma(size), rel=0.02), size


@pytest.mark.parametrize("size", [11, 13, 15, 17, 21, 23])
def test_kernel_sigma_is_opencvs_rule(size):
    # OpenCV derives sigma from the size when given 0 (OpenCV 4 has fixed tables up to size 9).
    np.testing.assert_allclose(
        cv2.getGaussianKernel(size, 0), cv2.getGaussianKernel(size, kernel_sigma(size)), atol=1e-12
    )


def test_unlabelled_keypoints_get_empty_targets_at_every_level():
    codec = MultiSigmaHeatmapCodec((192, 256), (48, 64))
    keypoints = torch.full((2, 3, 2), 90.0)
    weight = torch.ones(2, 3)
    weight[1, 2] = 0
    targets = codec.encode_keypoints(keypoints, weight)
    assert targets["global_heatmaps"][1, :, 2].abs().sum() == 0
    assert targets["global_heatmaps"][1, :, 1].amax() > 0.9 and targets["heatmaps"][1, 2].sum() == 0


def test_decoding_after_the_peak_blur_finds_the_keypoints_and_keeps_raw_scores():
    codec = MultiSigmaHeatmapCodec((192, 256), (48, 64), refine="shift", peak_blur_kernel=21)
    generator = torch.Generator().manual_seed(0)
    keypoints = 24 + torch.rand(4, 17, 2, generator=generator) * torch.tensor([144.0, 208.0])
    heatmaps = codec.encode_keypoints(keypoints, torch.ones(4, 17))["heatmaps"]
    decoded, scores = codec.decode_heatmaps(heatmaps)
    assert (decoded - keypoints).abs().max() < 0.5 * 4  # within the quarter-pixel rule's error
    torch.testing.assert_close(scores, heatmaps.flatten(-2).amax(-1))


@pytest.mark.parametrize("sizes", [{"global_kernel_sizes": (15, 10)}, {"kernel_size": 0}])
def test_even_or_empty_kernels_are_refused(sizes):
    with pytest.raises(ValueError, match="odd"):
        MultiSigmaHeatmapCodec((192, 256), (48, 64), **sizes)
