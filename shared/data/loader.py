"""The resumable, rank- and worker-aware loader shared by every data source (shards, image folders, LMDB).

    loader = ResumableLoader(ShardSource("data/shards"), batch_size=64, num_workers=4, seed=0)
    loader.load_state_dict(ckpt["data"])          # after a restart: continue mid-epoch
    for batch in loader:                          # one epoch; batch = {"image": (B,...), "caption": [...], ...}
        ...
        ckpt["data"] = loader.state_dict()        # save with the model checkpoint

How an epoch is split. The source's units (shards, images or records) are permuted with (seed, epoch) and
dealt round-robin to the rank x worker streams: stream g = rank * num_workers + worker takes units g, g + G, ...
(G = world_size * num_workers), so every unit goes to exactly one stream. Shard streams then pass through a
seeded shuffle buffer. Everything is deterministic given (seed, epoch, rank, worker), so a stream's position is
just "how many raw samples it has consumed".

How resumption works. Each batch carries its stream's position; the loader records it when the batch is handed
to the training loop (not when a worker prefetches it), so state_dict() describes exactly what training has
consumed. A resumed stream replays its raw samples up to that position without decoding them and continues with
the next one. Skips reported during the replay were already counted before the checkpoint and are not counted
again. Resuming mid-epoch needs the same num_workers, world_size, seed and data; at an epoch boundary they may
change.

Bad data never stops an epoch: it is counted on `loader.skips` (a SkipCounter, saved in state_dict), and the
loader raises TooManyBadSamples, listing the files, when the bad share passes `max_skip_rate`.

Map-style data (tensors, LMDBDataset, sd_flux_lab's BucketedImages) goes through shared.data.DatasetLoader instead.
Why this stream loader is ours and not torchdata's StatefulDataLoader (pinned): StatefulDataLoader resumes an
IterableDataset only through the dataset's own state_dict(), per worker; webdataset's pipeline has none, so the
stream position (replayed without decoding), the shuffle buffer's seeded order, the rank x worker split and the skip
counts that travel with each batch would all still be written here, and its fast-forward of a map-style sampler
(re-drawing the skipped batches) is what DatasetLoader already does by indexing.
"""
from __future__ import annotations

import logging
import os
import random
from itertools import chain
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, default_collate, get_worker_info

from shared.data.skips import BadSample, Filtered, SkipCounter
from shared.data.transforms import CaptionDropout, keyed_seed

log = logging.getLogger("shared.data")
STATE_VERSION = 1


class Source(Protocol):
    buffered: bool  # True: units hold many samples in a fixed order (shards) -> use the shuffle buffer

    def units(self) -> Sequence: ...

    def fingerprint(self) -> str: ...

    def read(self, unit, report: Callable[[str, str, str], None]) -> Iterator: ...

    def decode(self, raw) -> dict: ...


