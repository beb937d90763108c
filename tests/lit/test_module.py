"""The evaluation path of the LightningModule, checked with oracles instead of a trained network."""

from __future__ import annotations

import pytest
import torch

from posesuite.codecs.heatmap import HeatmapCodec
from posesuite.data.datamodule import TopDownDataset, collate_skipping
from posesuite.data.geometry import crop_to_image_points
from posesuite.data.sources.coco import read_coco_keypoints
from posesuite.data.transforms import TopDownTransform
from posesuite.metrics.coco import COCOKeypointAP
from posesuite.postprocess.pipeline import PostProcess
from posesuite.skeleton import load_skeleton

SKELETON = load_skeleton("coco17")


def test_oracle_heatmaps_through_the_evaluation_path_give_ap_1(real_data_dir):
    """GT -> crop -> heatmaps -> decode -> inverse affine -> rescoring/NMS -> COCOeval: AP 1.0."""
    coco_dir = real_data_dir / "coco"
    ann_file = coco_dir / "test_coco.json"
    records = read_coco_keypoints(ann_file, coco_dir, 17)
    dataset = TopDownDataset(records, TopDownTransform(SKELETON, (192, 256)))
    batch = collate_skipping([dataset[i] for i in range(len(dataset))])
    # No smoothing: on clean Gaussians the Taylor step is then exact even at the heatmap border,
    # so what remains is the geometry (DARK's smoothing biases peaks within its radius of the
    # border, as in the reference method).
    codec = HeatmapCodec((192, 256), (48, 64), sigma=2.0, refine="dark", blur_kernel=1)
    heatmaps = codec.encode_keypoints(batch["keypoints"], batch["keypoint_weight"])["heatmaps"]
    crop_points, scores = codec.decode_heatmaps(heatmaps)
    image_points = crop_to_image_points(crop_points, batch["affine"])
    labelled = torch.stack([torch.from_numpy(r.keypoints[:, 2] > 0) for r in records])
    inside = batch["keypoint_weight"] > 0
    gt = torch.stack([torch.from_numpy(r.keypoints[:, :2]) for r in records])
    assert (image_points - gt)[inside].abs().max() < 0.1  # sub-pixel after the full round trip
    assert inside.sum() == labelled.sum()  # the padded crop holds every labelled joint
    metric = COCOKeypointAP(ann_file, SKELETON)
    metric.update(
        sample_ids=batch["sample_id"],
        image_ids=batch["image_id"],
        keypoints=torch.cat([image_points, scores.unsqueeze(-1)], dim=-1),
        box_scores=batch["box_score"],
        areas=batch["area"],
        boxes=batch["box"],
    )
    stats = metric.evaluate(PostProcess().bind(SKELETON.sigmas.tolist())(metric.people()))
    assert stats["AP"] == pytest.approx(1.0) and stats["AR"] == pytest.approx(1.0)


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
        "image": torch.zeros(1, 3, 64, 48, dtype=torch.uint8),
        "keypoints": torch.zeros(1, 17, 2),
        "keypoint_weight": torch.ones(1, 17),
        "affine": torch.eye(2, 3)[None],
    }
    outputs = module(batch["image"])
    message = r"12x16 .*model\.heatmap_size is \[24, 32\]"
    with pytest.raises(ValueError, match=message):
        module.codec.encode(batch, outputs)  # training
    with pytest.raises(ValueError, match=message):
        module.predict_poses(batch)  # evaluation
