"""UniPose-LSTM (Artacho and Savakis, CVPR 2020): UniPose on each frame of a clip, then a
convolutional LSTM that carries what it saw in the earlier frames to the later ones.

Per frame t, as the released code (github.com/bmartacho/UniPose, ``model/uniposeLSTM.py``):

1. the frame and its centre map (a Gaussian at the person's centre) enter the backbone as four
   channels; UniPose (`posesuite.models.unipose.UniPose`) gives K + 1 maps at stride 8;
2. those maps and the centre map average-pooled to stride 8 (kernel 9, stride 8, padding 1)
   form the K + 2 channels of the LSTM's input x_t;
3. the first frame goes through a gate-less cell (no forget gate, no state yet: ``FirstCell``),
   every later one through a 3x3 ConvLSTM with the previous hidden and cell state
   (``ConvLSTMCell``); both keep K + 2 channels;
4. the hidden state goes through three 11x11 convs of 128 channels, a 1x1 of 128 (each with a
   ReLU) and a 1x1 to the frame's K + 1 heatmaps, channel 0 the background.

The loss is per frame, on every frame's maps. In top-down crops the person's centre is the
crop's centre, so the centre map is a fixed Gaussian there (a buffer made from the input size;
``centre_sigma`` in input pixels, released: 21 at 368x368). It is symmetric under a horizontal
flip about the crop centre, so the flip test needs nothing special.

Departures from the released code, each for a reason: the first cell's state is i * g (the
standard LSTM with zero initial state; released: tanh(i * g), which only rescales the state the
next frame forgets or keeps); the last 1x1 conv is linear and starts from small weights, as
UniPose's own last conv, where the released one ends in a ReLU that can leave a map at zero; the
released model batches one clip at a time, this one any number.

``frame_checkpoint`` starts the frame network from a trained UniPose of the same size (the
released code's ``--pretrained``): a recurrent head reaches the frame maps only through the
cells, and from random weights the whole model learns slowly. The trained first conv's RGB
weights go to the frame's channels and the centre map's channel starts at zero, so the frame
network first computes exactly the maps the trained UniPose did.

Parameters (Penn Action, K = 13): the released model has 51.8M (UniPose with a four-channel
first conv and 14 maps, plus 22,440 in the two cells and 4,215,950 in the convs after them).
This one omits the same never-called decoder conv as `UniPose` (524,800): 51,263,268.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from posesuite.models.backbones import TimmBackbone
from posesuite.models.unipose import UniPose, resize

log = logging.getLogger(__name__)

# The released pooling of the centre map to the maps' stride 8.
CENTRE_POOL = {"kernel_size": 9, "stride": 8, "padding": 1}


def centre_map(size: Sequence[int], sigma: float) -> torch.Tensor:
    """(1, 1, H, W) Gaussian of peak 1 at the centre of a (W, H) crop, pixel centres on
    integers (the centre is ((W - 1) / 2, (H - 1) / 2), so the map is flip-symmetric)."""
    width, height = int(size[0]), int(size[1])
    xs = torch.arange(width, dtype=torch.float32) - (width - 1) / 2
    ys = torch.arange(height, dtype=torch.float32) - (height - 1) / 2
    squared = ys[:, None] ** 2 + xs[None, :] ** 2
    return torch.exp(-squared / (2 * sigma**2))[None, None]


class FirstCell(nn.Module):
    """The first frame's cell: input, output and candidate gates from x alone (no state yet)."""

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        padding = kernel_size // 2
        self.gates = nn.Conv2d(channels, 3 * channels, kernel_size, padding=padding)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden, cell)."""
        i, o, g = self.gates(x).chunk(3, dim=1)
        cell = torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(cell), cell


class ConvLSTMCell(nn.Module):
    """A convolutional LSTM cell: every gate from a conv of x_t plus a conv of h_{t-1}."""

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        padding = kernel_size // 2
        self.input_gates = nn.Conv2d(channels, 4 * channels, kernel_size, padding=padding)
        self.hidden_gates = nn.Conv2d(channels, 4 * channels, kernel_size, padding=padding)

    def forward(
        self, x: torch.Tensor, hidden: torch.Tensor, cell: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden, cell) of this frame."""
        gates = self.input_gates(x) + self.hidden_gates(hidden)
        i, f, o, g = gates.chunk(4, dim=1)
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(cell), cell


