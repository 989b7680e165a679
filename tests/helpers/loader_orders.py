"""Batch orders of shared.data.ResumableLoader on every kind of data it serves, for the golden-order test.

    python tests/helpers/loader_orders.py write tests/data/loader_orders.json   # record (done once, see below)
    orders(workdir) -> {case: [[item ids of batch 0], [batch 1], ...]}   # what tests/test_loader_orders.py checks

Cases: in-memory tensors (a tensor, a tuple, a dict), a map-style Dataset read through a DataLoader (0 and 2
workers, with one bad item), the aspect-bucket batch sampler (BucketBatchSampler and sd_flux_lab's BucketBatches),
Trainer.loader(), and streamed FolderSource / ShardSource / LMDBSource data, over several (seed, epoch, rank,
world_size, batch_size, drop_last, num_workers). An item's id is its index (map-style) or its key (streams).

tests/data/loader_orders.json was recorded by this script at commit af2f3eb, with the two loaders of the time
(shared.data.DatasetLoader for map-style data, ResumableLoader for streams) before they became one class, so the
test proves the merged loader hands out every batch in the order each old one did (the toy tables depend on it).
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from shared.data import (BadSample, BucketBatchSampler, FolderSource, LMDBDataset, LMDBSource, LMDBWriter,
                         ResumableLoader, ShardSource, write_shards)
from shared.data.testing import encode, photo


class Indexed(torch.utils.data.Dataset):
    """Item i is the tensor i; `bad` items raise BadSample; `item_bucket` for the bucket sampler."""

    def __init__(self, n, bad=(), buckets=None):
        self.n, self.bad, self.item_bucket = n, set(bad), buckets

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i in self.bad:
            raise BadSample("truncated", f"item{i}.png")
        return torch.tensor(i)


def _ids(batch):
    if isinstance(batch, dict):
        return list(batch["key"]) if "key" in batch else batch["i"].tolist()
    if isinstance(batch, (tuple, list)):
        return batch[0].tolist()
    return batch.tolist()


def _epochs(loader, epochs):
    out = []
    for e in range(epochs):
        out += [_ids(b) for b in loader]
    return out


def map_cases():
    data = torch.arange(50)
    out = {}
    for seed in (0, 1, 7):
        for batch_size in (8, 3):
            for rank, world in ((0, 1), (0, 2), (1, 2), (2, 3)):
                for drop_last in (True, False):
                    name = f"tensor/s{seed}/b{batch_size}/r{rank}w{world}/drop{int(drop_last)}"
                    out[name] = _epochs(ResumableLoader(data, batch_size, seed=seed, rank=rank, world_size=world,
                                                        drop_last=drop_last), 3)
    one = dict(rank=0, world_size=1, drop_last=True)
    out["tensor/noshuffle/b8"] = _epochs(ResumableLoader(data, 8, shuffle=False, **one), 2)
    out["tuple/s1/b8"] = _epochs(ResumableLoader((data, data * 2), 8, seed=1, **one), 2)
    out["dict/s1/b8"] = _epochs(ResumableLoader({"i": data}, 8, seed=1, rank=1, world_size=2, drop_last=True), 2)
    for workers in (0, 2):
        out[f"dataset/s1/b8/w{workers}"] = _epochs(ResumableLoader(Indexed(50), 8, seed=1, num_workers=workers,
                                                                   **one), 2)
        loader = ResumableLoader(Indexed(50, bad=(3, 17, 40)), 4, seed=2, rank=1, world_size=2, drop_last=False,
                                 num_workers=workers, max_skip_rate=1.0)
        out[f"dataset_bad/s2/b4/r1w2/w{workers}"] = _epochs(loader, 2) + [[loader.skips.bad, loader.skips.seen]]
    buckets = [(i * 7) % 5 for i in range(60)]
    for seed in (0, 3):
        for batch_size in (2, 3):
            for rank, world in ((0, 1), (1, 2)):
                ds = Indexed(60, buckets=buckets)
                sampler = BucketBatchSampler(buckets, batch_size, seed, rank, world)
                out[f"buckets/s{seed}/b{batch_size}/r{rank}w{world}"] = _epochs(
                    ResumableLoader(ds, batch_size, seed=seed, rank=rank, world_size=world, batch_sampler=sampler), 3)
    from projects.sd_flux_lab.data import BucketBatches
    out["BucketBatches/s1/b3/r1w2"] = _epochs(BucketBatches(Indexed(60, buckets=buckets), 3, 1, 1, 2), 3)
    return out


def trainer_case(workdir: Path):
    from shared.train import TrainConfig, Trainer
    # `with`: a Trainer installs preemption signal handlers; leaving them set broke test_train's later checks
    with Trainer(TrainConfig(run_dir=str(workdir / "run"), seed=5, progress=False)) as trainer:
        return {"Trainer.loader/s5/b8": _epochs(trainer.loader((torch.arange(50),), 8), 3)}


def _write_folder(root: Path, n: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"{i:03d}.png").write_bytes(encode(photo(8, 8, i), "PNG"))
        (root / f"{i:03d}.txt").write_text(f"caption {i}")
    return root


def stream_cases(workdir: Path):
    folder = _write_folder(workdir / "folder", 23)
    shards = workdir / "shards"
    write_shards([{"__key__": f"{i:06d}", "png": encode(photo(8, 8, i), "PNG"), "txt": f"caption {i}"}
                  for i in range(42)], shards, shard_size=7)
    with LMDBWriter(workdir / "db") as w:
        for i in range(19):
            w.add(image=photo(8, 8, i), caption=f"caption {i}")
    out = {}
    for seed in (0, 3):
        for batch_size in (2, 4):
            for rank, world in ((0, 1), (1, 2)):
                for workers in ((0, 2) if seed else (0,)):  # worker processes are slow to start: fewer cases
                    for drop_last in (False, True):
                        tag = f"s{seed}/b{batch_size}/r{rank}w{world}/w{workers}/drop{int(drop_last)}"
                        kw = dict(seed=seed, rank=rank, world_size=world, num_workers=workers, drop_last=drop_last)
                        out[f"folder/{tag}"] = _epochs(ResumableLoader(FolderSource(folder), batch_size, **kw), 2)
                        out[f"shards/buf5/{tag}"] = _epochs(ResumableLoader(ShardSource(shards), batch_size,
                                                                            shuffle_buffer=5, **kw), 2)
    one = dict(rank=0, world_size=1)
    out["shards/default/b4"] = _epochs(ResumableLoader(ShardSource(shards), 4, **one), 2)
    out["shards/noshuffle/b4"] = _epochs(ResumableLoader(ShardSource(shards), 4, shuffle=False, **one), 1)
    out["lmdb/s1/b4/r0w1/w2"] = _epochs(ResumableLoader(LMDBSource(workdir / "db"), 4, seed=1, num_workers=2,
                                                        **one), 2)
    for workers in (0, 2):  # map-style LMDB, as dmd2 reads it through Trainer.loader()
        loader = ResumableLoader(LMDBDataset(workdir / "db"), 4, seed=1, rank=1, world_size=2, drop_last=True,
                                 num_workers=workers)
        out[f"lmdb_dataset/s1/b4/r1w2/w{workers}"] = _epochs(loader, 2)
    return out


def orders(workdir: Path) -> dict:
    return {**map_cases(), **trainer_case(workdir), **stream_cases(workdir)}


def digest(batches) -> str:
    return hashlib.sha256(json.dumps(batches).encode()).hexdigest()[:16]


def golden(workdir: Path) -> dict:
    """{case: {"first": its first two batches, "sha256": digest of every batch}} (small enough to commit)."""
    return {k: {"first": v[:2], "sha256": digest(v)} for k, v in sorted(orders(workdir).items())}


if __name__ == "__main__":
    import tempfile
    if sys.argv[1:2] != ["write"] or len(sys.argv) != 3:
        sys.exit("usage: python tests/helpers/loader_orders.py write OUT.json")
    with tempfile.TemporaryDirectory() as tmp:
        g = golden(Path(tmp))
        Path(sys.argv[2]).with_suffix(".full.json").write_text(json.dumps(orders(Path(tmp) / "again")))
    Path(sys.argv[2]).write_text(json.dumps(g, indent=0, sort_keys=True) + "\n")
    print(f"{len(g)} cases -> {sys.argv[2]}")
