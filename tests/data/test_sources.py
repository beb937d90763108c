"""Training on several sources mapped into one skeleton, mixed at their ratios."""

from __future__ import annotations

from collections import Counter

import hydra
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import InstantiationException

import posesuite.config  # noqa: F401  (resolvers)
from posesuite.data.records import DataError
from posesuite.paths import CONF_DIR
from posesuite.skeleton import load_skeleton

COCO = load_skeleton("coco17")
UPPER_BODY = ["nose", "left_eye", "right_eye", "left_shoulder", "right_shoulder"]


def datamodule(root, sources):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                f"data.root={root}",
                "data.dataset.num_train_images=6",
                "data.dataset.num_val_images=2",
                "data.num_workers=0",
                "data.persistent_workers=false",
                "data.batch_size=8",
                "paths.output_dir=/tmp/unused",
            ],
        )
    return hydra.utils.instantiate(cfg.data, sources=sources, _convert_="partial")


def source(train_seed: int, ratio: float, mapping=None) -> dict:
    """A source as written in a data config: a synthetic train split of its own."""
    return {
        "_target_": "posesuite.data.sources.mixing.Source",
        "dataset": {
            "_target_": "posesuite.data.sources.synthetic.SyntheticCocoDataset",
            "_partial_": True,
            "num_train_images": 6,
            "num_val_images": 1,
            "train_seed": train_seed,
            "val_seed": 99,
        },
        "mapping": mapping,
        "ratio": ratio,
    }


def two_sources(upper_body_mapping) -> dict[str, dict]:
    return {"whole": source(0, 0.75), "upper": source(5, 0.25, upper_body_mapping)}


def test_sources_are_mapped_masked_and_mixed_at_their_ratios(tmp_path):
    data = datamodule(tmp_path, two_sources({name: name for name in UPPER_BODY}))
    data.setup("fit")
    whole, upper = data.train_set.datasets
    assert len(data.train_set) == len(whole) + len(upper) > 0
    upper_mask = np.isin(np.arange(17), [COCO.index(n) for n in UPPER_BODY])
    for record in upper.records:
        np.testing.assert_array_equal(record.keypoint_mask, upper_mask)
        assert (record.keypoints[:, ~upper_mask] == 0).all()
        assert (record.keypoints[:, upper_mask, 2] > 0).any()
    loader = data.train_dataloader()
    sources = Counter()
    for batch in loader:
        mask = batch["keypoint_mask"]
        weight = batch["keypoint_weight"][:, 0]  # the one frame of each sample
        assert mask.shape == weight.shape
        assert (weight[~mask] == 0).all()  # masked joints are never trained
        sources.update("upper" if not row.all() else "whole" for row in mask)
    drawn = len(loader.sampler)
    assert drawn == len(data.train_set)
    # Exact shares of the epoch (up to rounding), whatever the sources' sizes.
    assert abs(sources["upper"] - 0.25 * drawn) <= 1 and abs(sources["whole"] - 0.75 * drawn) <= 1


def test_a_wrong_mapping_fails_when_the_data_module_is_built(tmp_path):
    # Hydra wraps the DataError of the constructor, keeping its message.
    with pytest.raises(
        (DataError, InstantiationException), match=r"data source 'upper'.*'left_toe'"
    ):
        datamodule(tmp_path, two_sources({"left_toe": "nose"}))
