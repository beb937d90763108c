"""Drawing training samples from several sources at set ratios.

`MultiSourceSampler` indexes the concatenation of the sources' datasets. Each epoch every rank
draws its share of samples with exactly the configured share from each source (up to rounding),
different samples on different ranks, in an order fixed by the seed and the epoch: the same run
on the same number of processes sees the same samples, and a resumed run continues with the
epochs it had not seen. A source smaller than its share is cycled through (a new permutation
each pass); a larger one is subsampled.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch.distributed as dist
from torch.utils.data import DistributedSampler


class MultiSourceSampler(DistributedSampler):
    """Indices into ``ConcatDataset(sources)`` drawn at ``ratios``.

    A `DistributedSampler` by type, so that Lightning leaves it in place under DDP (it would
    otherwise wrap it and split its stream again); it takes the rank and the number of
    processes from ``torch.distributed`` when they are not given.

    Args:
        sizes: samples in each source, in concatenation order.
        ratios: each source's share (normalised to sum 1; 0 leaves a source out).
        num_samples: samples per epoch over all ranks; by default the sum of ``sizes``.
        seed: fixes the draws together with the epoch (``set_epoch``).
    """

    def __init__(
        self,
        sizes: Sequence[int],
        ratios: Sequence[float],
        num_samples: int | None = None,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        # DistributedSampler.__init__ is not called: it shards one dataset; only its interface
        # (set_epoch, num_replicas, rank) is shared.
        if len(sizes) != len(ratios) or not sizes:
            raise ValueError(f"need one ratio per source, got {len(ratios)} for {len(sizes)}")
        if any(r < 0 or not math.isfinite(r) for r in ratios) or not sum(ratios) > 0:
            raise ValueError(f"source ratios must be >= 0 and not all 0, got {list(ratios)}")
        if any(size == 0 for size, ratio in zip(sizes, ratios, strict=True) if ratio > 0):
            raise ValueError(f"a source with a ratio above 0 has no samples: sizes {list(sizes)}")
        distributed = dist.is_available() and dist.is_initialized()
        self.num_replicas = num_replicas or (dist.get_world_size() if distributed else 1)
        self.rank = rank if rank is not None else (dist.get_rank() if distributed else 0)
        self.sizes = [int(size) for size in sizes]
        self.shares = np.asarray(ratios, dtype=np.float64) / sum(ratios)
        total = sum(self.sizes) if num_samples is None else num_samples
        self.num_samples = math.ceil(total / self.num_replicas)  # per rank
        self.seed = seed
        self.epoch = 0
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)

    def __len__(self) -> int:
        return self.num_samples

    def counts(self) -> list[int]:
        """Samples this rank draws from each source per epoch: the shares times the epoch's
        length, rounded so that they sum to it (largest remainders first)."""
        exact = self.shares * self.num_samples
        counts = np.floor(exact).astype(int)
        remainder = self.num_samples - counts.sum()
        counts[np.argsort(-(exact - counts), kind="stable")[:remainder]] += 1
        return counts.tolist()

    def __iter__(self) -> Iterator[int]:
        # Independent streams of this epoch: one per source (shared by all ranks), then one
        # per rank for the order.
        streams = np.random.SeedSequence([self.seed, self.epoch]).spawn(
            len(self.sizes) + self.num_replicas
        )
        indices = []
        for source, count in enumerate(self.counts()):
            if count == 0:
                continue
            # Every rank draws from the same stream and takes every num_replicas-th entry, so
            # the ranks' samples differ.
            rng = np.random.default_rng(streams[source])
            drawn = _cycled_permutations(rng, self.sizes[source], count * self.num_replicas)
            indices.append(self.offsets[source] + drawn[self.rank :: self.num_replicas])
        order = np.random.default_rng(streams[len(self.sizes) + self.rank])
        return iter(order.permutation(np.concatenate(indices)).tolist())


def _cycled_permutations(rng: np.random.Generator, size: int, length: int) -> np.ndarray:
    """``length`` indices below ``size``: fresh permutations one after another, cut to length."""
    passes = [rng.permutation(size) for _ in range(math.ceil(length / size))]
    return np.concatenate(passes)[:length]
