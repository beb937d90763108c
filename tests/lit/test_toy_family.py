"""A new model family from config alone: the toy coordinate-regression family of
tests/lit/toy_regression.py trains and is evaluated by the one LightningModule, data pipeline and
task code, with no edit to any of them (README, "Adding a model family")."""

from __future__ import annotations

import json

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import posesuite.config  # noqa: F401  (resolvers)
from posesuite.paths import CONF_DIR
from posesuite.tasks.train import train

TOY_FAMILY = [
    "model.name=toy_regression",
    "model.module.network.head._target_=toy_regression.RegressionHead",
    "~model.module.network.head.deconv_channels",
    "model.module.network.backbone.out_indices=[4]",
    "model.module.codec._target_=toy_regression.RegressionCodec",
    "~model.module.codec.heatmap_size",
    "~model.module.codec.sigma",
    "~model.module.codec.refine",
    "~model.module.codec.blur_kernel",
    "~model.module.codec.out_of_crop",
    "model.module.loss._target_=toy_regression.WeightedL1",
    "~model.module.loss.joint_weights",
]


def test_a_regression_family_trains_and_evaluates_from_config_alone(tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                *TOY_FAMILY,
                f"paths.output_dir={tmp_path / 'run'}",
                f"data.root={tmp_path / 'data'}",
                "data.dataset.num_train_images=8",
                "data.dataset.num_val_images=4",
                "data.num_workers=0",
                "data.persistent_workers=false",
                "data.batch_size=4",
                "trainer.max_epochs=2",
                "trainer.log_every_n_steps=1",
                "callbacks=none",
                "logger=csv",
                "print_config=false",
            ],
        )
    value = train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert value == metrics["AP"] and 0.0 <= value <= 1.0
    predictions = json.loads((tmp_path / "run" / "predictions_val.json").read_text())
    assert predictions and all(len(p["keypoints"]) == 17 * 3 for p in predictions)
    losses = (tmp_path / "run" / "csv" / "metrics.csv").read_text()
    assert "train/loss" in losses


def test_the_toy_flip_test_mirrors_coordinates_and_swaps_sides():
    from toy_regression import RegressionCodec

    from posesuite.skeleton import load_skeleton

    flip_index = load_skeleton("coco17").flip_index
    codec = RegressionCodec(input_size=(96, 128))
    coordinates = torch.rand(2, 17, 2)
    logits = torch.randn(2, 17)
    outputs = {"coordinates": coordinates, "logits": logits}
    # What a network equivariant to mirroring gives on the mirrored crop.
    mirrored = coordinates[:, flip_index].clone()
    mirrored[..., 0] = 1 - mirrored[..., 0]
    flipped_outputs = {"coordinates": mirrored, "logits": logits[:, flip_index]}
    merged, scores = codec.flip_test(outputs, flipped_outputs, {}, flip_index)
    expected, expected_scores = codec.decode(outputs, {})
    torch.testing.assert_close(merged, expected)
    torch.testing.assert_close(scores, expected_scores)
