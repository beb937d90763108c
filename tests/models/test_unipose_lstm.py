"""UniPose-LSTM: size against the released model, shapes at 368x368 and at a CPU size, state that
flows forward in time and never backward, the centre map, and the one LightningModule's steps on
clips."""

from __future__ import annotations

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import posesuite.config  # noqa: F401  (resolvers)
from posesuite.data.batch import flatten_time
from posesuite.models.backbones import TimmBackbone
from posesuite.models.unipose import UniPose
from posesuite.models.unipose_lstm import UniPoseLSTM, centre_map
from posesuite.paths import CONF_DIR

# The released UniPose-LSTM (Penn Action, K = 13), "51.8M" in the paper: UniPose's 47,547,313
# with a four-channel first conv (+ 64 x 7 x 7) and 14 instead of 17 maps (- 3 x 257), the two
# cells (6,120 + 16,320) and the convs after them (4,215,950).
RELEASED_PARAMS = 47_547_313 + 64 * 49 - 3 * 257 + 6_120 + 16_320 + 4_215_950
UNUSED_RELEASED_DECODER_CONV = 2048 * 256 + 2 * 256


def compose_config(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=["paths.output_dir=/tmp/unused", *overrides])


def small_network(**kwargs) -> UniPoseLSTM:
    """ResNet-18 at 64x64, narrow: stride-8 maps of 8x8."""
    backbone = TimmBackbone(
        "resnet18", out_indices=(1, 4), output_stride=16, multi_grid=(1, 2), in_chans=4
    )
    options = {"rates": (2, 1), "channels": 16, "centre_sigma": 4.0, "middle_channels": 8}
    return UniPoseLSTM(backbone, 13, (64, 64), middle_kernel=3, **(options | kwargs))


def test_the_released_parameter_count_within_one_and_a_half_percent():
    assert abs(RELEASED_PARAMS - 51.8e6) < 0.05e6  # the paper's figure
    with torch.device("meta"):
        backbone = TimmBackbone(
            "resnet101", out_indices=(1, 4), output_stride=16, multi_grid=(1, 2, 4), in_chans=4
        )
        network = UniPoseLSTM(backbone, 13, (368, 368))
    params = sum(p.numel() for p in network.parameters())
    assert params == pytest.approx(RELEASED_PARAMS, rel=0.015)
    assert params == RELEASED_PARAMS - UNUSED_RELEASED_DECODER_CONV


def test_output_shapes_at_368_by_the_model_config():
    cfg = compose_config(["model=unipose_lstm", "skeleton=coco17"])
    with torch.device("meta"):
        network = hydra.utils.instantiate(cfg.model.module.network)
        heatmaps = network(torch.zeros(2, 3, 3, 368, 368))["heatmaps"]
    assert heatmaps.shape == (6, 18, 46, 46)  # B * T frames, coco17 + the background


def test_output_shapes_at_a_cpu_size_one_map_set_per_frame():
    torch.manual_seed(0)
    network = small_network().eval()
    with torch.no_grad():
        for frames in (1, 3):
            heatmaps = network(torch.rand(2, frames, 3, 64, 64))["heatmaps"]
            assert heatmaps.shape == (2 * frames, 14, 8, 8)


def test_state_flows_forward_in_time_and_never_backward():
    torch.manual_seed(0)
    network = small_network().double().eval()
    clips = torch.rand(1, 4, 3, 64, 64, dtype=torch.float64)
    # Large gate weights so that a change reaches the output clearly above rounding.
    with torch.no_grad():
        for cell in (network.first_cell, network.cell):
            for conv in cell.modules():
                if isinstance(conv, torch.nn.Conv2d):
                    conv.weight.normal_(0, 0.5)
        network.final.weight.normal_(0, 0.5)
        base = network(clips)["heatmaps"].unflatten(0, (1, 4))[0]
        changed_first = clips.clone()
        changed_first[:, 0] = torch.rand(3, 64, 64, dtype=torch.float64)
        after_first = network(changed_first)["heatmaps"].unflatten(0, (1, 4))[0]
        changed_third = clips.clone()
        changed_third[:, 2] = torch.rand(3, 64, 64, dtype=torch.float64)
        after_third = network(changed_third)["heatmaps"].unflatten(0, (1, 4))[0]
    # Frame 0 reaches every later frame through the state ...
    assert all((after_first[t] - base[t]).abs().max() > 1e-6 for t in range(4))
    # ... frame 2 only itself and frame 3: frames 0 and 1 are untouched, exactly.
    assert torch.equal(after_third[:2], base[:2])
    assert all((after_third[t] - base[t]).abs().max() > 1e-6 for t in (2, 3))


