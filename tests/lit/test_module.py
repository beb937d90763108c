"""The evaluation path of the LightningModule, checked with oracles instead of a trained network."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from oracle import validate_with_oracle

from posesuite.codecs.heatmap import HeatmapCodec
from posesuite.data.batch import flatten_time
from posesuite.data.datamodule import PoseDataModule, TopDownDataset, collate_skipping
from posesuite.data.sources.coco import CocoDataset, read_coco_keypoints
from posesuite.data.transforms import TopDownTransform
from posesuite.metrics.coco import COCOKeypointAP
from posesuite.skeleton import load_skeleton

SKELETON = load_skeleton("coco17")


def test_oracle_heatmaps_through_validation_step_give_ap_1(coco_files, tmp_path):
    """Ground truth -> dataset crop -> heatmaps (and the mirrored crop's, for the flip test) ->
    `validation_step` (flip test, decoding, inverse affine) -> rescoring and NMS -> COCOeval:
    AP 1.0, on the real COCO samples and on synthetic ones."""
    input_size = (192, 256)
    # No smoothing: on clean Gaussians the Taylor step is then exact even at the heatmap border,
    # so what remains is the geometry.
    codec = HeatmapCodec(input_size, (48, 64), sigma=2.0, refine="dark", blur_kernel=1)
    files = partial(
        CocoDataset,
        train_annotations=str(coco_files.annotations),
        train_images=str(coco_files.images),
        val_annotations=str(coco_files.annotations),
        val_images=str(coco_files.images),
    )
    datamodule = PoseDataModule(
        dataset=files,
        root=str(tmp_path),
        skeleton=SKELETON,
        train_transform=partial(TopDownTransform, input_size=input_size),
        val_transform=partial(TopDownTransform, input_size=input_size),
        val_batch_size=5,
        num_workers=0,
    )
    values, module = validate_with_oracle(datamodule, codec, SKELETON, partial(COCOKeypointAP))
    assert values["val/AP"] == pytest.approx(1.0) and values["val/AR"] == pytest.approx(1.0)
    # Sub-pixel after the full round trip, for every labelled joint (the padded crop holds them).
    predicted = module.last_evaluation.raw
    records = datamodule.val_set.records
    assert len(predicted) == len(records)
    errors = []
    for record in records:
        corners = torch.tensor([*record.bbox[:2], *(record.bbox[:2] + record.bbox[2:])])
        same = (predicted.image_ids == record.image_id) & torch.isclose(
            predicted.boxes.double(), corners.double(), atol=1e-3
        ).all(dim=1)
        (index,) = torch.nonzero(same).flatten().tolist()
        labelled = record.keypoints[0, :, 2] > 0
        points = predicted.keypoints[index, :, :2].double().numpy()
        errors.append(abs(points[labelled] - record.keypoints[0, labelled, :2]).max())
    assert max(errors) < 0.1


def test_corrupt_images_are_skipped_and_counted(real_data_dir, tmp_path, caplog):
    coco_dir = real_data_dir / "coco"
    records = read_coco_keypoints(coco_dir / "test_coco.json", coco_dir, 17)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    bad = records[0].__class__(**{**records[0].__dict__, "frames": (str(broken),)})
    dataset = TopDownDataset([bad, *records[1:3]], TopDownTransform(SKELETON, (192, 256)))
    with caplog.at_level("WARNING"):
        batch = collate_skipping([dataset[i] for i in range(3)])
    assert batch["num_skipped"] == 1 and batch["image"].shape[0] == 2
    assert str(broken) in caplog.text and f"image id {bad.image_id}" in caplog.text
    assert collate_skipping([None, None]) == {"num_skipped": 2}


def test_heatmap_size_that_the_network_does_not_give_is_named():
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    import posesuite.config  # noqa: F401  (resolvers)
    from posesuite.paths import CONF_DIR

    # The network gives 12x16 maps (stride 4) for 48x64 crops, not the configured 24x32.
    overrides = ["model.input_size=[48,64]", "model.heatmap_size=[24,32]"]
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        cfg = compose("config", overrides=overrides)
    module = instantiate(cfg.model.module, _convert_="partial")
    batch = {
        "image": torch.zeros(1, 1, 3, 64, 48, dtype=torch.uint8),
        "keypoints": torch.zeros(1, 1, 17, 2),
        "keypoint_weight": torch.ones(1, 1, 17),
        "affine": torch.eye(2, 3)[None],
    }
    outputs = module(batch["image"])
    message = r"12x16 .*model\.heatmap_size is \[24, 32\]"
    with pytest.raises(ValueError, match=message):
        module.codec.encode(flatten_time(batch), outputs)  # training
    with pytest.raises(ValueError, match=message):
        module.predict_poses(batch)  # evaluation
