"""Folder-structured picture collections for fine-tuning: prompts by shared.data's folder rules, aspect-ratio
buckets, SDXL size/crop conditioning, optional latent caching, and a resumable bucketed batch order.

    listing = shared.data.list_images(root)             # folder-name prompts, .cap/.txt overrides, `__` skips
    ds = BucketedImages(listing, size=512, buckets=True, crop="center"|"random", hflip=0.5, min_size=16)
    loader = BucketBatches(ds, batch_size, seed)        # shared.data.ResumableLoader + BucketBatchSampler
    cached = cache_latents(ds, vae, path)               # LatentDataset: VAE posterior (mean, std) per image
    print(skip_summary(ds, loader))                     # what was left out and why

Bad files go through shared.data's skip-and-count path: BucketedImages probes every image's header when it is
built (a dangling link, an empty file, text named .png, an image below `min_size` are left out and counted on
`ds.skips`); an image whose pixel data is cut short fails when decoded and is skipped and counted by the loader.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from shared.data import (BadSample, BucketBatchSampler, Filtered, FolderListing, ResumableLoader, SkipCounter,
                         check_images, decode_image, make_buckets, nearest_bucket, probe_image, read_file)
from shared.data.transforms import keyed_uniform
from shared.io import atomic_path


def list_flag(argv: Sequence[str]) -> list[str]:
    """`--list` on a step's command line means `list=true` (a dry run listing images and prompts)."""
    return ["list=true" if a == "--list" else a for a in argv]


class BucketedImages(Dataset):
    """Images of a FolderListing as float (3, H, W) in [-1, 1], resized to cover their bucket and cropped.

    Each sample: pixels, caption, key, bucket, sizes = (orig_h, orig_w, crop_top, crop_left, target_h, target_w)
    (SDXL's micro-conditioning). Random crops and flips are fixed by (seed, epoch, key), so resumes repeat them."""

    CROPS = ("center", "random")

    def __init__(self, listing: FolderListing, size: int, *, buckets: bool = False, multiple: int = 8,
                 crop: str = "center", hflip: float = 0.0, seed: int = 0, max_ratio: float = 2.0,
                 min_size: int = 0):
        if crop not in self.CROPS:
            raise ValueError(f"crop={crop!r}; expected one of {', '.join(self.CROPS)}")
        missing = [i.path for i in listing.items if not i.prompt]
        if missing:
            raise ValueError(f"{listing.root}: {len(missing)} images have no prompt (no caption file, no folder "
                             f"name), e.g. {missing[:3]}")
        self.root, self.min_size = Path(listing.root), min_size
        self.size, self.crop, self.hflip, self.seed, self.epoch = size, crop, hflip, seed, 0
        self.buckets = make_buckets(size, multiple, max_ratio) if buckets else [(size, size)]
        self.skips = SkipCounter()  # images left out when listed (header probe); decode failures: the loader's
        self.items, self.item_bucket = [], []
        for it in listing.items:
            self.skips.add_seen()
            try:
                w, h = probe_image(self.root / it.path, min_size)
            except BadSample as e:
                self.skips.record(e.reason, e.file, e.detail)
                continue
            except Filtered as e:
                self.skips.record_filtered(e.reason)
                continue
            self.items.append(it)
            self.item_bucket.append(nearest_bucket(self.buckets, h, w) if buckets else 0)
        if not self.items:
            raise ValueError(f"{listing.root}: no usable images ({self.skips.summary()})"
                             + (f"\n{self.skips.listing()}" if self.skips.counts else ""))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        it = self.items[i]
        img = decode_image(read_file(self.root / it.path), str(self.root / it.path), min_size=self.min_size)
        th, tw = self.buckets[self.item_bucket[i]]
        w, h = img.size
        scale = max(th / h, tw / w)  # cover the bucket, then crop the excess
        rh, rw = max(th, round(h * scale)), max(tw, round(w * scale))
        img = img.resize((rw, rh), Image.BICUBIC)
        if self.crop == "random":
            top = int(keyed_uniform(self.seed, "top", self.epoch, it.path) * (rh - th + 1))
            left = int(keyed_uniform(self.seed, "left", self.epoch, it.path) * (rw - tw + 1))
        else:
            top, left = (rh - th) // 2, (rw - tw) // 2
        img = img.crop((left, top, left + tw, top + th))
        x = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1
        if self.hflip and keyed_uniform(self.seed, "flip", self.epoch, it.path) < self.hflip:
            x = x.flip(-1)
        return {"pixels": x, "caption": it.prompt, "key": it.path, "bucket": self.item_bucket[i],
                "sizes": torch.tensor([h, w, top, left, th, tw])}

    def first_good(self, n: int) -> list[dict]:
        """The first `n` samples that decode (evaluation and statistics at the end of a run skip bad files too)."""
        out = []
        for i in range(len(self)):
            if len(out) == n:
                break
            try:
                out.append(self[i])
            except (BadSample, Filtered):
                continue
        return out

    def fingerprint(self) -> str:
        h = hashlib.sha256(repr((self.size, self.crop, self.buckets, self.item_bucket)).encode())
        for it in self.items:
            h.update(f"{it.path}\0{it.prompt}\n".encode())
        return h.hexdigest()[:16]


