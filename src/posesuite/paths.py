"""Where the project's own files live.

posesuite is an experiment suite run from its clone (installed editable), so the Hydra config
tree is the repository's top-level ``conf/``. ``POSESUITE_CONF`` points elsewhere if needed.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = Path(os.environ.get("POSESUITE_CONF", REPO_ROOT / "conf"))
