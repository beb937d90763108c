"""Shared fixtures. Real samples live beside the clone in ../shared/data/real (never copied in)."""

from __future__ import annotations

from pathlib import Path

import pytest

from posesuite.paths import REPO_ROOT

REAL_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The folder of real annotated samples; tests that need it skip where it is absent."""
    if not REAL_DATA_DIR.is_dir():
        pytest.skip(
            f"real samples not found at {REAL_DATA_DIR} (only present in the dev workspace)"
        )
    return REAL_DATA_DIR