class LatentDataset(Dataset):
    """Cached VAE posteriors, one (mean, std) tensor pair per aspect-ratio bucket (latent shapes differ between
    buckets); a sample draws latents = mean + std * noise at training time (loss side)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], images: BucketedImages):
        self.images = images
        self.item_bucket, self.buckets = images.item_bucket, images.buckets
        self.mean = {b: tensors[f"mean/{b}"] for b in set(self.item_bucket) if f"mean/{b}" in tensors}
        self.std = {b: tensors[f"std/{b}"] for b in set(self.item_bucket) if f"std/{b}" in tensors}
        self.row, self.sizes = tensors["row"].tolist(), tensors["sizes"]
        self.bad = {it.path: "undecodable" for it, r in zip(images.items, self.row) if r < 0}

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        it, b, r = self.images.items[i], self.item_bucket[i], self.row[i]
        if r < 0:  # could not be decoded when the cache was built: skipped (and counted) like an uncached read
            raise BadSample(self.bad.get(it.path, "undecodable"), str(self.images.root / it.path), "not cached")
        return {"latent_mean": self.mean[b][r], "latent_std": self.std[b][r], "caption": it.prompt, "key": it.path,
                "bucket": b, "sizes": self.sizes[i]}


@torch.no_grad()
def cache_latents(images: BucketedImages, vae, path: str | Path, batch_size: int = 64) -> LatentDataset:
    """Encode every image once into `path` (safetensors), reused while the images and the VAE are the same.
    Caching fixes the augmentation (the crop/flip of epoch 0). Images are encoded bucket by bucket."""
    path = Path(path)
    vae_id = hashlib.sha256(b"".join(p.detach().float().cpu().numpy().tobytes()[:4096]
                                     for p in list(vae.parameters())[:8])).hexdigest()[:12]
    key = f"{images.fingerprint()}-{vae_id}"
    if path.is_file():
        try:
            data = load_file(str(path))
            if data.get("key") is not None and bytes(data["key"].tolist()).decode() == key:
                return LatentDataset(data, images)
        except Exception:  # a stale or broken cache is rebuilt
            pass
    device = next(vae.parameters()).device
    members: dict[int, list[int]] = {}
    for i, b in enumerate(images.item_bucket):
        members.setdefault(b, []).append(i)
    data: dict[str, torch.Tensor] = {}
    row = [0] * len(images)
    sizes: list[torch.Tensor | None] = [None] * len(images)
    th, tw = images.buckets[0]
    for b, items in sorted(members.items()):
        means, stds, n = [], [], 0
        for lo in range(0, len(items), batch_size):
            batch, good = [], []
            for i in items[lo:lo + batch_size]:
                try:
                    batch.append(images[i])
                    good.append(i)
                except (BadSample, Filtered):  # left out of the cache; the loader skips and counts it each epoch
                    row[i], sizes[i] = -1, torch.tensor([0, 0, 0, 0, th, tw])
            if not batch:
                continue
            dist = vae.encode(torch.stack([s["pixels"] for s in batch]).to(device, vae.dtype)).latent_dist
            means.append(dist.mean.float().cpu())
            stds.append(dist.std.float().cpu())
            for i, s in zip(good, batch):
                row[i], sizes[i] = n, s["sizes"]
                n += 1
        if means:
            data[f"mean/{b}"], data[f"std/{b}"] = torch.cat(means).contiguous(), torch.cat(stds).contiguous()
    data.update(row=torch.tensor(row), sizes=torch.stack(sizes),
                key=torch.tensor(list(key.encode()), dtype=torch.uint8))
    with atomic_path(path) as tmp:
        save_file(data, str(tmp))
    return LatentDataset(data, images)


def BucketBatches(dataset, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> ResumableLoader:
    """The lab's loader: shared.data.ResumableLoader with batches drawn within the dataset's aspect-ratio buckets
    (each epoch a seeded permutation per bucket, cut into full batches, the batches shuffled together).
    Resumable; decode failures are skipped and counted on `.skips`."""
    return ResumableLoader(dataset, batch_size, seed=seed, rank=rank, world_size=world_size,
                           batch_sampler=BucketBatchSampler(dataset.item_bucket, batch_size, seed, rank, world_size))


def skip_summary(images: BucketedImages, loader: ResumableLoader | None = None) -> str:
    """One paragraph for the run's end: images left out when listed, samples skipped while training, and why."""
    lines = [f"listing: {images.skips.summary()}"]
    if images.skips.counts:
        lines.append(images.skips.listing())
    if loader is not None:
        lines.append(f"training: {loader.skips.summary()}")
        if loader.skips.counts:
            lines.append(loader.skips.listing())
    return "\n".join(lines)


def list_report(listing: FolderListing, min_size: int = 0) -> tuple[str, dict]:
    """`list=true`: every image with its prompt, then every image a run would skip (each one decoded) and why."""
    counter, why = check_images(listing.root, [i.path for i in listing.items], min_size)
    *lines, total = listing.report().splitlines()  # the counts line stays last
    lines += [f"would skip {path}: {reason}" for path, reason in sorted(why.items())]
    lines += [f"check (every image decoded, min_size={min_size}): {counter.summary()}", total]
    counts = {**listing.counts, "would_skip": counter.bad, "would_filter": sum(counter.filtered.values()),
              "skip_reasons": dict(sorted(counter.counts.items())), "filter_reasons": dict(counter.filtered)}
    return "\n".join(lines), counts
