"""task=summary: parameter count and GFLOPs at the model's input size.

GFLOPs follow the pose-estimation literature's convention: they count multiply-accumulates,
half of what torch's FLOP counter reports, here exactly and divided by 1e9. The tables that
quote CPN-R50 at 6.20 and SimpleBaseline-R50 at 8.9 (HRNet's) came from a per-layer counter that
divides by 1024^3 and charges a transposed convolution for every output pixel (4x its real cost
at stride 2), so deconvolution heads read lower here (SimpleBaseline-R50: 5.4) and everything
else about 7% higher (CPN-R50 at 256x192: 6.80 here, 6.34 in 1024^3 units).
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch.utils.flop_counter import FlopCounterMode

from posesuite.tasks.common import build_module


def count_params_and_gmacs(
    network: torch.nn.Module, input_size: tuple[int, int]
) -> tuple[int, float]:
    """(parameters, giga multiply-accumulates) of one forward pass on one 3xHxW frame (a clip of
    one frame for a clip network, ``temporal = True``)."""
    params = sum(p.numel() for p in network.parameters())
    width, height = input_size
    frame = torch.zeros(1, 3, height, width)
    network.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(frame[None] if getattr(network, "temporal", False) else frame)
    return params, counter.get_total_flops() / 2 / 1e9


def summary(cfg: DictConfig) -> None:
    module = build_module(cfg)
    input_size = tuple(cfg.model.input_size)
    params, gmacs = count_params_and_gmacs(module.network, input_size)
    print(f"model: {cfg.model.name}  input (W x H): {input_size[0]} x {input_size[1]}")
    if module.spatial_transformer is not None:  # RMPE: the STN runs before the network
        stn_params, stn_gmacs = count_params_and_gmacs(module.spatial_transformer.stn, input_size)
        print(
            f"network (SPPE): {params / 1e6:.2f} M parameters, {gmacs:.2f} GFLOPs; STN: "
            f"{stn_params / 1e6:.2f} M, {stn_gmacs:.2f} GFLOPs (the frozen parallel SPPE, "
            "training only, is not counted)"
        )
        params, gmacs = params + stn_params, gmacs + stn_gmacs
    print(f"parameters: {params / 1e6:.2f} M")
    print(f"GFLOPs (multiply-accumulates / 1e9, the pose literature's convention): {gmacs:.2f}")
    print(f"params={params} gflops={gmacs:.4f}")
