"""Shared fixtures. Real samples live beside the clone in ../shared/data/real (never copied in);
the evaluation tests also run on a tiny COCO-format dataset the synthetic generator writes, so a
user's clone, without the real samples, checks them too."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from posesuite.data.sources.synthetic import SyntheticSpec, ensure_synthetic_coco
from posesuite.paths import REPO_ROOT

REAL_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The folder of real annotated samples; tests that need it skip where it is absent."""
    if not REAL_DATA_DIR.is_dir():
        pytest.skip(
            f"real samples not found at {REAL_DATA_DIR} (only present in the dev workspace)"
        )
    return REAL_DATA_DIR


@dataclass(frozen=True)
class CocoFiles:
    """A COCO-format split: ground truth, images, and a detector's boxes for it."""

    annotations: Path
    images: Path
    detections: Path


@pytest.fixture(scope="session")
def synthetic_coco(tmp_path_factory) -> CocoFiles:
    """Six synthetic 640x480 images (12 people, of medium and large COCO sizes) in COCO format,
    with simulated detections."""
    spec = SyntheticSpec(num_train_images=1, num_val_images=6, image_width=640, image_height=480)
    paths = ensure_synthetic_coco(tmp_path_factory.mktemp("synthetic_coco"), spec)
    return CocoFiles(paths.val_annotations, paths.val_images, paths.val_detections)


@pytest.fixture(scope="module", params=["real", "synthetic"])
def coco_files(request) -> CocoFiles:
    """Each evaluation test twice: on the real COCO samples (skipped where absent) and on the
    synthetic ones."""
    if request.param == "synthetic":
        return request.getfixturevalue("synthetic_coco")
    coco_dir = request.getfixturevalue("real_data_dir") / "coco"
    return CocoFiles(coco_dir / "test_coco.json", coco_dir, coco_dir / "test_coco_det_AP_H_56.json")
