"""Truncated and corrupt images are skipped, counted and named (path and image id), not trained on
with OpenCV's grey fill."""

from __future__ import annotations

import logging
import shutil

import cv2
import numpy as np
import pytest

from posesuite.data.datamodule import TopDownDataset, collate_skipping
from posesuite.data.decoding import read_image
from posesuite.data.sources.coco import read_coco_keypoints
from posesuite.data.transforms import TopDownTransform
from posesuite.skeleton import load_skeleton


@pytest.fixture
def jpeg_bytes() -> bytes:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    ok, encoded = cv2.imencode(".jpg", image)
    assert ok
    return encoded.tobytes()


@pytest.mark.parametrize("reduction", [1, 2])
def test_a_truncated_jpeg_is_unreadable(tmp_path, jpeg_bytes, reduction):
    path = tmp_path / "cut.jpg"
    path.write_bytes(jpeg_bytes[: len(jpeg_bytes) * 2 // 3])
    # OpenCV alone decodes it, the missing part grey: the bug this guards against
    assert cv2.imread(str(path)) is not None
    assert read_image(str(path), reduction) is None


def test_complete_jpegs_decode_also_with_trailing_padding(tmp_path, jpeg_bytes):
    plain, padded = tmp_path / "plain.jpg", tmp_path / "padded.jpg"
    plain.write_bytes(jpeg_bytes)
    padded.write_bytes(jpeg_bytes + b"\x00" * 16)
    expected = cv2.cvtColor(cv2.imread(str(plain)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(read_image(str(plain)), expected)
    np.testing.assert_array_equal(read_image(str(padded)), expected)


def test_corrupt_and_missing_files_are_unreadable(tmp_path):
    (tmp_path / "noise.jpg").write_bytes(b"\xff\xd8 not really a jpeg \xff\xd9")
    assert read_image(str(tmp_path / "noise.jpg")) is None
    assert read_image(str(tmp_path / "absent.jpg")) is None


def test_a_truncated_image_is_skipped_counted_and_named(synthetic_coco, tmp_path, caplog):
    images = tmp_path / "images"
    shutil.copytree(synthetic_coco.images, images)
    records = read_coco_keypoints(synthetic_coco.annotations, images, 17)
    broken = records[0]
    data = (images / broken.image_path.rsplit("/", 1)[-1]).read_bytes()
    (images / broken.image_path.rsplit("/", 1)[-1]).write_bytes(data[: len(data) // 2])
    transform = TopDownTransform(load_skeleton("coco17"), input_size=(96, 128))
    dataset = TopDownDataset(records, transform)
    same_image = [i for i, r in enumerate(records) if r.image_id == broken.image_id]
    with caplog.at_level(logging.WARNING):
        batch = collate_skipping([dataset[i] for i in range(len(records))])
    assert batch["num_skipped"] == len(same_image) > 0
    assert len(batch["image"]) == len(records) - len(same_image)
    assert f"{broken.image_path} (image id {broken.image_id})" in caplog.text
