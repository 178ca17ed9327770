"""Training order and augmentation drawn from (seed, epoch): what makes a resumed run repeat exactly.

Random state that is carried from epoch to epoch (a shuffling generator, worker RNGs, the global RNG
after a sanity check) differs between an uninterrupted run and one resumed from a checkpoint. Here the
order of epoch `e` and the augmentation of example `i` in epoch `e` are derived from `(seed, e)` and
`(seed, e, i)` alone, so they are the same whatever ran before, however many workers load the data.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DistributedSampler

_SEED_MASK = (1 << 63) - 1


def derive_seed(*parts: int) -> int:
    """A seed for the random stream identified by `parts` (integer tuple hashing is stable across processes)."""
    return hash(tuple(parts)) & _SEED_MASK


def run_seed() -> int:
    """The run's seed as Lightning's `seed_everything` recorded it (0 when no seed was set)."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


class EpochSampler(DistributedSampler):
    """Shuffles (or draws with `weights`, with replacement) anew each epoch from `(seed, epoch)`.

    `epoch()` is asked when iteration starts, so a run resumed at epoch 5 draws epoch 5's order. With
    `keyed=True` it yields `(epoch, index)` pairs, for datasets whose augmentation is seeded per example.
    Under DDP each process takes every `world_size`-th example of the one global order (padded to equal
    length), so a step's global batch is the batch one process would see; being a DistributedSampler,
    Lightning uses it as it is instead of wrapping it in a second shuffle.
    """

    def __init__(
        self,
        num_samples: int,
        seed: int,
        epoch: Callable[[], int],
        weights: Tensor | None = None,
        shuffle: bool = True,
        keyed: bool = False,
    ) -> None:
        world, rank = _world()
        super().__init__(range(num_samples), num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)
        self.size, self.epoch_of, self.weights, self.keyed = num_samples, epoch, weights, keyed

    def __iter__(self) -> Iterator[int | tuple[int, int]]:
        epoch = self.epoch_of()
        generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.size, replacement=True, generator=generator)
        elif self.shuffle:
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.arange(self.size)
        order = order.repeat(-(-self.total_size // self.size))[: self.total_size]
        for index in order[self.rank :: self.num_replicas].tolist():
            yield (epoch, index) if self.keyed else index


class LengthBucketSampler(EpochSampler):
    """`EpochSampler`'s order regrouped so that every batch holds examples of similar length.

    From the epoch's order (drawn from `(seed, epoch)`), pools of `pool` global batches are sorted by
    length and cut into global batches of `batch_size` x world size, whose order is shuffled with the
    same generator (an incomplete global batch stays last). Each process takes every `world_size`-th
    example, so its `batch_size` consecutive indices are its share of one global batch: a DDP step
    trains on the global batch one process would see with `batch_size` x world size, and a resumed run
    draws the same batches. Serve it with a DataLoader of the same `batch_size`.
    """

    def __init__(
        self,
        lengths: Tensor,
        batch_size: int,
        seed: int,
        epoch: Callable[[], int],
        shuffle: bool = True,
        pool: int = 50,
    ) -> None:
        super().__init__(len(lengths), seed, epoch, shuffle=shuffle)
        self.lengths, self.batch_size, self.pool = lengths, batch_size, pool

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch_of()))
        order = torch.randperm(self.size, generator=generator) if self.shuffle else torch.arange(self.size)
        order = order.repeat(-(-self.total_size // self.size))[: self.total_size]
        step = self.batch_size * self.num_replicas
        batches: list[Tensor] = []
        for pool in order.split(step * self.pool):
            batches += pool[self.lengths[pool].argsort(stable=True)].split(step)
        full, rest = batches[: self.total_size // step], batches[self.total_size // step :]
        if self.shuffle:
            full = [full[i] for i in torch.randperm(len(full), generator=generator).tolist()]
        yield from torch.cat(full + rest)[self.rank :: self.num_replicas].tolist()


class EvaluationSampler(DistributedSampler):
    """Evaluation in a fixed `order` (default: the dataset's own); under DDP each process takes every
    `world_size`-th example of it, so every example is evaluated exactly once, none repeated to pad the
    processes to equal length (processes may then see one batch more or less)."""

    def __init__(self, size: int, order: Tensor | None = None) -> None:
        world, rank = _world()
        super().__init__(range(size), num_replicas=world, rank=rank, shuffle=False)
        self.order = torch.arange(size) if order is None else order
        self.num_samples, self.total_size = len(range(rank, size, world)), size

    def __iter__(self) -> Iterator[int]:
        return iter(self.order[self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples


class LengthOrderSampler(EvaluationSampler):
    """Evaluation in order of length (little padding per batch), each example exactly once under DDP."""

    def __init__(self, lengths: Tensor) -> None:
        super().__init__(len(lengths), lengths.argsort(stable=True))
        self.lengths = lengths


def _world() -> tuple[int, int]:
    """(world size, rank) of the process group, (1, 0) outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0
