"""RMPE's STN stage in the one LightningModule (posesuite/models/rmpe.py): at the identity theta it
is the plain pipeline; the targets follow theta into the STN frame and the keypoints come back
through the SDTN exactly; the parallel SPPE is a frozen copy made at its step, whose loss reaches
only the STN; centred targets sit at the frame's centre at the configured scale."""

from __future__ import annotations

import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import InstantiationException
from hydra.utils import instantiate

import posesuite.config  # noqa: F401  (resolvers)
from posesuite.data.batch import flatten_time
from posesuite.models.rmpe import centred_keypoints
from posesuite.models.stn import crop_to_frame_points
from posesuite.paths import CONF_DIR

INPUT_SIZE = (96, 128)  # (W, H) of the default CPU model
MAPS = torch.zeros(3, 17, 32, 24)  # the codec checks the maps' size only


def build_module(stn: bool, **stn_overrides):
    overrides = ["paths.output_dir=/tmp/unused"]
    if stn:
        overrides.append("+model/stn@model.module.spatial_transformer=symmetric")
        overrides += [f"model.module.spatial_transformer.{k}={v}" for k, v in stn_overrides.items()]
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    torch.manual_seed(0)
    return instantiate(cfg.model.module, _convert_="partial"), cfg


def toy_batch(batch_size: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    width, height = INPUT_SIZE
    keypoints = torch.rand(batch_size, 1, 17, 2, generator=generator)
    keypoints = keypoints * torch.tensor([0.5 * width, 0.6 * height]) + torch.tensor(
        [0.25 * width, 0.2 * height]
    )
    return {
        "image": torch.randint(0, 256, (batch_size, 1, 3, height, width), generator=generator).to(
            torch.uint8
        ),
        "keypoints": keypoints,
        "keypoint_weight": torch.ones(batch_size, 1, 17),
        "visibility": torch.full((batch_size, 1, 17), 2, dtype=torch.uint8),
        "keypoint_mask": torch.ones(batch_size, 17, dtype=torch.bool),
        "affine": torch.tensor([[0.5, 0.0, -10.0], [0.0, 0.5, -20.0]]).expand(batch_size, 2, 3),
        "image_id": torch.arange(batch_size)[:, None],
    }


def rotation_theta(batch_size: int, degrees: float = 12.0) -> torch.Tensor:
    angle = math.radians(degrees)
    theta = torch.tensor(
        [[0.8 * math.cos(angle), -0.7 * math.sin(angle), 0.06],
         [0.8 * math.sin(angle), 0.7 * math.cos(angle), -0.04]]
    )  # fmt: skip
    return theta.expand(batch_size, 2, 3).clone()


def set_theta(module, theta: torch.Tensor) -> None:
    """Make the STN predict ``theta`` whatever the crop (zero weights, theta as the bias)."""
    regressor = module.spatial_transformer.stn.regressor
    with torch.no_grad():
        regressor.weight.zero_()
        regressor.bias.copy_(theta[0].flatten())


def test_at_the_identity_theta_the_stn_path_is_the_plain_pipeline():
    plain, _ = build_module(stn=False)
    with_stn, _ = build_module(stn=True)
    with_stn.network.load_state_dict(plain.network.state_dict())
    plain.eval(), with_stn.eval()
    plain.flip_test = with_stn.flip_test = False
    batch = toy_batch()
    with torch.no_grad():
        torch.testing.assert_close(
            with_stn.predict_poses(batch), plain.predict_poses(batch), atol=1e-3, rtol=0
        )
        # The flip test merges the two passes' keypoints (each pass has its own theta): the
        # mirrored crop's, mirrored back with left and right swapped.
        with_stn.flip_test = True
        found, _ = with_stn.predict_crop_keypoints(batch)
        frames = flatten_time(batch)
        direct, _ = plain.codec.decode(plain(batch["image"]), frames)
        mirrored, _ = plain.codec.decode(plain(batch["image"].flip(-1)), frames)
        mirrored = mirrored[:, plain.skeleton.flip_index]
        mirrored[..., 0] = INPUT_SIZE[0] - 1 - mirrored[..., 0]
        torch.testing.assert_close(found, 0.5 * (direct + mirrored), atol=1e-3, rtol=0)


def test_keypoints_decoded_in_a_rotated_stn_frame_come_back_through_the_sdtn():
    """Oracle: the codec's targets of the ground truth mapped into the STN frame, decoded and
    sent back through the SDTN, are the ground truth in the loose crop."""
    module, _ = build_module(stn=True)
    frames = flatten_time(toy_batch())
    theta = rotation_theta(3)
    in_frame = crop_to_frame_points(frames["keypoints"], theta, INPUT_SIZE, INPUT_SIZE)
    targets = module.codec.encode({**frames, "keypoints": in_frame}, {"heatmaps": MAPS})
    keypoints, _ = module.decode_through_stn(
        {"heatmaps": targets["heatmaps"], "theta": theta}, None, frames, INPUT_SIZE
    )
    # Where the codec's refinement stencil fits (two map pixels, 8 crop pixels, from the border).
    interior = (in_frame >= 8).all(-1) & (in_frame <= torch.tensor(INPUT_SIZE) - 9).all(-1)
    assert interior.float().mean() > 0.7
    error = (keypoints - frames["keypoints"]).norm(dim=-1)[interior]
    assert error.max() < 0.02


def test_the_sdtn_takes_the_frames_maps_back_to_the_loose_crop():
    """A map peak at frame point f comes back at the crop point A f (the point SDTN); at the
    identity theta the maps are unchanged."""
    module, _ = build_module(stn=True)
    stn = module.spatial_transformer
    frames = flatten_time(toy_batch())
    in_frame = crop_to_frame_points(frames["keypoints"], rotation_theta(3), INPUT_SIZE, INPUT_SIZE)
    maps = module.codec.encode({**frames, "keypoints": in_frame}, {"heatmaps": MAPS})["heatmaps"]
    identity = torch.eye(2, 3).expand(3, 2, 3)
    same = stn.to_crop_maps({"heatmaps": maps, "theta": identity}, identity)["heatmaps"]
    torch.testing.assert_close(same, maps, atol=1e-5, rtol=0)
    back = stn.to_crop_maps({"heatmaps": maps}, rotation_theta(3))["heatmaps"]
    found, _ = module.codec.decode_heatmaps(back)
    interior = (in_frame >= 8).all(-1) & (in_frame <= torch.tensor(INPUT_SIZE) - 9).all(-1)
    interior &= (frames["keypoints"] >= 8).all(-1)
    interior &= (frames["keypoints"] <= torch.tensor(INPUT_SIZE) - 9).all(-1)
    error = (found - frames["keypoints"]).norm(dim=-1)[interior]
    # Bilinear resampling of sigma-0.75 maps moves their peaks by a few tenths of a crop pixel
    # (here median 0.16, at most 0.37); the decoded keypoints use the exact point SDTN instead.
    assert interior.sum() > 20 and error.median() < 0.3 and error.max() < 0.6


def test_the_main_loss_reaches_the_sppe_and_the_stn():
    module, _ = build_module(stn=True, parallel=False)
    module.train()
    frames = flatten_time(toy_batch())
    outputs = module(toy_batch()["image"])
    module.stn_losses(outputs, frames)["loss"].backward()
    assert module.spatial_transformer.stn.regressor.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in module.network.parameters())