def test_clips_in_a_batch_do_not_share_state():
    torch.manual_seed(0)
    network = small_network().eval()
    clips = torch.rand(2, 3, 3, 64, 64)
    with torch.no_grad():
        together = network(clips)["heatmaps"]
        alone = torch.cat([network(clips[i : i + 1])["heatmaps"] for i in range(2)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_the_centre_map_peaks_at_the_crop_centre_and_is_flip_symmetric():
    centre = centre_map((9, 7), sigma=2.0)[0, 0]
    assert centre.shape == (7, 9)
    assert centre[3, 4] == 1.0 and centre.argmax() == 3 * 9 + 4
    torch.testing.assert_close(centre, centre.flip(-1))
    # Even sizes: the centre falls between pixels, still symmetric.
    torch.testing.assert_close(centre_map((8, 8), 2.0), centre_map((8, 8), 2.0).flip(-1))


def test_wrong_configurations_say_what_to_change():
    rgb = TimmBackbone("resnet18", out_indices=(1, 4), output_stride=16)
    with pytest.raises(ValueError, match="in_chans: 4"):
        UniPoseLSTM(rgb, 13, (64, 64))
    with pytest.raises(ValueError, match="upsample_to_input"):
        small_network(upsample_to_input=True)
    with pytest.raises(ValueError, match="built for"):
        small_network()(torch.rand(1, 2, 3, 96, 96))


def small_unipose(channels: int = 16) -> UniPose:
    """A trained-UniPose stand-in of `small_network`'s frame network size (RGB input)."""
    backbone = TimmBackbone("resnet18", out_indices=(1, 4), output_stride=16, multi_grid=(1, 2))
    return UniPose(backbone, 13, rates=(2, 1), channels=channels)


def test_the_frame_network_starts_as_the_trained_unipose(tmp_path):
    """From a UniPose run's Lightning checkpoint: the frame network then gives that UniPose's
    maps whatever the centre map holds (its input channel starts at zero)."""
    torch.manual_seed(1)
    trained = small_unipose().eval()
    for parameter in trained.parameters():  # weights unlike any fresh initialisation
        parameter.data.normal_(0, 0.05)
    path = tmp_path / "unipose.ckpt"
    state = {f"network.{name}": tensor for name, tensor in trained.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, path)
    torch.manual_seed(2)
    network = small_network(frame_checkpoint=str(path)).eval()
    frames = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = trained(frames)["heatmaps"]
        for centre in (torch.zeros(2, 1, 64, 64), torch.randn(2, 1, 64, 64) * 5):
            got = network.frame_network(torch.cat([frames, centre], 1))["heatmaps"]
            torch.testing.assert_close(got, expected)


def test_a_frame_checkpoint_of_another_model_is_refused_by_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="frame_checkpoint: no such file"):
        small_network(frame_checkpoint=str(tmp_path / "absent.ckpt"))
    wider = tmp_path / "wider.ckpt"
    torch.save(small_unipose(channels=32).state_dict(), wider)
    with pytest.raises(ValueError, match=r"frame_checkpoint .*wider\.ckpt is not a UniPose"):
        small_network(frame_checkpoint=str(wider))


def test_the_module_trains_and_predicts_on_clips():
    """The one LightningModule with a clip network: per-frame targets and loss over the B * T
    frames, a backward pass that reaches the cells, then per-frame poses with the flip test."""
    cfg = compose_config(
        [
            "model=unipose_lstm",
            "skeleton=coco17",
            "model.input_size=[64,64]",
            "model.heatmap_size=[8,8]",
            "model.module.network.backbone.name=resnet18",
            "model.module.network.backbone.multi_grid=[1,2]",
            "model.module.network.rates=[2,1]",
            "model.module.network.channels=16",
            "model.module.network.middle_channels=8",
            "model.module.network.middle_kernel=3",
            "model.module.network.centre_sigma=4",
            "model.module.channels_last=false",
        ]
    )
    torch.manual_seed(0)
    module = hydra.utils.instantiate(cfg.model.module, _convert_="partial")
    clips, frames, k = 2, 3, 17
    batch = {
        "image": torch.randint(0, 256, (clips, frames, 3, 64, 64), dtype=torch.uint8),
        "keypoints": torch.rand(clips, frames, k, 2) * 63,
        "keypoint_weight": torch.ones(clips, frames, k),
        "visibility": torch.full((clips, frames, k), 2, dtype=torch.uint8),
        "affine": torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).expand(clips, 2, 3),
    }
    module.train()
    outputs = module(batch["image"])
    targets = module.codec.encode(flatten_time(batch), outputs)
    assert targets["heatmaps"].shape == outputs["heatmaps"].shape == (6, 18, 8, 8)
    module.loss(outputs, targets)["loss"].backward()
    assert module.network.cell.hidden_gates.weight.grad.abs().sum() > 0
    module.eval()
    with torch.no_grad():
        poses = module.predict_poses(batch)
    assert poses.shape == (clips * frames, k, 3) and torch.isfinite(poses).all()
