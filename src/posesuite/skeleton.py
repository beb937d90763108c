"""Keypoint sets as data.

A `Skeleton` is loaded from one YAML file under ``conf/skeleton/``; that file is the only place a
keypoint set's names, flip pairs, OKS sigmas, limbs, loss weights, parts and the joint groups a
PCK protocol reports are written down.
The same file is a Hydra config group (``skeleton=coco17``), so runs and the standalone tools read
the same facts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from posesuite.paths import CONF_DIR

SKELETON_DIR = CONF_DIR / "skeleton"


class SkeletonError(ValueError):
    """A skeleton file is missing, unknown or inconsistent."""


@dataclass(frozen=True)
class Skeleton:
    """An ordered keypoint set with everything the pipeline needs to know about it.

    ``parts`` are keypoint slices scored apart (per-part AP, pose NMS weights); ``groups`` are
    the joint groups a PCK protocol reports (MPII's Head, Shoulder, ..., Ankle), empty for sets
    that have none.
    """

    name: str
    keypoints: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    sigmas: np.ndarray
    joint_weights: np.ndarray
    limbs: tuple[tuple[int, int], ...]
    upper_body: tuple[int, ...] = ()
    lower_body: tuple[int, ...] = ()
    parts: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    groups: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    @property
    def flip_index(self) -> np.ndarray:
        """Permutation that maps each keypoint channel to its mirror channel."""
        index = np.arange(self.num_keypoints)
        for left, right in self.flip_pairs:
            index[left], index[right] = right, left
        return index

    def index(self, name: str) -> int:
        try:
            return self.keypoints.index(name)
        except ValueError:
            raise SkeletonError(f"skeleton {self.name!r} has no keypoint {name!r}") from None

    @classmethod
    def from_config(cls, config: Mapping[str, Any], source: str = "<config>") -> Skeleton:
        """Build from a mapping with the layout of ``conf/skeleton/*.yaml``.

        ``source`` names the file in error messages.
        """
        try:
            names = tuple(str(n) for n in config["keypoints"])
            name = str(config["name"])
        except (KeyError, TypeError) as err:
            raise SkeletonError(f"{source}: missing required key {err}") from None
        if len(set(names)) != len(names):
            raise SkeletonError(f"{source}: duplicate keypoint names")
        lookup = {n: i for i, n in enumerate(names)}

        def resolve(entry: Any, key: str) -> int:
            if isinstance(entry, int) and 0 <= entry < len(names):
                return entry
            if isinstance(entry, str) and entry in lookup:
                return lookup[entry]
            raise SkeletonError(f"{source}: {key} refers to unknown keypoint {entry!r}")

        def resolve_list(entries: Sequence[Any] | None, key: str) -> tuple[int, ...]:
            return tuple(resolve(e, key) for e in (entries or ()))

        def resolve_pairs(pairs: Sequence[Sequence[Any]] | None, key: str):
            out = []
            for pair in pairs or ():
                if len(pair) != 2:
                    raise SkeletonError(f"{source}: {key} entry {list(pair)} is not a pair")
                out.append((resolve(pair[0], key), resolve(pair[1], key)))
            return tuple(out)

        def per_keypoint(key: str, default: float | None) -> np.ndarray:
            values = config.get(key)
            if values is None:
                if default is None:
                    raise SkeletonError(f"{source}: missing required key {key!r}")
                return np.full(len(names), default, dtype=np.float64)
            array = np.asarray(list(values), dtype=np.float64)
            if array.shape != (len(names),):
                raise SkeletonError(
                    f"{source}: {key} has {array.size} values for {len(names)} keypoints"
                )
            return array

        flip_pairs = resolve_pairs(config.get("flip_pairs"), "flip_pairs")
        seen = [i for pair in flip_pairs for i in pair]
        if len(set(seen)) != len(seen):
            raise SkeletonError(f"{source}: a keypoint appears in more than one flip pair")
        parts = {
            str(k): resolve_list(v, f"parts.{k}") for k, v in (config.get("parts") or {}).items()
        }
        groups = {
            str(k): resolve_list(v, f"groups.{k}") for k, v in (config.get("groups") or {}).items()
        }
        sigmas = per_keypoint("sigmas", None)
        joint_weights = per_keypoint("joint_weights", 1.0)
        sigmas.setflags(write=False)
        joint_weights.setflags(write=False)
        return cls(
            name=name,
            keypoints=names,
            flip_pairs=flip_pairs,
            sigmas=sigmas,
            joint_weights=joint_weights,
            limbs=resolve_pairs(config.get("limbs"), "limbs"),
            upper_body=resolve_list(config.get("upper_body"), "upper_body"),
            lower_body=resolve_list(config.get("lower_body"), "lower_body"),
            parts=parts,
            groups=groups,
        )

    @classmethod
    def coerce(cls, skeleton: Skeleton | Mapping[str, Any]) -> Skeleton:
        """Accept a Skeleton or its config mapping (what ``skeleton: ${skeleton}`` passes)."""
        if isinstance(skeleton, Skeleton):
            return skeleton
        if isinstance(skeleton, Mapping):
            return cls.from_config(skeleton, source="cfg.skeleton")
        raise SkeletonError(f"expected a Skeleton or its config, got {type(skeleton).__name__}")

    @classmethod
    def from_yaml(cls, path: str | Path) -> Skeleton:
        path = Path(path)
        try:
            with path.open() as handle:
                config = yaml.safe_load(handle)
        except FileNotFoundError:
            raise SkeletonError(f"skeleton file not found: {path}") from None
        except yaml.YAMLError as err:
            raise SkeletonError(f"{path}: malformed YAML: {err}") from None
        return cls.from_config(config, source=str(path))


def available_skeletons() -> list[str]:
    return sorted(p.stem for p in SKELETON_DIR.glob("*.yaml"))


def load_skeleton(name_or_path: str | Path) -> Skeleton:
    """Load a skeleton by name (``coco17``) from ``conf/skeleton/`` or from a YAML path."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"}:
        return Skeleton.from_yaml(path)
    candidate = SKELETON_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        raise SkeletonError(
            f"unknown skeleton {str(name_or_path)!r}; available: {', '.join(available_skeletons())}"
        )
    return Skeleton.from_yaml(candidate)
