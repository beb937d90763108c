"""Reading the Matlab ``.mat`` files several benchmarks ship their annotations in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from posesuite.data.records import DataError


def read_mat(path: str | Path, **options: Any) -> dict[str, Any]:
    """``scipy.io.loadmat`` of ``path`` (``options`` are loadmat's), never adding ``.mat`` to
    the name; a missing or unreadable file is a `DataError` that names it."""
    from scipy.io import loadmat  # only the .mat readers need scipy's reader

    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    try:
        return loadmat(str(path), appendmat=False, **options)
    except Exception as err:  # scipy raises ValueError, MatReadError, OSError, ... on bad files
        raise DataError(f"{path}: not a readable Matlab .mat file ({err})") from None
