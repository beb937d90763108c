"""Training on several sources at once: each a COCO-format split in its own keypoint set, mapped
into the target skeleton, drawn at its ratio (``data.sources``).

    data:
      sources:
        own:                                  # the dataset's own train split, half the samples
          _target_: posesuite.data.sources.mixing.Source
          dataset: ${data.dataset}
          ratio: 0.5
        portraits:                            # another keypoint set, mapped by name where given
          _target_: posesuite.data.sources.mixing.Source
          dataset: {_target_: posesuite.data.sources.coco.CocoDataset, _partial_: true,
                    root: /data/portraits}
          keypoints: portraits5               # conf/skeleton/portraits5.yaml: the files' order
          mapping: {nose: nose, left_eye: l_eye, right_eye: r_eye}
          ratio: 0.5

A source's mapping is checked when the data module is built, so a wrong one fails at start-up
naming the source and the keypoint. Evaluation stays on ``data.dataset``'s validation split.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch.utils.data import ConcatDataset

from posesuite.data.mapping import KeypointMapping
from posesuite.data.records import PersonRecord
from posesuite.skeleton import Skeleton, load_skeleton


@dataclass(frozen=True)
class Source:
    """One training source.

    Args:
        dataset: its files: a dataset description (``CocoDataset``, ``SyntheticCocoDataset``)
            whose train split is read; called with the data module's ``root`` when partial.
        keypoints: the keypoint set its files are in (a skeleton name); None: the target's.
        mapping: ``{target keypoint: source keypoint}``; None maps by name.
        ratio: its share of the training samples (normalised over the sources).
    """

    dataset: Any
    keypoints: str | None = None
    mapping: Mapping[str, str] | None = None
    ratio: float = 1.0

    def bind(self, name: str, target: Skeleton, root: str) -> BoundSource:
        """The source with its mapping into ``target`` checked (raises `DataError`)."""
        own = load_skeleton(self.keypoints) if self.keypoints else target
        dataset = self.dataset(root=root) if callable(self.dataset) else self.dataset
        mapping = KeypointMapping.between(name, own.keypoints, target, self.mapping)
        return BoundSource(name, dataset, mapping, self.ratio)


@dataclass(frozen=True)
class BoundSource:
    name: str
    dataset: Any
    mapping: KeypointMapping
    ratio: float

    def records(self) -> list[PersonRecord]:
        """The train split's people, their keypoints in the target skeleton's slots."""
        split, _ = self.dataset.prepare()
        records = split.read_people(self.mapping.num_source)
        if self.mapping.is_identity:
            return records
        mapped = [
            dataclasses.replace(
                record,
                keypoints=self.mapping.apply(record.keypoints),
                keypoint_mask=self.mapping.mask,
            )
            for record in records
        ]
        # People labelled only in keypoints the target does not have teach nothing.
        return [record for record in mapped if (record.keypoints[..., 2] > 0).any()]


class MixedDataset(ConcatDataset):
    """The sources' datasets one after another (`MultiSourceSampler` indexes it); they share one
    transform."""

    @property
    def transform(self) -> Callable[..., dict]:
        return self.datasets[0].transform