def test_the_parallel_sppe_is_frozen_and_its_loss_reaches_only_the_stn():
    module, _ = build_module(stn=True, parallel_from_step=5)
    stn = module.spatial_transformer
    module.train()
    assert not stn.parallel_sppe.training  # frozen batch norm too
    assert not any(p.requires_grad for p in stn.parallel_sppe.parameters())
    optimized = {id(p) for group in module.parameter_groups() for p in group["params"]}
    assert not any(id(p) in optimized for p in stn.parallel_sppe.parameters())
    batch = toy_batch()
    # Before its step it has no weights of its own and no loss.
    stn.refresh_parallel(module.network, step=4)
    assert "stn_images" not in module(batch["image"])
    # At its step it becomes a copy of the SPPE, which later updates leave alone.
    stn.refresh_parallel(module.network, step=5)
    first = next(iter(module.network.state_dict()))
    torch.testing.assert_close(
        stn.parallel_sppe.state_dict()[first], module.network.state_dict()[first]
    )
    set_theta(module, rotation_theta(1))
    outputs = module(batch["image"])
    parallel = stn.parallel_outputs(outputs["stn_images"])
    targets = module.codec.encode(stn.centred(flatten_time(batch), INPUT_SIZE), parallel)
    module.loss(parallel, targets)["loss"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in module.network.parameters())
    assert all(p.grad is None for p in stn.parallel_sppe.parameters())
    assert stn.stn.regressor.weight.grad.abs().sum() > 0
    # Its loss is part of the training loss.
    losses = module.stn_losses(module(batch["image"]), flatten_time(batch))
    assert losses["loss_parallel"] > 0
    torch.testing.assert_close(
        losses["loss"], losses["loss_heatmap"] + stn.parallel_weight * losses["loss_parallel"]
    )
    with torch.no_grad():
        next(module.network.parameters()).add_(1.0)
    assert not torch.equal(
        stn.parallel_sppe.state_dict()[first], module.network.state_dict()[first]
    )
    module.eval()
    assert "stn_images" not in module(batch["image"])  # training only


