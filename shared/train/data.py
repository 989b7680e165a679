"""A data loader whose order is a pure function of (seed, epoch) and that resumes mid-epoch.

Every epoch draws one permutation of the dataset from (seed, epoch). Global batch g takes items
perm[g*B*W : (g+1)*B*W] (B = per-process batch, W = processes) and process r gets its r-th slice of B, so W
processes with batch B see exactly the samples one process with batch B*W sees. The state is (epoch, batches handed
out), counted when a batch is yielded, so worker prefetching never makes a resumed run skip or repeat data.

Datasets: a tensor, a tuple/list/dict of equally long tensors (indexed in one go: fast for small in-memory data),
or any map-style `torch.utils.data.Dataset` (read through a `DataLoader`, so `num_workers` and `collate_fn` apply).
For WebDataset shards, LMDB and image folders use `shared.data.ResumableLoader`; `Trainer.batches()` takes either.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping

import torch
from torch.utils.data import DataLoader


def _tensor_length(data: Any) -> int | None:
    if isinstance(data, torch.Tensor):
        return len(data)
    if isinstance(data, (tuple, list)) and data and all(isinstance(t, torch.Tensor) for t in data):
        lengths = {len(t) for t in data}
    elif isinstance(data, Mapping) and data and all(isinstance(t, torch.Tensor) for t in data.values()):
        lengths = {len(t) for t in data.values()}
    else:
        return None
    if len(lengths) != 1:
        raise ValueError(f"tensors of a dataset must have the same length, got {sorted(lengths)}")
    return lengths.pop()


def _take(data: Any, idx: torch.Tensor) -> Any:
    if isinstance(data, torch.Tensor):
        return data[idx]
    if isinstance(data, Mapping):
        return {k: v[idx] for k, v in data.items()}
    return type(data)([t[idx] for t in data])


class DatasetLoader:
    """Iterate one epoch per `iter()`; `state_dict()`/`load_state_dict()` resume at the next unseen batch."""

    def __init__(self, dataset: Any, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = True, rank: int = 0, world_size: int = 1, num_workers: int = 0,
                 collate_fn: Callable | None = None, pin_memory: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        self.dataset, self.batch_size, self.seed, self.shuffle = dataset, batch_size, seed, shuffle
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size
        self.num_workers, self.collate_fn, self.pin_memory = num_workers, collate_fn, pin_memory
        self._tensor_len = _tensor_length(dataset)
        self.num_items = self._tensor_len if self._tensor_len is not None else len(dataset)
        self.epoch = 0
        self.batch = 0  # batches of the current epoch already handed out
        if len(self) == 0:
            raise ValueError(f"dataset of {self.num_items} items gives no batch of {batch_size} x {world_size} "
                             f"processes with drop_last={drop_last}")

    def __len__(self) -> int:
        """Batches per epoch (per process)."""
        per_step = self.batch_size * self.world_size
        return self.num_items // per_step if self.drop_last else -(-self.num_items // per_step)

    def _order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_items)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_items, generator=gen)

    def _batches(self, epoch: int, start: int) -> list[torch.Tensor]:
        order, per_step, n = self._order(epoch), self.batch_size * self.world_size, len(self)
        if not self.drop_last and n * per_step > self.num_items:
            if self.world_size > 1:  # pad by wrapping around, so every process gets a full, equal batch
                order = torch.cat([order, order[: n * per_step - self.num_items]])
        out = []
        for g in range(start, n):
            lo = g * per_step + self.rank * self.batch_size
            out.append(order[lo:lo + self.batch_size])
        return out

    def __iter__(self) -> Iterator[Any]:
        batches = self._batches(self.epoch, self.batch)
        if self._tensor_len is not None:
            source: Iterator[Any] = (_take(self.dataset, idx) for idx in batches)
        else:
            source = iter(DataLoader(self.dataset, batch_sampler=[b.tolist() for b in batches],
                                     num_workers=self.num_workers, collate_fn=self.collate_fn,
                                     pin_memory=self.pin_memory))
        for batch in source:
            self.batch += 1
            yield batch
        self.epoch += 1
        self.batch = 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch, "seed": self.seed, "num_items": self.num_items,
                "batch_size": self.batch_size, "world_size": self.world_size}

    def load_state_dict(self, state: Mapping) -> None:
        for key in ("seed", "num_items"):
            if state.get(key, getattr(self, key)) != getattr(self, key):
                raise ValueError(f"data loader {key} changed since the checkpoint "
                                 f"({state[key]} -> {getattr(self, key)}); the data order cannot be resumed")
        same_layout = (state.get("batch_size"), state.get("world_size")) == (self.batch_size, self.world_size)
        self.epoch = int(state["epoch"])
        # With another batch layout the mid-epoch position means other samples; start the next epoch instead.
        self.batch = int(state["batch"]) if same_layout else 0
        if not same_layout and int(state["batch"]) > 0:
            self.epoch += 1

