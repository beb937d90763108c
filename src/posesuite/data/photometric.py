"""Photometric augmentation of a batch of uint8 crops, in torch, on the training device.

The same distribution as the albumentations 2.0.8 pipeline the workers used to run on each crop
(``RandomBrightnessContrast(0.25, 0.25, p=0.5)``, ``HueSaturationValue(p=0.3)``,
``OneOf([GaussianBlur((3, 5)), MotionBlur((3, 5))], p=0.15)``, ``GaussNoise(std_range=(0.02,
0.06), p=0.15)``), step by step with albumentations' own rules: its parameter draws, OpenCV's
8-bit HSV arithmetic, truncation where albumentations truncates and rounding where OpenCV
rounds, reflect-101 borders. Every crop of a batch draws its own parameters from torch's
generator on the images' device, so ``seed_everything`` makes it reproducible.

A clip, (B, T, 3, H, W), shares one draw across its T frames (the per-pixel noise excepted).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

MAX_KERNEL = 5  # blur kernels are 3 or 5 pixels wide; a 3 is embedded in a 5 with zeros


class PhotometricAugmentation(nn.Module):
    """Colour, blur and noise augmentation: uint8 (B, 3, H, W) or (B, T, 3, H, W) RGB crops in,
    uint8 crops of the same shape out (0-255, as ``PoseEstimationModule.normalize`` expects)."""

    def __init__(
        self,
        brightness_limit: float = 0.25,
        contrast_limit: float = 0.25,
        brightness_contrast_prob: float = 0.5,
        hue_shift_limit: float = 20.0,
        saturation_shift_limit: float = 30.0,
        value_shift_limit: float = 20.0,
        hue_saturation_value_prob: float = 0.3,
        blur_prob: float = 0.15,
        gaussian_sigma_range: Sequence[float] = (0.5, 3.0),
        noise_std_range: Sequence[float] = (0.02, 0.06),
        noise_prob: float = 0.15,
    ) -> None:
        super().__init__()
        self.brightness_limit = brightness_limit
        self.contrast_limit = contrast_limit
        self.brightness_contrast_prob = brightness_contrast_prob
        self.hue_shift_limit = hue_shift_limit
        self.saturation_shift_limit = saturation_shift_limit
        self.value_shift_limit = value_shift_limit
        self.hue_saturation_value_prob = hue_saturation_value_prob
        self.blur_prob = blur_prob
        self.gaussian_sigma_range = (float(gaussian_sigma_range[0]), float(gaussian_sigma_range[1]))
        self.noise_std_range = (float(noise_std_range[0]), float(noise_std_range[1]))
        self.noise_prob = noise_prob

    def forward(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.shape[-3] != 3:
            raise ValueError(
                f"expected uint8 RGB crops (..., 3, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        if images.ndim == 5:  # a clip: one draw per clip, applied to each of its frames
            batch, frames = images.shape[:2]
            flat = images.flatten(0, 1)
            return self._augment(flat, batch, frames, generator).view_as(images)
        return self._augment(images, images.shape[0], 1, generator)

    def _augment(
        self, images: torch.Tensor, batch: int, frames: int, generator: torch.Generator | None
    ) -> torch.Tensor:
        device = images.device

        def uniform(low: float, high: float, count: int = batch) -> torch.Tensor:
            draw = torch.rand(count, device=device, generator=generator)
            return (low + (high - low) * draw).repeat_interleave(frames)

        def chosen(prob: float) -> torch.Tensor:
            """Indices (into the frames) of the crops this step applies to."""
            hit = torch.rand(batch, device=device, generator=generator) < prob
            return torch.nonzero(hit.repeat_interleave(frames)).flatten()

        # Every draw is made whatever the outcome, so the draws of one step never depend on
        # another step's: reproducible and simple to reason about.
        contrast = 1.0 + uniform(-self.contrast_limit, self.contrast_limit)
        brightness = 255.0 * uniform(-self.brightness_limit, self.brightness_limit)
        hue_shift = uniform(-self.hue_shift_limit, self.hue_shift_limit)
        saturation_shift = uniform(-self.saturation_shift_limit, self.saturation_shift_limit)
        value_shift = uniform(-self.value_shift_limit, self.value_shift_limit)
        blur_kernels = self._blur_kernels(batch, device, generator).repeat_interleave(frames, 0)
        noise_std = 255.0 * uniform(*self.noise_std_range)
        brightness_contrast = chosen(self.brightness_contrast_prob)
        hue_saturation_value = chosen(self.hue_saturation_value_prob)
        blurred = chosen(self.blur_prob)
        noisy = chosen(self.noise_prob)

        out = images.float()
        if len(brightness_contrast):
            index = brightness_contrast
            out[index] = adjust_brightness_contrast(out[index], contrast[index], brightness[index])
        if len(hue_saturation_value):
            index = hue_saturation_value
            out[index] = shift_hue_saturation_value(
                out[index], hue_shift[index], saturation_shift[index], value_shift[index]
            )
        if len(blurred):
            out[blurred] = filter_each(out[blurred], blur_kernels[blurred])
        if len(noisy):
            noise = (
                torch.randn(out[noisy].shape, device=device, generator=generator)
                * noise_std[noisy, None, None, None]
            )
            out[noisy] = add_noise(out[noisy], noise)
        return out.to(torch.uint8)

    def _blur_kernels(
        self, batch: int, device: torch.device, generator: torch.Generator | None
    ) -> torch.Tensor:
        """(B, 5, 5) kernels: a Gaussian or a motion-blur line, equally likely (``OneOf`` of two
        transforms with equal p)."""

        def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
            return low + (high - low) * torch.rand(
                shape or (batch,), device=device, generator=generator
            )

        # GaussianBlur(blur_limit=(3, 5)) draws randint(3, 5) inclusive and makes an even size
        # odd by adding one: 3 with probability 1/3, 5 with 2/3. Sigma ~ U(0.5, 3).
        gaussian = gaussian_kernels(
            torch.where(uniform(0, 1) < 1 / 3, 3, 5), uniform(*self.gaussian_sigma_range)
        )
        # MotionBlur(blur_limit=(3, 5)): odd size 3 or 5 equally, angle U(0, 360) degrees,
        # direction U(-1, 1), the line shifted (allow_shifted) by U(-1, 1) x half its half-length
        # along x and along y.
        motion_size = torch.where(uniform(0, 1) < 0.5, 3, 5)
        shift = uniform(-1, 1, batch, 2) * (motion_size // 2)[:, None] / 2
        motion = motion_kernels(motion_size, uniform(0, 360), uniform(-1, 1), shift)
        use_gaussian = uniform(0, 1) < 0.5
        return torch.where(use_gaussian[:, None, None], gaussian, motion)


def gaussian_kernels(size: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """(N, 5, 5) separable Gaussian kernels of odd ``size`` (3 or 5) and ``sigma``, each axis
    normalised over its size as albumentations' ``create_gaussian_kernel_1d``."""
    offsets = torch.arange(MAX_KERNEL, device=size.device) - MAX_KERNEL // 2
    inside = offsets.abs()[None] <= size[:, None] // 2
    weights = torch.exp(-0.5 * (offsets[None] / sigma[:, None]) ** 2) * inside
    weights = weights / weights.sum(1, keepdim=True)
    return weights[:, :, None] * weights[:, None, :]


