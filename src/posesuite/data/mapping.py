"""How a data source's keypoints land in the target skeleton.

Every source declares its own keypoint set (a skeleton under ``conf/skeleton/``) and, where names
differ, which of its keypoints fills which target slot. Target slots the source does not
annotate are masked: their weight is 0 in training, and losses that supervise unlabelled joints
toward empty maps (CPN's official GlobalNet rule) leave them alone, because "not in this
dataset" is not "not visible". A mapping that names an unknown keypoint, or uses one twice, is
an error at start-up that names the source and the keypoint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from posesuite.data.records import DataError
from posesuite.skeleton import Skeleton


@dataclass(frozen=True)
class KeypointMapping:
    """``target <- source`` keypoint slots of one source.

    ``source_index[t]`` is the source keypoint that fills target slot ``t``, or -1 where the
    source has none (masked).
    """

    source: str  # the source's name, for messages
    num_source: int
    source_index: tuple[int, ...]

    @classmethod
    def between(
        cls,
        source: str,
        source_keypoints: Sequence[str],
        target: Skeleton,
        pairs: Mapping[str, str] | None = None,
    ) -> KeypointMapping:
        """The mapping of a source with keypoints ``source_keypoints`` (in its files' order)
        into ``target``. ``pairs`` (``{target keypoint: source keypoint}``) lists the slots
        explicitly; without it every target keypoint takes the source keypoint of the same name.
        """
        lookup = {name: i for i, name in enumerate(source_keypoints)}
        if pairs is None:
            pairs = {name: name for name in target.keypoints if name in lookup}
        where = f"data source {source!r}"
        index = [-1] * target.num_keypoints
        used: dict[str, str] = {}
        for target_name, source_name in pairs.items():
            if target_name not in target.keypoints:
                raise DataError(
                    f"{where}: mapping names target keypoint {target_name!r}, which skeleton "
                    f"{target.name!r} does not have"
                )
            if source_name not in lookup:
                raise DataError(
                    f"{where}: mapping maps {target_name!r} from {source_name!r}, which is not "
                    f"among the source's keypoints ({', '.join(source_keypoints[:5])}, ...)"
                )
            if source_name in used:
                raise DataError(
                    f"{where}: source keypoint {source_name!r} fills both {used[source_name]!r} "
                    f"and {target_name!r}"
                )
            used[source_name] = target_name
            index[target.index(target_name)] = lookup[source_name]
        if all(i < 0 for i in index):
            raise DataError(
                f"{where}: no keypoint of the source maps into skeleton {target.name!r}; give "
                "the mapping as {target keypoint: source keypoint}"
            )
        return cls(source=source, num_source=len(source_keypoints), source_index=tuple(index))

    @property
    def is_identity(self) -> bool:
        return self.source_index == tuple(range(self.num_source))

    @property
    def mask(self) -> np.ndarray:
        """(K_target,) bool: the target slots this source annotates."""
        return np.asarray(self.source_index) >= 0

    def apply(self, keypoints: np.ndarray) -> np.ndarray:
        """(..., K_source, 3) keypoints (a record's (T, K, 3)) -> (..., K_target, 3); masked
        slots are unlabelled (zeros)."""
        if keypoints.shape[-2:] != (self.num_source, 3):
            raise DataError(
                f"data source {self.source!r}: a record has {keypoints.shape[-2]} keypoints, "
                f"its keypoint set {self.num_source}"
            )
        index = np.asarray(self.source_index)
        mapped = np.zeros((*keypoints.shape[:-2], len(index), 3), dtype=keypoints.dtype)
        mapped[..., self.mask, :] = keypoints[..., index[self.mask], :]
        return mapped
