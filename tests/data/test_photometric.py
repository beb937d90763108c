"""The batch photometric augmentation against the albumentations pipeline it replaces: each step
pixel for pixel at fixed parameters, the whole pipeline in distribution over thousands of crops,
and that only training batches get it."""

from __future__ import annotations

import random

import albucore
import cv2
import lightning as L
import numpy as np
import pytest
import torch
from albumentations.augmentations.blur import functional as blur_functional
from albumentations.augmentations.pixel import functional as pixel_functional
from torch.utils.data import DataLoader

from posesuite.data.datamodule import PoseDataModule
from posesuite.data.photometric import (
    PhotometricAugmentation,
    add_noise,
    adjust_brightness_contrast,
    albumentations_reference,
    filter_each,
    gaussian_kernels,
    motion_kernels,
    shift_hue_saturation_value,
)

NUM_CROPS = 3000
# Largest two-sample Kolmogorov-Smirnov distance between the old and the new pipeline's
# per-crop statistics over NUM_CROPS crops each. Measured over seeds 0-4: two albumentations
# runs with different seeds differ by up to 0.038, the new pipeline and albumentations by up to
# 0.039 (0.013-0.031 per statistic); the 0.1% critical value for n = m = 3000 is
# 1.95 sqrt(2 / 3000) = 0.050.
KS_TOLERANCE = 0.050


def fixed_crops(count: int = 4, size: tuple[int, int] = (48, 64)) -> list[np.ndarray]:
    """Colourful RGB crops with edges, gradients and texture (a blur and noise can be seen)."""
    rng = np.random.default_rng(123)
    width, height = size
    crops = []
    for _ in range(count):
        ys, xs = np.mgrid[:height, :width]
        base = np.stack(
            [xs * 255 / width, ys * 255 / height, 128 + 60 * np.sin(xs / 5.0 + ys / 7.0)], -1
        )
        crop = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        for _ in range(6):
            centre = tuple(int(v) for v in rng.integers(0, [width, height]))
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            cv2.circle(crop, centre, int(rng.integers(3, 12)), colour, -1)
        crops.append(crop)
    return crops


def crop_statistics(before: np.ndarray, after: np.ndarray) -> dict[str, float]:
    """What each step changes: mean brightness and contrast, the mean of each channel, hue and
    saturation, and the high-frequency energy (down for a blur, up for noise)."""
    x, y = before.astype(np.float64), after.astype(np.float64)
    hsv_x = cv2.cvtColor(before, cv2.COLOR_RGB2HSV).astype(np.float64)
    hsv_y = cv2.cvtColor(after, cv2.COLOR_RGB2HSV).astype(np.float64)
    coloured = hsv_x[..., 1] > 60  # hue is meaningful where the colour is saturated
    hue_shift = (hsv_y[..., 0] - hsv_x[..., 0] + 90) % 180 - 90  # circular, 2-degree units

    def detail(image: np.ndarray) -> float:
        grey = image.mean(-1)
        return float(np.abs(cv2.Laplacian(grey, cv2.CV_64F)).mean() / (grey.std() + 1e-6))

    return {
        "brightness": y.mean() - x.mean(),
        "contrast": y.std() / x.std(),
        "red": y[..., 0].mean() - x[..., 0].mean(),
        "green": y[..., 1].mean() - x[..., 1].mean(),
        "blue": y[..., 2].mean() - x[..., 2].mean(),
        "hue": float(np.median(hue_shift[coloured])),
        "saturation": (hsv_y[..., 1] - hsv_x[..., 1]).mean(),
        "detail": detail(after) / detail(before),
        "unchanged": float(np.array_equal(before, after)),
    }


