"""Hydra/OmegaConf helpers shared by run.py, the tasks and the tests."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import rich
import rich.syntax
import rich.tree
from omegaconf import DictConfig, OmegaConf

from posesuite.paths import REPO_ROOT

log = logging.getLogger(__name__)


def register_resolvers() -> None:
    """``${len:...}`` (list length, e.g. the number of keypoints of a skeleton) and
    ``${repo_root:}``. Safe to call more than once."""
    if not OmegaConf.has_resolver("len"):
        OmegaConf.register_new_resolver("len", lambda items: len(items))
    if not OmegaConf.has_resolver("repo_root"):
        OmegaConf.register_new_resolver("repo_root", lambda: str(REPO_ROOT))


register_resolvers()


def print_config_tree(
    cfg: DictConfig,
    order: Sequence[str] = ("task", "data", "model", "trainer", "callbacks", "logger", "paths"),
) -> None:
    """Print the resolved config as a rich tree, the main groups first."""
    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order]
    for key in keys:
        branch = tree.add(str(key), style="bold", guide_style="dim")
        value = cfg[key]
        text = (
            OmegaConf.to_yaml(value, resolve=True) if isinstance(value, DictConfig) else str(value)
        )
        branch.add(rich.syntax.Syntax(text, "yaml", theme="ansi_dark"))
    rich.print(tree)
