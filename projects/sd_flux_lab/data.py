"""Folder-structured picture collections for fine-tuning: prompts by shared.data's folder rules, aspect-ratio
buckets, SDXL size/crop conditioning, optional latent caching, and a resumable bucketed batch order.

    listing = shared.data.list_images(root)             # folder-name prompts, .cap/.txt overrides, `__` skips
    ds = BucketedImages(listing, size=512, buckets=True, crop="center"|"random", hflip=0.5)
    loader = BucketBatches(ds, batch_size, seed)        # every batch from one bucket; state_dict() resumes
    cached = cache_latents(ds, vae, path)               # LatentDataset: VAE posterior (mean, std) per image
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from shared.data import FolderListing, decode_image, read_file
from shared.data.transforms import keyed_uniform
from shared.io import atomic_path


def list_flag(argv: Sequence[str]) -> list[str]:
    """`--list` on a step's command line means `list=true` (a dry run listing images and prompts)."""
    return ["list=true" if a == "--list" else a for a in argv]


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


class BucketedImages(Dataset):
    """Images of a FolderListing as float (3, H, W) in [-1, 1], resized to cover their bucket and cropped.

    Each sample: pixels, caption, key, bucket, sizes = (orig_h, orig_w, crop_top, crop_left, target_h, target_w)
    (SDXL's micro-conditioning). Random crops and flips are fixed by (seed, epoch, key), so resumes repeat them."""

    CROPS = ("center", "random")

    def __init__(self, listing: FolderListing, size: int, *, buckets: bool = False, multiple: int = 8,
                 crop: str = "center", hflip: float = 0.0, seed: int = 0, max_ratio: float = 2.0):
        if crop not in self.CROPS:
            raise ValueError(f"crop={crop!r}; expected one of {', '.join(self.CROPS)}")
        missing = [i.path for i in listing.items if not i.prompt]
        if missing:
            raise ValueError(f"{listing.root}: {len(missing)} images have no prompt (no caption file, no folder "
                             f"name), e.g. {missing[:3]}")
        if not listing.items:
            raise ValueError(f"{listing.root}: no images")
        self.root, self.items = Path(listing.root), list(listing.items)
        self.size, self.crop, self.hflip, self.seed, self.epoch = size, crop, hflip, seed, 0
        self.buckets = make_buckets(size, multiple, max_ratio) if buckets else [(size, size)]
        self.item_bucket = []
        for it in self.items:
            if buckets:
                with Image.open(self.root / it.path) as im:
                    w, h = im.size
                self.item_bucket.append(nearest_bucket(self.buckets, h, w))
            else:
                self.item_bucket.append(0)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        it = self.items[i]
        img = decode_image(read_file(self.root / it.path), str(self.root / it.path))
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
        self.mean = {b: tensors[f"mean/{b}"] for b in set(self.item_bucket)}
        self.std = {b: tensors[f"std/{b}"] for b in set(self.item_bucket)}
        self.row, self.sizes = tensors["row"].tolist(), tensors["sizes"]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        it, b, r = self.images.items[i], self.item_bucket[i], self.row[i]
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
    for b, items in sorted(members.items()):
        means, stds = [], []
        for lo in range(0, len(items), batch_size):
            chunk = items[lo:lo + batch_size]
            batch = [images[i] for i in chunk]
            dist = vae.encode(torch.stack([s["pixels"] for s in batch]).to(device, vae.dtype)).latent_dist
            means.append(dist.mean.float().cpu())
            stds.append(dist.std.float().cpu())
            for j, (i, s) in enumerate(zip(chunk, batch)):
                row[i], sizes[i] = lo + j, s["sizes"]
        data[f"mean/{b}"], data[f"std/{b}"] = torch.cat(means).contiguous(), torch.cat(stds).contiguous()
    data.update(row=torch.tensor(row), sizes=torch.stack(sizes),
                key=torch.tensor(list(key.encode()), dtype=torch.uint8))
    with atomic_path(path) as tmp:
        save_file(data, str(tmp))
    return LatentDataset(data, images)


def _collate(samples: list[dict]) -> dict:
    out: dict[str, Any] = {}
    for k in samples[0]:
        vals = [s[k] for s in samples]
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else (
            torch.tensor(vals) if isinstance(vals[0], int) else vals)
    return out


class BucketBatches:
    """Batches drawn within buckets: each epoch, a seeded permutation per bucket is cut into full batches and the
    batches are shuffled together. State = (epoch, batches handed out), so a resumed run continues the order."""

    def __init__(self, dataset, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = self.batch = 0
        if len(self) == 0:
            raise ValueError(f"no bucket holds a full batch of {batch_size} x {world_size} processes "
                             f"({len(dataset)} images); lower batch_size")

    def _batches(self, epoch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        by_bucket: dict[int, list[int]] = {}
        for i, b in enumerate(self.dataset.item_bucket):
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
        return len(self._batches(0))

    def __iter__(self) -> Iterator[dict]:
        if hasattr(self.dataset, "epoch"):
            self.dataset.epoch = self.epoch
        for idx in self._batches(self.epoch)[self.batch:]:
            self.batch += 1
            yield _collate([self.dataset[i] for i in idx])
        self.epoch += 1
        self.batch = 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch, "num_items": len(self.dataset)}

    def load_state_dict(self, state: Mapping) -> None:
        if int(state.get("num_items", len(self.dataset))) != len(self.dataset):
            raise ValueError(f"the dataset changed since the checkpoint ({state['num_items']} -> "
                             f"{len(self.dataset)} images); the data order cannot be resumed")
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