def statistics_of(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    rows = [crop_statistics(before, after) for before, after in pairs]
    return {key: np.array([row[key] for row in rows]) for key in rows[0]}


def albumentations_statistics(seed: int) -> dict[str, np.ndarray]:
    pipeline, crops = albumentations_reference(seed), fixed_crops()
    pairs = []
    for index in range(NUM_CROPS):
        crop = crops[index % len(crops)]
        pairs.append((crop, pipeline(image=crop)["image"]))
    return statistics_of(pairs)


def batch_statistics(seed: int) -> dict[str, np.ndarray]:
    augment, crops = PhotometricAugmentation(), fixed_crops()
    generator = torch.Generator().manual_seed(seed)
    images = torch.from_numpy(np.stack(crops * (NUM_CROPS // len(crops)))).permute(0, 3, 1, 2)
    after = augment(images, generator=generator).permute(0, 2, 3, 1).numpy()
    return statistics_of([(crops[i % len(crops)], after[i]) for i in range(NUM_CROPS)])


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two CDFs."""
    values = np.concatenate([a, b])
    cdf_a = np.searchsorted(np.sort(a), values, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), values, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


@pytest.fixture(scope="module")
def old_statistics() -> dict[str, np.ndarray]:
    return albumentations_statistics(seed=0)


def test_batch_augmentation_matches_albumentations_in_distribution(old_statistics):
    new = batch_statistics(seed=0)
    distances = {key: ks_distance(old_statistics[key], new[key]) for key in new}
    assert max(distances.values()) < KS_TOLERANCE, distances
    # About a quarter of the crops pass through untouched: 0.5 x 0.7 x 0.85 x 0.85 = 0.253.
    untouched = new["unchanged"].mean()
    assert abs(untouched - 0.253) < 4 * np.sqrt(0.253 * 0.747 / NUM_CROPS), untouched


def test_brightness_contrast_equals_albumentations_pixel_for_pixel():
    crop = fixed_crops(1)[0]
    images = torch.from_numpy(crop).permute(2, 0, 1)[None].float()
    for alpha, beta in ((1.2, 30.0), (0.8, -40.5), (1.05, 3.7)):
        expected = albucore.multiply_add(crop, alpha, beta)
        found = adjust_brightness_contrast(images, torch.tensor([alpha]), torch.tensor([beta]))
        np.testing.assert_array_equal(found[0].permute(1, 2, 0).numpy(), expected)


def test_noise_is_added_as_albumentations_adds_it():
    crop = fixed_crops(1)[0]
    noise = np.random.default_rng(0).normal(0, 10, crop.shape)
    expected = pixel_functional.add_noise(crop, noise)
    found = add_noise(torch.from_numpy(crop).double(), torch.from_numpy(noise))
    np.testing.assert_array_equal(found.numpy(), expected)


def test_hue_saturation_value_equals_albumentations():
    crop = fixed_crops(1, (96, 128))[0]
    images = torch.from_numpy(crop).permute(2, 0, 1)[None].float()
    for shifts in ((15.3, -25.7, 12.2), (-19.9, 29.0, -18.5), (3.0, 0.0, 0.0)):
        expected = pixel_functional.shift_hsv(crop, *shifts).astype(int)
        found = shift_hue_saturation_value(images, *(torch.tensor([v]) for v in shifts))
        difference = np.abs(found[0].permute(1, 2, 0).numpy() - expected)
        # OpenCV's and torch's float32 hue arithmetic can differ by one level in a pixel.
        assert difference.max() <= 1 and (difference > 0).mean() < 1e-3


def test_blur_kernels_and_filtering_equal_albumentations():
    crop = fixed_crops(1)[0]
    images = torch.from_numpy(crop).permute(2, 0, 1)[None].float()
    for drawn_size, sigma in ((3, 0.7), (4, 1.2), (5, 2.5)):
        expected = pixel_functional.separable_convolve(
            crop, blur_functional.create_gaussian_kernel_1d(sigma, drawn_size)
        )
        size = drawn_size + (drawn_size % 2 == 0)  # albumentations makes an even size odd
        found = filter_each(images, gaussian_kernels(torch.tensor([size]), torch.tensor([sigma])))
        difference = np.abs(found[0].permute(1, 2, 0).numpy() - expected.astype(int))
        assert difference.max() <= 1 and (difference > 0).mean() < 1e-3

    class Draws(random.Random):
        """Hands out the given U(0, 1) draws for albumentations' line shift."""

        def __init__(self, draws: list[float]) -> None:
            super().__init__()
            self.draws = list(draws)

        def uniform(self, low: float, high: float) -> float:
            return low + (high - low) * self.draws.pop(0)

    rng = np.random.default_rng(0)
    for _ in range(300):
        size, angle, direction = int(rng.choice([3, 5])), rng.uniform(0, 360), rng.uniform(-1, 1)
        draws = rng.uniform(0, 1, 2)
        expected = blur_functional.create_motion_kernel(size, angle, direction, True, Draws(draws))
        shift = torch.tensor((2 * draws - 1) * (size // 2) / 2)[None].float()
        found = motion_kernels(
            torch.tensor([size]), torch.tensor([angle]), torch.tensor([direction]), shift
        )[0].numpy()
        pad = (5 - size) // 2
        np.testing.assert_allclose(
            found[pad : pad + size, pad : pad + size], expected / expected.sum(), atol=1e-6
        )
    expected = pixel_functional.convolve(crop, found)
    found_image = filter_each(images, torch.from_numpy(found)[None])
    np.testing.assert_array_equal(found_image[0].permute(1, 2, 0).numpy(), expected)


def test_seeded_and_shape_preserving():
    images = torch.from_numpy(np.stack(fixed_crops())).permute(0, 3, 1, 2)
    augment = PhotometricAugmentation()
    first = augment(images, generator=torch.Generator().manual_seed(7))
    again = augment(images, generator=torch.Generator().manual_seed(7))
    assert first.dtype == torch.uint8 and first.shape == images.shape
    torch.testing.assert_close(first, again)
    torch.manual_seed(3)
    global_first = augment(images)
    torch.manual_seed(3)
    torch.testing.assert_close(global_first, augment(images))  # torch's default generator

    clips = images[None].expand(2, -1, -1, -1, -1).contiguous()  # (2, 4 frames, 3, H, W)
    out = PhotometricAugmentation(noise_prob=0.0)(clips, torch.Generator().manual_seed(1))
    assert out.shape == clips.shape
    # One draw per clip: identical frames stay identical across the clip.
    frames = PhotometricAugmentation(noise_prob=0.0)(
        images[:1].expand(3, -1, -1, -1)[None].contiguous(), torch.Generator().manual_seed(2)
    )
    assert (frames[0, 0] == frames[0, 1]).all() and (frames[0, 1] == frames[0, 2]).all()


class ConstantBatches(PoseDataModule):
    """PoseDataModule's batch hooks over in-memory batches (no dataset files)."""

    def __init__(self, images: torch.Tensor) -> None:
        L.LightningDataModule.__init__(self)
        self.images = images
        self.photometric = PhotometricAugmentation(
            brightness_contrast_prob=1.0, hue_saturation_value_prob=1.0
        )

    def prepare_data(self) -> None:
        pass

    def setup(self, stage: str | None = None) -> None:
        pass

    def train_dataloader(self) -> DataLoader:
        return DataLoader([{"image": self.images, "num_skipped": 0}] * 3, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        failed = {"num_skipped": 4}  # every sample of this batch failed to decode
        return DataLoader([{"image": self.images, "num_skipped": 0}, failed], batch_size=None)


class RecordingModule(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: dict[str, list[torch.Tensor | None]] = {"train": [], "val": []}

    def training_step(self, batch, batch_idx):
        self.seen["train"].append(batch["image"].clone())
        return self.weight * 0 + batch["image"].float().mean() * 0

    def validation_step(self, batch, batch_idx):
        self.seen["val"].append(batch.get("image"))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_applies_it_to_training_batches_only():
    images = torch.from_numpy(np.stack(fixed_crops())).permute(0, 3, 1, 2).contiguous()
    datamodule, module = ConstantBatches(images), RecordingModule()
    trainer = L.Trainer(
        max_steps=3,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=2,
        val_check_interval=2,
        limit_val_batches=2,
    )
    trainer.fit(module, datamodule=datamodule)
    assert len(module.seen["train"]) == 3
    assert all(not torch.equal(seen, images) for seen in module.seen["train"])
    # Sanity check and validation batches reach the module untouched, failed ones without image.
    assert len(module.seen["val"]) >= 4
    assert all(seen is None or torch.equal(seen, images) for seen in module.seen["val"])
    assert any(seen is None for seen in module.seen["val"])
