"""posesuite: one training loop and one evaluation protocol for 2D multi-person pose estimation."""

__version__ = "0.1.0"