def dist_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): explicit values, else RANK/WORLD_SIZE, else torch.distributed, else (0, 1)."""
    if rank is not None and world_size is not None:
        return int(rank), int(world_size)
    r, w, _, _ = wds.utils.pytorch_worker_info()
    return (int(rank) if rank is not None else r), (int(world_size) if world_size is not None else w)


def _permutation(n: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([int(seed), int(epoch), 0x5EED]).permutation(n)


def _as_is(x):
    return x


def _item_key(item) -> str:
    """A stable identity for a raw item (independent of where the data folder is mounted)."""
    if isinstance(item, dict):
        return f"{os.path.basename(str(item.get('__url__', '')))}:{item.get('__key__')}"
    if isinstance(item, tuple):
        return str(item[0])
    return repr(item)


class _EpochStream(IterableDataset):
    """One epoch of one rank, as seen by each DataLoader worker; yields (meta, batch) pairs."""

    def __init__(self, source: Source, *, epoch: int, starts: Sequence[int], rank: int, world_size: int,
                 num_workers: int, batch_size: int, shuffle: bool, shuffle_buffer: int, seed: int,
                 drop_last: bool, collate: Callable, uncond: CaptionDropout | None, seed_augment: bool):
        self.source, self.epoch, self.starts = source, epoch, list(starts)
        self.rank, self.world_size, self.num_workers = rank, world_size, max(1, num_workers)
        self.batch_size, self.shuffle, self.shuffle_buffer, self.seed = batch_size, shuffle, shuffle_buffer, seed
        self.drop_last, self.collate, self.uncond, self.seed_augment = drop_last, collate, uncond, seed_augment

    def __iter__(self):
        info = get_worker_info()
        worker = info.id if info is not None else 0
        if info is not None and info.num_workers != self.num_workers:
            raise RuntimeError(f"DataLoader has {info.num_workers} workers, the stream expects {self.num_workers}")
        g = self.rank * self.num_workers + worker
        streams = self.world_size * self.num_workers
        units = self.source.units()
        mine = [units[int(i)] for i in _permutation(len(units), self.seed, self.epoch, self.shuffle)[g::streams]]
        start = self.starts[worker]

        events: list[tuple[str, str, str]] = []
        replaying = [start > 0]
        lost = [0]  # samples lost before they became items (broken tar members): counted as seen and bad

        def report(reason: str, file: str, detail: str = "", count: int = 1) -> None:
            if not replaying[0]:  # replayed skips were counted before the checkpoint
                events.append((reason, file, detail, count))
                lost[0] += count

        raw = chain.from_iterable(self.source.read(u, report) for u in mine)
        if self.source.buffered and self.shuffle and self.shuffle_buffer > 1:
            rng = random.Random(keyed_seed(self.seed, "buffer", self.epoch, g))
            raw = wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)(raw)

        pos, seen, filtered, batch = 0, 0, {}, []
        in_worker = info is not None
        for item in raw:
            pos += 1
            if pos <= start:  # fast-forward without decoding
                if pos == start:
                    replaying[0] = False
                continue
            seen += 1
            try:
                sample = self._decode(item, in_worker)
            except BadSample as e:
                events.append((e.reason, e.file, e.detail))
                continue
            except Filtered as e:
                filtered[e.reason] = filtered.get(e.reason, 0) + 1
                continue
            batch.append(sample)
            if len(batch) == self.batch_size:
                yield self._meta(worker, pos, events, seen + lost[0], filtered), self._collate(batch)
                events, seen, filtered, batch, lost[0] = [], 0, {}, [], 0
        replaying[0] = False
        if batch and not self.drop_last:
            yield self._meta(worker, pos, events, seen + lost[0], filtered), self._collate(batch)
        elif events or seen or filtered or batch:
            # dropped samples are still consumed; the (None) batch carries the position and the skip reports
            yield self._meta(worker, pos, events, seen + lost[0], filtered), None

    def _decode(self, item, in_worker: bool) -> dict:
        if not self.seed_augment:
            sample = self.source.decode(item)
        else:
            # per-sample seed: augmentations do not depend on worker count or resumption; in the main process the
            # training RNG state is restored afterwards
            key = _item_key(item)
            state = None if in_worker else torch.random.get_rng_state()
            # the CPU generator only: torch.manual_seed also seeds every accelerator backend (~0.4 ms a call)
            torch.default_generator.manual_seed(keyed_seed(self.seed, "augment", self.epoch, key) % (2 ** 63))
            try:
                sample = self.source.decode(item)
            finally:
                if state is not None:
                    torch.random.set_rng_state(state)
        if self.uncond is not None and "caption" in sample:
            sample["caption"] = self.uncond(sample["caption"], sample.get("key", ""), self.epoch)
        return sample

    @staticmethod
    def _meta(worker, pos, events, seen, filtered) -> dict:
        return {"worker": worker, "pos": pos, "events": list(events), "seen": seen, "filtered": dict(filtered)}

    def _collate(self, batch: list[dict]) -> Any:
        try:
            return self.collate(batch)
        except RuntimeError as e:
            if "stack expects each tensor to be equal size" in str(e):
                raise RuntimeError(f"{e}: the images in a batch differ in size; give the source a transform that "
                                   f"crops to a fixed size (shared.data.image_transform)") from None
            raise


class ResumableLoader:
    """Batches from a source for this rank, one epoch per `iter()`, with state_dict()/load_state_dict().

    Args:
        source: ShardSource, FolderSource, LMDBSource, or anything with the Source protocol.
        batch_size: samples per batch (batches are built inside the workers).
        num_workers: DataLoader worker processes (0 = in this process).
        shuffle: permute units per epoch and, for shards, use a shuffle buffer of `shuffle_buffer` samples.
        seed: fixes unit order, buffer order, per-sample augmentation seeds and caption dropout.
        rank, world_size: default from RANK/WORLD_SIZE or torch.distributed.
        drop_last: drop each stream's last partial batch (its samples still count as consumed).
        uncond_p: caption dropout probability (caption -> "", seeded by (seed, epoch, key)).
        max_skip_rate: stop with TooManyBadSamples when more than this share of samples is bad, checked once
            `skip_check_after` samples were read and at every epoch end.
        seed_augment: seed the torch RNG per sample from (seed, epoch, key) before decode/transform.
    """

    def __init__(self, source: Source, batch_size: int, num_workers: int = 0, shuffle: bool = True,
                 shuffle_buffer: int = 1000, seed: int = 0, rank: int | None = None, world_size: int | None = None,
                 drop_last: bool = False, uncond_p: float = 0.0, collate_fn: Callable = default_collate,
                 max_skip_rate: float = 0.05, skip_check_after: int = 1000, seed_augment: bool = True,
                 pin_memory: bool = False, prefetch_factor: int | None = None, skips: SkipCounter | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}; must be >= 1")
        self.source = source
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.shuffle, self.shuffle_buffer, self.seed = shuffle, int(shuffle_buffer), int(seed)
        self.rank, self.world_size = dist_info(rank, world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank={self.rank} is outside world_size={self.world_size}")
        self.drop_last, self.collate_fn = drop_last, collate_fn
        self.uncond = CaptionDropout(uncond_p, seed) if uncond_p > 0 else None
        self.max_skip_rate, self.skip_check_after = float(max_skip_rate), int(skip_check_after)
        self.seed_augment, self.pin_memory, self.prefetch_factor = seed_augment, pin_memory, prefetch_factor
        self.skips = skips if skips is not None else SkipCounter()
        self.epoch = 0
        self.positions = [0] * self.streams_per_rank
        self._fingerprint = source.fingerprint()
        n_units, streams = len(source.units()), self.world_size * self.streams_per_rank
        if n_units < streams:
            log.warning("%s: %d units for %d rank x worker streams; some streams get no data", source, n_units,
                        streams)
        elif n_units % streams and source.buffered:
            log.warning("%s: %d shards do not divide evenly over %d rank x worker streams; ranks will see "
                        "different numbers of samples per epoch", source, n_units, streams)

    @property
    def streams_per_rank(self) -> int:
        return max(1, self.num_workers)

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its beginning at the next iter() (discards a mid-epoch position)."""
        self.epoch, self.positions = int(epoch), [0] * self.streams_per_rank

    def _stream(self) -> _EpochStream:
        return _EpochStream(self.source, epoch=self.epoch, starts=self.positions, rank=self.rank,
                            world_size=self.world_size, num_workers=self.num_workers, batch_size=self.batch_size,
                            shuffle=self.shuffle, shuffle_buffer=self.shuffle_buffer, seed=self.seed,
                            drop_last=self.drop_last, collate=self.collate_fn, uncond=self.uncond,
                            seed_augment=self.seed_augment)

    def __iter__(self) -> Iterator[Any]:
        kw = {}
        if self.num_workers > 0:
            kw = {"prefetch_factor": self.prefetch_factor or 2, "persistent_workers": False}
        # batches are built in the stream; _as_is skips DataLoader's per-item default_convert walk
        dl = DataLoader(self._stream(), batch_size=None, num_workers=self.num_workers, collate_fn=_as_is,
                        pin_memory=self.pin_memory, **kw)
        for meta, batch in dl:
            self.positions[meta["worker"]] = meta["pos"]
            self.skips.absorb(meta["events"], meta["seen"], meta["filtered"])
            self.skips.check(self.max_skip_rate, self.skip_check_after)
            if batch is not None:
                yield batch
        self.skips.check(self.max_skip_rate)
        if self.skips.counts or self.skips.filtered:
            log.warning("epoch %d (rank %d): %s", self.epoch, self.rank, self.skips.summary())
        self.epoch += 1
        self.positions = [0] * self.streams_per_rank

    def state_dict(self) -> dict:
        """JSON-able state: epoch, per-worker positions, the split it is valid for, and the skip counts."""
        return {"version": STATE_VERSION, "epoch": self.epoch, "positions": list(self.positions),
                "num_workers": self.num_workers, "rank": self.rank, "world_size": self.world_size,
                "seed": self.seed, "shuffle": self.shuffle, "shuffle_buffer": self.shuffle_buffer,
                "fingerprint": self._fingerprint, "skips": self.skips.to_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"loader state version {state.get('version')!r}; this code reads {STATE_VERSION}")
        self.skips.load_state_dict(state.get("skips", {}))
        self.epoch = int(state["epoch"])
        positions = [int(p) for p in state["positions"]]
        if not any(positions):
            self.positions = [0] * self.streams_per_rank  # epoch boundary: any split and data may follow
            return
        mine = {"num_workers": self.num_workers, "rank": self.rank, "world_size": self.world_size,
                "seed": self.seed, "shuffle": self.shuffle, "shuffle_buffer": self.shuffle_buffer,
                "fingerprint": self._fingerprint}
        if not self.source.buffered:
            del mine["shuffle_buffer"]  # unused by per-item sources
        diff = [f"{k}: saved {state.get(k)!r}, now {v!r}" for k, v in mine.items() if state.get(k) != v]
        if diff:
            raise ValueError("cannot resume mid-epoch with a different data split (it would repeat or skip "
                             "samples): " + "; ".join(diff) + ". Resume with the saved settings, or call "
                             "set_epoch(epoch + 1) to start the next epoch afresh.")
        self.positions = positions

    def __repr__(self) -> str:
        return (f"ResumableLoader({self.source!r}, batch_size={self.batch_size}, rank={self.rank}/"
                f"{self.world_size}, workers={self.num_workers}, epoch={self.epoch})")


def open_source(path: str | os.PathLike, **kw) -> Source:
    """A source for `path`: an LMDB folder (has manifest.json or data.mdb), shards (.tar files or a folder of
    them, brace/glob patterns), else an image folder. `kw` goes to the source's constructor."""
    from pathlib import Path

    from shared.data.folder import FolderSource
    from shared.data.lmdb_store import MANIFEST, LMDBSource
    from shared.data.shards import ShardSource

    p = Path(path)
    if p.is_dir() and ((p / MANIFEST).exists() or (p / "data.mdb").exists()):
        return LMDBSource(p, **kw)
    s = str(path)
    if s.endswith(".tar") or any(c in s for c in "{*?[") or (p.is_dir() and any(p.glob("*.tar"))):
        return ShardSource(s, **kw)
    return FolderSource(p, **kw)