class UniPoseLSTM(nn.Module):
    """UniPose-LSTM on clips: (B, T, 3, H, W) -> ``{"heatmaps": (B * T, K + 1, h, w)}``, the
    frames in clip order (frame t of clip b at b * T + t), channel 0 the background.

    Args:
        backbone: as `UniPose`'s, reading four channels (the frame and its centre map:
            ``in_chans=4``).
        num_keypoints: K.
        input_size: the crop's (W, H), for the centre map.
        pooling, rates, shared_branch_convs, channels: the per-frame `UniPose`'s.
        upsample_to_input: must be False: the LSTM works on the stride-8 maps (the key is
            accepted so that the UniPose model config's ablation switches apply unchanged).
        centre_sigma: the centre map's Gaussian sigma in input pixels.
        lstm_kernel: the cells' conv size (released 3).
        middle_channels, middle_kernel: the convs after the LSTM (released 128, 11).
        frame_checkpoint: an optional local file, a trained `UniPose` of the same size and K
            (a Lightning checkpoint of a UniPose or UniPose-LSTM run, or the network's state
            dict) to start the frame network from.
    """

    temporal = True

    def __init__(
        self,
        backbone: TimmBackbone,
        num_keypoints: int,
        input_size: Sequence[int],
        pooling: str = "wasp",
        rates: Sequence[int] = (18, 12, 6),
        shared_branch_convs: bool = True,
        upsample_to_input: bool = False,
        channels: int = 256,
        centre_sigma: float = 21.0,
        lstm_kernel: int = 3,
        middle_channels: int = 128,
        middle_kernel: int = 11,
        frame_checkpoint: str | None = None,
    ) -> None:
        super().__init__()
        first_conv = next(m for m in backbone.modules() if isinstance(m, nn.Conv2d))
        if first_conv.in_channels != 4:
            raise ValueError(
                "UniPose-LSTM feeds the frame and its centre map to the backbone: its first conv "
                f"must read 4 channels (backbone in_chans: 4), it reads {first_conv.in_channels}"
            )
        if upsample_to_input:
            raise ValueError("UniPose-LSTM works on the stride-8 maps: upsample_to_input=false")
        self.frame_network = UniPose(
            backbone, num_keypoints, pooling, rates, shared_branch_convs, False, channels
        )
        self.register_buffer("centre", centre_map(input_size, centre_sigma), persistent=False)
        self.pool_centre = nn.AvgPool2d(**CENTRE_POOL)
        channels = num_keypoints + 2  # K + 1 maps and the pooled centre map
        self.first_cell = FirstCell(channels, lstm_kernel)
        self.cell = ConvLSTMCell(channels, lstm_kernel)
        padding = middle_kernel // 2
        self.middle = nn.Sequential(
            nn.Conv2d(channels, middle_channels, middle_kernel, padding=padding),
            nn.ReLU(inplace=True),
            nn.Conv2d(middle_channels, middle_channels, middle_kernel, padding=padding),
            nn.ReLU(inplace=True),
            nn.Conv2d(middle_channels, middle_channels, middle_kernel, padding=padding),
            nn.ReLU(inplace=True),
            nn.Conv2d(middle_channels, middle_channels, 1),
            nn.ReLU(inplace=True),
        )
        self.final = nn.Conv2d(middle_channels, num_keypoints + 1, 1)
        nn.init.normal_(self.final.weight, std=0.001)
        nn.init.zeros_(self.final.bias)
        if frame_checkpoint:
            self.load_frame_checkpoint(frame_checkpoint)

    def load_frame_checkpoint(self, path: str) -> None:
        """Load a trained UniPose into the frame network, every tensor; the first conv's three
        RGB input channels are copied and the centre map's fourth starts at zero."""
        file = Path(path).expanduser()
        key = "model.module.network.frame_checkpoint"
        if not file.is_file():
            raise FileNotFoundError(f"{key}: no such file {file}")
        state = frame_network_state(torch.load(file, map_location="cpu", weights_only=True))
        own = self.frame_network.state_dict()
        first_conv = next(
            name + ".weight"
            for name, module in self.frame_network.named_modules()
            if isinstance(module, nn.Conv2d)
        )
        if first_conv in state and state[first_conv].shape[1] == 3:
            rgb = state[first_conv]
            state[first_conv] = torch.cat([rgb, rgb.new_zeros(rgb.shape[0], 1, *rgb.shape[2:])], 1)
        missing = sorted(set(own) - set(state))
        wrong = [
            f"{name} {tuple(state[name].shape)} (this model: {tuple(tensor.shape)})"
            for name, tensor in own.items()
            if name in state and state[name].shape != tensor.shape
        ]
        if missing or wrong:
            problems = (["missing: " + ", ".join(missing[:5])] if missing else []) + wrong[:5]
            raise ValueError(
                f"{key} {file} is not a UniPose of this size and keypoint count "
                f"({len(missing)} tensors missing, {len(wrong)} of another shape): "
                + "; ".join(problems)
            )
        self.frame_network.load_state_dict({name: state[name] for name in own})
        log.info("frame network: loaded %d tensors from %s", len(own), file)

    def forward(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        batch, frames = clips.shape[:2]
        if tuple(clips.shape[-2:]) != tuple(self.centre.shape[-2:]):
            raise ValueError(
                f"UniPose-LSTM was built for {tuple(self.centre.shape[-2:][::-1])} (W, H) crops, "
                f"got {tuple(clips.shape[-2:][::-1])}"
            )
        centre = self.centre.to(clips.dtype).expand(batch * frames, 1, *clips.shape[-2:])
        frame_maps = self.frame_network(torch.cat([clips.flatten(0, 1), centre], dim=1))
        maps = frame_maps["heatmaps"]
        pooled = resize(self.pool_centre(centre), maps.shape[-2:])
        steps = torch.cat([maps, pooled], dim=1).unflatten(0, (batch, frames))
        hidden, cell = self.first_cell(steps[:, 0])
        states = [hidden]
        for t in range(1, frames):
            hidden, cell = self.cell(steps[:, t], hidden, cell)
            states.append(hidden)
        hidden_states = torch.stack(states, dim=1).flatten(0, 1)  # (B * T, K + 2, h, w)
        return {"heatmaps": self.final(self.middle(hidden_states))}


def frame_network_state(checkpoint: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The frame network's tensors of a checkpoint: a Lightning checkpoint's ``state_dict``
    (``network.*``), a UniPose-LSTM's (``network.frame_network.*``) or a bare state dict."""
    state = checkpoint.get("state_dict", checkpoint)
    for prefix in ("network.frame_network.", "network.", "frame_network."):
        if any(name.startswith(prefix) for name in state):
            return {
                name[len(prefix) :]: tensor
                for name, tensor in state.items()
                if name.startswith(prefix)
            }
    return dict(state)
