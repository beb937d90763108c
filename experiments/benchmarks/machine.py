"""What every benchmark records beside its numbers: the machine, whether it was busy, the file."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

# Other work on the machine (1-minute load average above this) makes the timings noisy.
BUSY_LOAD_AVERAGE = 0.5


def machine_info(device: torch.device | None = None, **versions: str) -> dict[str, Any]:
    """CPU model, cores, load average now, Python/torch and any other ``versions`` given.

    Call it first thing, so that the load average is the machine's and not the benchmark's.
    """
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    info = {
        "cpu": cpu_model,
        "machine": platform.machine(),
        "cores": len(os.sched_getaffinity(0)),
        "load_average_at_start": os.getloadavg()[0],
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        **versions,
    }
    if device is not None and device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def warn_if_busy(machine: dict[str, Any]) -> None:
    if machine["load_average_at_start"] > BUSY_LOAD_AVERAGE:
        print(
            f"warning: load average {machine['load_average_at_start']:.1f} before the start;"
            " other processes will slow the measurements down",
            file=sys.stderr,
        )


def write_results(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}", file=sys.stderr)
