"""UniPose: size against the released model, output shapes for both output switches, WASP's
growing field of view, the pooling switch, configs that plug into the one LightningModule, and a
one-batch learning check."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import posesuite.config  # noqa: F401  (resolvers)
from posesuite.data.batch import flatten_time
from posesuite.models.backbones import TimmBackbone
from posesuite.models.unipose import AtrousPooling, UniPose
from posesuite.paths import CONF_DIR

RELEASED_PARAMS = 47_547_313  # github.com/bmartacho/UniPose, K = 16 (MPII)
UNUSED_RELEASED_DECODER_CONV = 2048 * 256 + 2 * 256  # built, never called: conv2 + bn2
MPII = "unipose_res101_mpii-368x368"
SYNTHETIC = "unipose_res18_synthetic-96x96"


def compose_config(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=["paths.output_dir=/tmp/unused", *overrides])


def unipose_r101(num_keypoints: int = 16, **kwargs) -> UniPose:
    backbone = TimmBackbone("resnet101", out_indices=(1, 4), output_stride=16, multi_grid=(1, 2, 4))
    return UniPose(backbone, num_keypoints, **kwargs)


def count(network: torch.nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


def test_the_released_parameter_count_within_one_and_a_half_percent():
    with torch.device("meta"):
        network = unipose_r101()
    params = count(network)
    assert params == pytest.approx(RELEASED_PARAMS, rel=0.015)
    # Exactly the released model without the decoder conv it builds but never uses.
    assert params == RELEASED_PARAMS - UNUSED_RELEASED_DECODER_CONV
    assert network.decoder.final.out_channels == 17  # the background map included


def test_the_mpii_experiment_builds_the_released_size():
    cfg = compose_config([f"experiment={MPII}"])
    assert cfg.skeleton.name == "mpii16" and cfg.metric._target_.endswith("PCKhMetric")
    assert cfg.data.dataset._target_.endswith("MpiiDataset") and cfg.data.batch_size == 8
    assert list(cfg.model.input_size) == [368, 368] and list(cfg.model.heatmap_size) == [46, 46]
    with torch.device("meta"):
        network = hydra.utils.instantiate(cfg.model.module.network)
    assert count(network) == RELEASED_PARAMS - UNUSED_RELEASED_DECODER_CONV


def test_pooling_variants_and_the_papers_rates_change_the_size_as_expected():
    with torch.device("meta"):
        sizes = {
            name: count(unipose_r101(**kwargs))
            for name, kwargs in {
                "wasp": {},
                "paper_rates": {"rates": (6, 12, 18, 24)},
                "own_branch_convs": {"shared_branch_convs": False},
                "aspp": {"pooling": "aspp"},
                "none": {"pooling": "none"},
            }.items()
        }
    conv3x3, conv1x1 = 256 * 256 * 9, 256 * 256
    # One more waterfall branch: a 3x3 conv + BN and 256 more channels into the fusion conv.
    assert sizes["paper_rates"] - sizes["wasp"] == conv3x3 + 512 + 256 * 256
    # Two 1x1 convs per branch (4 branches) instead of one shared conv.
    assert sizes["own_branch_convs"] - sizes["wasp"] == 7 * conv1x1
    # ASPP's atrous convs read the 2048-channel map; it has no branch 1x1 convs.
    assert sizes["aspp"] - sizes["wasp"] == 3 * (2048 - 256) * 256 * 9 - conv1x1
    assert sizes["none"] < sizes["wasp"]
    with pytest.raises(ValueError, match="pooling"):
        unipose_r101(pooling="waterfall")


def test_multi_grid_dilates_the_last_stage_as_released():
    backbone = TimmBackbone("resnet101", out_indices=(1, 4), output_stride=16, multi_grid=(1, 2, 4))
    assert [block.conv2.dilation for block in backbone.body.layer4] == [(2, 2), (4, 4), (8, 8)]
    assert backbone.strides == [4, 16]
    with pytest.raises(ValueError, match="one entry per block"):
        TimmBackbone("resnet18", out_indices=(1, 4), output_stride=16, multi_grid=(1, 2, 4))


def test_output_shape_at_368():
    torch.manual_seed(0)
    network = unipose_r101().eval()
    with torch.no_grad():
        outputs = network(torch.zeros(1, 3, 368, 368))
    assert set(outputs) == {"heatmaps"} and outputs["heatmaps"].shape == (1, 17, 46, 46)


@pytest.mark.parametrize(("upsample", "size"), [(False, 12), (True, 96)])
def test_output_shapes_at_the_cpu_size_for_both_output_switches(upsample, size):
    cfg = compose_config(
        [f"experiment={SYNTHETIC}", f"model.module.network.upsample_to_input={upsample}"]
    )
    torch.manual_seed(0)
    network = hydra.utils.instantiate(cfg.model.module.network).eval()
    with torch.no_grad():
        heatmaps = network(torch.zeros(2, 3, 96, 96))["heatmaps"]
    assert heatmaps.shape == (2, 18, size, size)  # coco17 + the background


def branch_footprints(pooling: AtrousPooling, size: int = 97) -> list[tuple[int, int]]:
    """Per branch (not the image-pooling one): the width and the number of the input pixels
    whose gradient reaches the branch output's centre pixel."""
    # Eval mode: BN is per-pixel affine (batch statistics would couple every pixel); a large BN
    # bias keeps every ReLU open, so the footprint is the convs' sampling pattern itself.
    pooling.eval()
    for module in pooling.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.constant_(module.bias, 10.0)
    x = torch.rand(1, pooling.reduce[0].in_channels, size, size, dtype=torch.float64)
    x.requires_grad_(True)
    footprints = []
    for branch in pooling.branch_outputs(x)[:-1]:
        centre = branch[0, :, size // 2, size // 2].sum()
        (gradient,) = torch.autograd.grad(centre, x, retain_graph=True)
        reached = gradient.abs().sum(dim=(0, 1)) > 0
        columns = reached.any(dim=0).nonzero()
        footprints.append((int(columns.max() - columns.min() + 1), int(reached.sum())))
    return footprints


def test_wasp_field_of_view_grows_with_each_branch():
    torch.manual_seed(0)
    wasp = AtrousPooling(8, rates=(18, 12, 6), channels=8).double()
    widths, pixels = zip(*branch_footprints(wasp), strict=True)
    # 1x1, then 2 x 18, 2 x 12 and 2 x 6 more pixels of reach: 1, 37, 61, 73 wide.
    assert widths == (1, 37, 61, 73)
    # Per axis 1, 3, 9, 13 taps: 18 = 12 + 6, so the third cascade adds fewer new positions.
    assert pixels == (1, 9, 81, 169)
    # ASPP's branches each see their own rate only: no growth along the rates.
    aspp = AtrousPooling(8, rates=(18, 12, 6), channels=8, waterfall=False).double()
    assert [width for width, _ in branch_footprints(aspp)] == [1, 37, 25, 13]


def test_the_module_trains_and_predicts_with_unipose_unchanged():
    """The LightningModule's own steps at the CPU size: targets of K + 1 maps, loss, backward;
    then the evaluation path with the flip test."""
    cfg = compose_config([f"experiment={SYNTHETIC}"])
    torch.manual_seed(0)
    module = hydra.utils.instantiate(cfg.model.module, _convert_="partial")
    images = torch.randint(0, 256, (2, 1, 3, 96, 96), dtype=torch.uint8)
    keypoints = torch.rand(2, 17, 2) * 95
    weight = torch.ones(2, 17)
    weight[1, :5] = 0
    module.train()
    outputs = module(images)
    batch = {"keypoints": keypoints, "keypoint_weight": weight, "visibility": 2 * weight.byte()}
    targets = module.codec.encode(batch, outputs)
    assert targets["heatmaps"].shape == (2, 18, 12, 12)
    losses = module.loss(outputs, targets)
    losses["loss"].backward()
    assert module.network.decoder.final.weight.grad.abs().sum() > 0
    module.eval()
    affine = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(2, 2, 3)
    with torch.no_grad():
        poses = module.predict_poses({"image": images}, {"affine": affine})
    assert poses.shape == (2, 17, 3) and torch.isfinite(poses).all()


def one_batch_history(root: Path, seed: int, steps: int = 20) -> list[dict[str, float]]:
    """Adam steps of the CPU-sized experiment on one batch of its own synthetic crops: after
    each, the loss over all maps and the joint maps' part of it (``joints``, the background
    left out), with the joint part of all-zero maps (``joints_zero``)."""
    cfg = compose_config(
        [
            f"experiment={SYNTHETIC}",
            f"data.root={root}",
            "data.dataset.num_train_images=4",
            "data.dataset.num_val_images=1",
            "data.num_workers=0",
            "data.persistent_workers=false",
            "data.batch_size=2",
        ]
    )
    torch.manual_seed(seed)
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="partial")
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    module = hydra.utils.instantiate(cfg.model.module, _convert_="partial")
    optimizer = module.optimizer_factory(params=module.network.parameters())
    module.train()
    history = []
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for _ in range(steps):
            optimizer.zero_grad()
            outputs = module(batch["image"])
            targets = module.codec.encode(flatten_time(batch), outputs)
            losses = module.loss(outputs, targets)
            losses["loss"].backward()
            optimizer.step()
            joints = {"heatmaps": targets["heatmaps"][:, 1:]}
            joints["target_weight"] = targets["target_weight"][:, 1:]
            predicted = {"heatmaps": outputs["heatmaps"][:, 1:].detach()}
            zero = {"heatmaps": torch.zeros_like(predicted["heatmaps"])}
            history.append(
                {
                    "loss": losses["loss"].item(),
                    "joints": module.loss(predicted, joints)["loss"].item(),
                    "joints_zero": module.loss(zero, joints)["loss"].item(),
                }
            )
    finally:
        torch.use_deterministic_algorithms(deterministic)
    return history


def test_a_few_adam_steps_on_one_batch_lower_the_loss(tmp_path):
    """The first loss is about that of all-zero maps (the last conv starts near zero), most of
    it the background's; after 20 steps the total must have halved and the joint maps' error be
    under 0.7x that of empty maps, i.e. they learned peaks, not only the background's level
    (seeds 0 and 1: 0.13x / 0.14x and 0.43x / 0.45x)."""
    history = one_batch_history(tmp_path, seed=0)
    first, last = history[0], history[-1]
    assert last["loss"] < 0.5 * first["loss"], history
    assert last["joints"] < 0.7 * last["joints_zero"], history
