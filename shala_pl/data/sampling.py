"""Samplers and a resumable DataLoader that the DataModule builds itself, single-process or distributed.

Lightning would otherwise inject its own ``DistributedSampler`` under DDP, which pads uneven shards with
duplicated examples: harmless for training, but it biases evaluation metrics. These samplers subclass
``DistributedSampler`` so Lightning leaves them alone (``Trainer(use_distributed_sampler=...)`` does not matter),
and read the world size and rank from ``torch.distributed`` (1 and 0 when it is not initialised).

- :class:`TrainSampler`: a seeded shuffle, the same permutation on every rank (seed + epoch), rank r taking every
  W-th index; padded to a multiple of the world size so that every rank runs the same number of steps (DDP
  requires it). Reproducible: the order depends on the seed and epoch only, never on the global RNG.
- :class:`EvalSampler`: contiguous shards whose sizes differ by at most one, no example twice. With
  ``lockstep=True`` (sharded strategies, where every forward is a collective and all ranks must run the same
  number of batches) short shards are topped up with *marked* duplicates that the evaluation drops.
- :class:`ResumableDataLoader`: a ``DataLoader`` with ``state_dict``/``load_state_dict``. Lightning's fit loop
  saves the state of every train loader that has both (``_Stateful``) into the checkpoint and hands it back before
  the first batch of a resumed run, so a mid-epoch resume continues with the next unseen batch.
"""

from __future__ import annotations

import logging
import math
from typing import Iterator, Optional

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

log = logging.getLogger(__name__)

# Strategy class names that shard parameters: every forward (and generate) is a collective there.
_LOCKSTEP_STRATEGIES = ("FSDP", "DeepSpeed", "ModelParallel")


def world() -> tuple[int, int]:
    """(world size, rank) of the default process group; (1, 0) outside distributed runs."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def requires_lockstep(strategy) -> bool:
    """Whether ``strategy`` shards parameters, so all ranks must run the same number of forwards / generates."""
    name = type(strategy).__name__ if strategy is not None else ""
    return any(key in name for key in _LOCKSTEP_STRATEGIES)


class TrainSampler(DistributedSampler):
    """Seeded, rank-aware shuffle that can start part-way into an epoch (see :meth:`start_at`)."""

    def __init__(self, dataset: Dataset, num_replicas: Optional[int] = None, rank: Optional[int] = None,
                 shuffle: bool = True, seed: int = 0):
        size, this_rank = world()
        super().__init__(dataset, num_replicas=size if num_replicas is None else num_replicas,
                         rank=this_rank if rank is None else rank, shuffle=shuffle, seed=seed, drop_last=False)
        self._start = 0

    def start_at(self, offset: int) -> None:
        """Skip the first ``offset`` indices of this rank's share on the next iteration only."""
        self._start = max(0, int(offset))

    def indices(self) -> list[int]:
        """This rank's indices for the current epoch, before any skipping."""
        n = len(self.dataset)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=generator).tolist()
        else:
            order = list(range(n))
        padding = self.total_size - n  # repeat from the start so every rank gets num_samples indices
        order += (order * math.ceil(padding / max(n, 1)))[:padding]
        return order[self.rank : self.total_size : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        start, self._start = self._start, 0
        return iter(self.indices()[start:])


class EvalSampler(DistributedSampler):
    """Contiguous, non-duplicating evaluation shards: rank r gets ``[lo_r, hi_r)``, sizes differing by at most 1.

    ``lockstep=True`` gives every rank ``ceil(N / W)`` indices; the ones past a rank's real shard are
    ``N + j`` (a duplicate of example ``j``, marked as padding by :class:`MarkPadding` and dropped by the metrics).
    """

    def __init__(self, dataset: Dataset, num_replicas: Optional[int] = None, rank: Optional[int] = None,
                 lockstep: bool = False):
        size, this_rank = world()
        super().__init__(dataset, num_replicas=size if num_replicas is None else num_replicas,
                         rank=this_rank if rank is None else rank, shuffle=False, drop_last=False)
        self.lockstep = lockstep
        n, w = len(dataset), self.num_replicas
        self.lo = self.rank * (n // w) + min(self.rank, n % w)
        self.hi = self.lo + n // w + (1 if self.rank < n % w else 0)
        self.num_samples = math.ceil(n / w) if lockstep else self.hi - self.lo

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        real = list(range(self.lo, self.hi))
        pad = [n + (self.lo + j) % max(n, 1) for j in range(self.num_samples - len(real))]
        return iter(real + pad)

    def __len__(self) -> int:
        return self.num_samples


class MarkPadding(Dataset):
    """Index ``i >= len(dataset)`` returns example ``i - len(dataset)`` with ``is_padding=True``."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        n = len(self.dataset)
        row = dict(self.dataset[int(index) % n])
        row["is_padding"] = int(index) >= n
        return row


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` over a :class:`TrainSampler` that remembers how many batches of the epoch it has handed out.

    ``state_dict()`` -> ``{"epoch", "batches", "batch_size", "num_replicas", "seed"}`` (plain ints, loadable with
    ``torch.load(weights_only=True)``). After ``load_state_dict`` the next iterator over the *same epoch* skips the
    batches already consumed, without loading them; a different epoch (the checkpoint closed its epoch) starts from
    the beginning. ``len()`` stays the full epoch length, as Lightning's loops expect: they count the restored
    batches themselves. Counted batches are those the iterator returned, so worker prefetching does not shift the
    position (Lightning does not prefetch from a loader whose length it knows).
    """

    def __init__(self, *args, **kwargs):
        # The iterator's base seed comes from this generator, not the global RNG: creating an iterator (which a
        # resumed run does at a different moment) must not shift the rollouts' random numbers.
        kwargs.setdefault("generator", torch.Generator().manual_seed(0))
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, TrainSampler):
            raise TypeError("ResumableDataLoader needs a TrainSampler")
        self._epoch = 0
        self._batches = 0
        self._pending: Optional[dict] = None

    def state_dict(self) -> dict:
        sampler = self.sampler
        return {"epoch": int(self._epoch), "batches": int(self._batches), "batch_size": int(self.batch_size or 1),
                "num_replicas": int(sampler.num_replicas), "seed": int(sampler.seed)}

    def load_state_dict(self, state: dict) -> None:
        sampler = self.sampler
        if state.get("num_replicas", sampler.num_replicas) != sampler.num_replicas or \
                state.get("seed", sampler.seed) != sampler.seed:
            log.warning("resuming with a different world size or data seed (%s -> %s): the data order differs from "
                        "the interrupted run", {k: state.get(k) for k in ("num_replicas", "seed")},
                        {"num_replicas": sampler.num_replicas, "seed": sampler.seed})
        self._pending = dict(state)

    def __iter__(self):
        # A generator: its body runs at the first next(), after Lightning has called sampler.set_epoch().
        epoch = int(getattr(self.sampler, "epoch", 0))
        skip, pending, self._pending = 0, self._pending, None
        if pending is not None and int(pending.get("epoch", -1)) == epoch:
            skip = int(pending.get("batches", 0)) * int(pending.get("batch_size", self.batch_size or 1))
        self.sampler.start_at(skip)
        self._epoch, self._batches = epoch, int(pending["batches"]) if skip else 0
        for batch in super().__iter__():
            self._batches += 1
            yield batch
