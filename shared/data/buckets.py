"""Aspect-ratio buckets as a batch sampler for `ResumableLoader` (every batch from one bucket of similar shapes).

    buckets = make_buckets(512, multiple=64)                    # (h, w) pairs of ~512^2 pixels, ratios up to 2
    b = nearest_bucket(buckets, h, w)                           # the bucket of an h x w image
    loader = ResumableLoader(ds, 8, batch_sampler=BucketBatchSampler(item_bucket, 8, seed=0, rank=r, world_size=w))

Each epoch, a seeded permutation per bucket is cut into full global batches (batch_size x world_size), the batches
are shuffled together, and process r takes its r-th slice of each: W processes see exactly the samples one process
with batch B*W sees. A bucket's remainder (fewer than B*W images) waits for the next epoch's permutation.

Why not diffusers' training utilities: diffusers 0.42 has `generate_aspect_ratio_buckets` / `find_nearest_bucket`
(a fixed ladder of 11 aspect ratios) but no batch sampler; `make_buckets` keeps every shape whose sides are
multiples of `multiple` (a finer ladder: the lab's bucket set, which its cached latents and tests are keyed on).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch


def make_buckets(size: int, multiple: int, max_ratio: float = 2.0) -> list[tuple[int, int]]:
    """(h, w) pairs of about size*size pixels, sides multiples of `multiple`, aspect ratios up to max_ratio."""
    out = set()
    area = size * size
    w = multiple
    while w <= size * max_ratio:
        h = int(area / w) // multiple * multiple
        if h >= multiple and max(h / w, w / h) <= max_ratio:
            out.add((h, w))
            out.add((w, h))
        w += multiple
    out.add((size, size))
    return sorted(out)


def nearest_bucket(buckets: Sequence[tuple[int, int]], h: int, w: int) -> int:
    r = math.log(h / w)
    return min(range(len(buckets)), key=lambda i: (abs(math.log(buckets[i][0] / buckets[i][1]) - r), i))


class BucketBatchSampler:
    """Batches of item indices within buckets; `batches(epoch)` is a pure function of (seed, epoch, rank)."""

    def __init__(self, item_bucket: Sequence[int], batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        self.item_bucket, self.batch_size, self.seed = list(item_bucket), int(batch_size), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)

    def batches(self, epoch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        by_bucket: dict[int, list[int]] = {}
        for i, b in enumerate(self.item_bucket):
            by_bucket.setdefault(b, []).append(i)
        per_step = self.batch_size * self.world_size
        out = []
        for b in sorted(by_bucket):
            idx = by_bucket[b]
            perm = [idx[j] for j in torch.randperm(len(idx), generator=g).tolist()]
            out += [perm[k:k + per_step] for k in range(0, len(perm) - per_step + 1, per_step)]
        order = torch.randperm(len(out), generator=g).tolist()
        return [out[j][self.rank * self.batch_size:(self.rank + 1) * self.batch_size] for j in order]

    def __len__(self) -> int:
        return len(self.batches(0))

    def describe(self) -> str:
        return f"no bucket holds a full batch of {self.batch_size} x {self.world_size} processes"