def test_centred_targets_fill_the_frame_around_the_joints_box():
    keypoints = torch.tensor([[[10.0, 20.0], [30.0, 100.0], [20.0, 60.0], [500.0, 500.0]]])
    labelled = torch.tensor([[True, True, True, False]])
    centred, has_box = centred_keypoints(keypoints, labelled, INPUT_SIZE, padding=1.25)
    assert bool(has_box[0])
    points = centred[0, :3]
    centre = 0.5 * (points.amin(0) + points.amax(0))
    torch.testing.assert_close(centre, torch.tensor([47.5, 63.5]))
    # The box is 20 x 80, taller than the frame's 3:4: its height x 1.25 fills the 128 rows.
    height = points[:, 1].amax() - points[:, 1].amin()
    torch.testing.assert_close(height, torch.tensor(128 / 1.25))
    _, no_box = centred_keypoints(
        keypoints, torch.tensor([[True, False, False, False]]), INPUT_SIZE, 1.25
    )
    assert not bool(no_box[0])


def test_the_loose_crop_padding_comes_with_the_stn():
    _, plain = build_module(stn=False)
    _, with_stn = build_module(stn=True)
    assert plain.data.train_transform.padding == plain.data.val_transform.padding == 1.25
    assert with_stn.data.train_transform.padding == with_stn.data.val_transform.padding == 1.6


def test_a_parallel_checkpoint_without_network_weights_is_named(tmp_path):
    path = tmp_path / "empty.ckpt"
    torch.save({"state_dict": {"other.weight": torch.zeros(1)}}, path)
    with pytest.raises(InstantiationException, match=r"empty\.ckpt holds no network weights"):
        build_module(stn=True, parallel_checkpoint=str(path))


@pytest.mark.parametrize(
    ("row", "stn", "parallel", "train_boxes"),
    [
        ("full", True, True, "pgpg"),
        ("no_sstn", False, None, "pgpg"),
        ("no_parallel", True, False, "pgpg"),
        ("no_pgpg", True, True, "gt"),
        ("jitter", True, True, "jitter"),
    ],
)
def test_each_ablation_row_changes_what_it_names(row, stn, parallel, train_boxes):
    GlobalHydra.instance().clear()
    overrides = [
        "experiment=rmpe_res18_synthetic-128x96",
        f"rmpe_ablation={row}",
        "data.pgpg_file=unused.json",
        "paths.output_dir=/tmp/unused",
    ]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    module = cfg.model.module.spatial_transformer
    assert (module is not None) == stn
    assert cfg.data.train_transform.padding == (1.6 if stn else 1.25)
    if stn:
        assert module.parallel == parallel
    assert cfg.data.train_box_source == train_boxes
    assert (cfg.data.box_source, cfg.model.postprocess.nms) == ("detections", "parametric")


def test_the_stn_trains_at_its_share_of_the_rate():
    module, cfg = build_module(stn=True)
    network, stn = module.parameter_groups()
    assert "lr" not in network and len(network["params"]) == len(list(module.network.parameters()))
    assert stn["lr"] == pytest.approx(cfg.model.module.optimizer.lr * 0.1)
    assert {id(p) for p in stn["params"]} == {
        id(p) for p in module.spatial_transformer.stn.parameters()
    }
