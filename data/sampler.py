"""Seeded, resumable, shardable sampling for the training loaders.

Each epoch of a stream is a permutation of its indices drawn from (seed, stream, epoch). Every item
is yielded as (index, key), key = (seed, stream, epoch, position): the dataset seeds that sample's
augmentation with it. So a run does not depend on the number of workers, and a stream can restart
exactly at any position of any epoch (resume) without replaying anything.
"""
import atexit
import weakref

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler


class SeededEpochSampler(Sampler):
    def __init__(self, indices, seed, stream, rank=0, world_size=1, shuffle=True):
        self.indices = np.asarray(indices, np.int64)
        self.seed, self.stream, self.shuffle = int(seed), int(stream), shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch, skip=0):
        """Start `epoch`, leaving out the first `skip` items of this rank's share (resume)."""
        self.epoch, self.skip = int(epoch), int(skip)

    def _order(self):
        order = self.indices
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.stream, self.epoch])
            order = order[rng.permutation(len(order))]
        if self.world_size > 1:  # pad to a multiple of the world size, then take every k-th
            total = -(-len(order) // self.world_size) * self.world_size
            order = np.resize(order, total)[self.rank::self.world_size]
        return order

    def __iter__(self):
        order = self._order()
        for pos in range(self.skip, len(order)):
            global_pos = pos * self.world_size + self.rank
            yield int(order[pos]), (self.seed, self.stream, self.epoch, global_pos)

    def __len__(self):
        return -(-len(self.indices) // self.world_size) - self.skip


def end_workers(iterator):
    """Tell a DataLoader iterator's workers to end and wait for them (nothing for one without)."""
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


_OPEN = weakref.WeakSet()


@atexit.register  # runs before multiprocessing's exit handler, which would wait for the workers
def _close_open_streams():
    for stream in list(_OPEN):
        stream.close()


class BatchStream:
    """An endless source of batches: a DataLoader that moves to the next epoch when one ends.

    Its position (epoch, batches taken in it) is its state: `state_dict()` / `load_state_dict()`.
    """

    def __init__(self, dataset, sampler, batch_size, num_workers=0, pin_memory=False,
                 worker_init_fn=None, collate_fn=None, drop_last=False):
        self.sampler, self.batch_size = sampler, batch_size
        generator = torch.Generator()  # loaders must not draw from the global RNG (dropout uses it)
        generator.manual_seed(sampler.seed * 1000 + sampler.stream)
        self.loader = DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
            pin_memory=pin_memory, drop_last=drop_last, persistent_workers=num_workers > 0,
            worker_init_fn=worker_init_fn, generator=generator, collate_fn=collate_fn,
            prefetch_factor=2 if num_workers > 0 else None)
        self.epoch, self.taken = 0, 0
        self._iterator = None
        _OPEN.add(self)

    def close(self):
        """End the loader's worker processes now (the next batch starts new ones). They ignore stop
        signals (utils/seeding.py init_worker), so they end when told to: by this, by the run's end,
        or, for a stream nobody closed, when the interpreter exits."""
        end_workers(self._iterator)
        end_workers(getattr(self.loader, "_iterator", None))  # persistent workers
        self._iterator = None
        self.loader._iterator = None

    def __next__(self):
        if self._iterator is None:
            self.sampler.set_epoch(self.epoch, self.taken * self.batch_size)
            self._iterator = iter(self.loader)
        try:
            batch = next(self._iterator)
        except StopIteration:
            self.epoch, self.taken = self.epoch + 1, 0
            self.sampler.set_epoch(self.epoch)
            self._iterator = iter(self.loader)
            batch = next(self._iterator)
        self.taken += 1
        return batch

    def start_new_epoch(self):
        """Drop the rest of the current epoch: the next batch comes from a fresh shuffle (the next
        epoch's). A stream that has not yielded anything in its epoch stays where it is."""
        if self.taken:
            self.epoch, self.taken = self.epoch + 1, 0
            self._iterator = None

    def state_dict(self):
        return {"epoch": self.epoch, "taken": self.taken}

    def load_state_dict(self, state):
        self.epoch, self.taken = int(state["epoch"]), int(state["taken"])
        self._iterator = None