def motion_kernels(
    size: torch.Tensor, angle_deg: torch.Tensor, direction: torch.Tensor, shift: torch.Tensor
) -> torch.Tensor:
    """(N, 5, 5) motion-blur kernels as albumentations' ``create_motion_kernel``: ``size``
    points of a line through the kernel's centre (+ ``shift``, (N, 2) x and y) at ``angle_deg``,
    spanning the half-length backwards and forwards, cut on one side by ``direction`` in
    [-1, 1]; rounded to pixels, set to one, normalised."""
    device = size.device
    half = (size // 2).float()
    start = torch.where(direction > 0, -half * (1 - direction), -half)
    end = torch.where(direction < 0, half * (1 - direction.abs()), half)
    steps = torch.arange(MAX_KERNEL, device=device).float()
    # np.linspace(start, end, size) per kernel; the steps past a kernel's size are unused.
    t = start[:, None] + ((end - start) / (size - 1).float())[:, None] * steps[None]
    used = steps[None] < size[:, None]
    angle = torch.deg2rad(angle_deg)
    x = half[:, None] + torch.cos(angle)[:, None] * t + shift[:, :1]
    y = half[:, None] + torch.sin(angle)[:, None] * t + shift[:, 1:]
    last = (size - 1).float()[:, None]
    x = torch.minimum(torch.round(x).clamp(min=0), last).long()
    y = torch.minimum(torch.round(y).clamp(min=0), last).long()
    pad = (MAX_KERNEL - size)[:, None] // 2  # a 3-wide kernel sits in the middle of the 5x5
    flat = (y + pad) * MAX_KERNEL + (x + pad)
    kernels = torch.zeros(len(size), MAX_KERNEL * MAX_KERNEL, device=device)
    kernels.scatter_(1, torch.where(used, flat, flat[:, :1]), 1.0)
    kernels = kernels / kernels.sum(1, keepdim=True)
    return kernels.view(-1, MAX_KERNEL, MAX_KERNEL)


def adjust_brightness_contrast(
    images: torch.Tensor, contrast: torch.Tensor, brightness: torch.Tensor
) -> torch.Tensor:
    """x * alpha + beta (beta in 0-255 units), clipped and truncated as albumentations' lookup
    table does."""
    scaled = images * contrast[:, None, None, None] + brightness[:, None, None, None]
    return torch.floor(scaled.clamp(0, 255))


def shift_hue_saturation_value(
    images: torch.Tensor,
    hue_shift: torch.Tensor,
    saturation_shift: torch.Tensor,
    value_shift: torch.Tensor,
) -> torch.Tensor:
    """albumentations' ``shift_hsv`` on integer-valued float RGB: OpenCV's 8-bit HSV (hue in
    0-179, saturation and value in 0-255), hue shifted modulo 180 and truncated, saturation and
    value shifted by the shift truncated to an integer and clipped (grey pixels stay grey)."""
    red, green, blue = images.unbind(1)
    value = torch.maximum(torch.maximum(red, green), blue)
    diff = value - torch.minimum(torch.minimum(red, green), blue)
    # OpenCV's fixed-point RGB -> HSV: 12-bit reciprocal tables (round(255 * 4096 / v) and
    # round(30 * 4096 / diff)), rounded shifts; float64 holds these products exactly.
    saturation_scale = torch.round(255 * 4096 / value.double().clamp(min=1))
    saturation = torch.floor((diff * saturation_scale + 2048) / 4096).float()
    # The sector of the largest channel, red first, then green; hue in 2-degree units.
    hue = torch.where(
        value == red,
        green - blue,
        torch.where(value == green, blue - red + 2 * diff, red - green + 4 * diff),
    )
    hue_scale = torch.round(30 * 4096 / diff.double().clamp(min=1))
    hue = torch.floor((hue * hue_scale + 2048) / 4096).float()
    hue = torch.where(hue < 0, hue + 180, hue)

    # (hue + shift) mod 180 for shifts within (-180, 180), truncated.
    hue = hue + hue_shift[:, None, None]
    hue = torch.floor(torch.where(hue < 0, hue + 180, torch.where(hue >= 180, hue - 180, hue)))
    grey = saturation == 0
    saturation = (saturation + torch.trunc(saturation_shift)[:, None, None]).clamp(0, 255)
    saturation = torch.where(grey, 0, saturation)
    value = (value + torch.trunc(value_shift)[:, None, None]).clamp(0, 255)
    return hsv_to_rgb(hue, saturation, value)


def hsv_to_rgb(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """OpenCV 5's 8-bit HSV -> RGB (hue 0-179 in 2-degree units) as its vectorised path computes
    it: float32 by sector, scaled back to 0-255 and truncated (its scalar path rounds instead; a
    crop goes through the vectorised one). The same float32 steps as OpenCV, so the same
    truncations."""
    hue = hue * (6.0 / 180.0)
    sector = torch.floor(hue)
    fraction = hue - sector
    saturation = saturation * (1.0 / 255.0)
    value = value * (1.0 / 255.0)
    low = value * (1 - saturation)
    falling = value * (1 - saturation * fraction)
    rising = value * (1 - saturation * (1 - fraction))

    def pick(levels: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The level each sector 0-5 of the hue circle gives this channel."""
        channel = levels[5]
        for index in range(4, -1, -1):
            channel = torch.where(sector == index, levels[index], channel)
        return torch.floor(channel * 255.0)

    return torch.stack(
        [
            pick((value, falling, low, low, rising, value)),
            pick((rising, value, value, falling, low, low)),
            pick((low, low, rising, value, value, falling)),
        ],
        1,
    )


def add_noise(images: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """albumentations' ``add_noise`` on a uint8 image: the noise truncated towards zero, added,
    clipped."""
    return (images + torch.trunc(noise)).clamp(0, 255)


def filter_each(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Correlate each image (N, C, H, W) with its own (N, k, k) kernel, reflect-101 borders
    (OpenCV's default), rounded as OpenCV rounds to uint8."""
    count, channels, height, width = images.shape
    size = kernels.shape[-1]
    padded = F.pad(images.reshape(1, count * channels, height, width), [size // 2] * 4, "reflect")
    weight = kernels.repeat_interleave(channels, 0)[:, None]
    filtered = F.conv2d(padded, weight, groups=count * channels)
    return torch.round(filtered.clamp(0, 255)).view(count, channels, height, width)


def albumentations_reference(seed: int):
    """The albumentations pipeline the workers ran on each crop before the photometric step moved
    to the device, which `PhotometricAugmentation` reproduces in distribution: for the tests and
    the data-loader benchmark that compare the two."""
    import albumentations as A  # only the comparisons need it

    return A.Compose(
        [
            A.RandomBrightnessContrast(brightness_limit=0.25, contrast_limit=0.25, p=0.5),
            A.HueSaturationValue(p=0.3),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.MotionBlur(blur_limit=(3, 5))], p=0.15),
            A.GaussNoise(std_range=(0.02, 0.06), p=0.15),
        ],
        seed=seed,
    )
