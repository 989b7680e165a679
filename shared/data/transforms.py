"""Image transforms (torchvision v2) and seeded caption dropout for classifier-free guidance.

    tf = image_transform(256, crop="random", hflip=0.5)      # PIL -> float (3, 256, 256) in [-1, 1]
    drop = CaptionDropout(p=0.1, seed=0)                    # drop(caption, key, epoch) -> caption or ""

Caption dropout is decided by a hash of (seed, epoch, sample key), not by a global RNG, so the same samples are
dropped whatever the number of workers or ranks and after a resume.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

CROPS = ("center", "random", "none")
_BYTE_MODES = ("L", "P", "RGB", "RGBA", "LA", "CMYK", "YCbCr", "LAB", "HSV")
RESIZES = ("short", "long")


def to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    """PIL image -> uint8 tensor (C, H, W) without torchvision (the loaders' default)."""
    if img.mode not in _BYTE_MODES:
        raise ValueError(f"to_uint8_tensor: mode {img.mode} is not 8 bits per channel; convert it first")
    w, h = img.size
    bands = img.getbands()
    out = torch.empty(len(bands), h, w, dtype=torch.uint8)
    planes = out.numpy().reshape(len(bands), -1)
    if len(bands) == 1:
        planes[0] = np.frombuffer(img.tobytes(), np.uint8)
    elif img.mode in ("RGB", "RGBA"):
        # PIL packs a single band per call, so the planes come out as (C, H, W) without a transposing copy
        # (half the cost of numpy's HWC -> CHW copy at 256 px)
        for i, band in enumerate(bands):
            planes[i] = np.frombuffer(img.tobytes("raw", band), np.uint8)
    else:
        for i, band in enumerate(img.split()):
            planes[i] = np.frombuffer(band.tobytes(), np.uint8)
    return out


def _size2(size: int | Sequence[int]) -> list[int]:
    return [int(size), int(size)] if isinstance(size, int) else [int(s) for s in size]


def random_resized_crop(size: int | Sequence[int], scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)):
    from torchvision.transforms import v2

    return v2.RandomResizedCrop(_size2(size), scale=scale, ratio=ratio, antialias=True)


def center_crop(size: int | Sequence[int]):
    """Resize the shorter side to the crop's larger side, then crop the centre (no stretching)."""
    from torchvision.transforms import v2

    h, w = _size2(size)
    return v2.Compose([v2.Resize(max(h, w), antialias=True), v2.CenterCrop([h, w])])


def resize_side(side: int, which: str = "short"):
    """Resize so the shorter (`which="short"`) or longer (`"long"`) side equals `side`; aspect ratio kept."""
    from torchvision.transforms import v2

    if which not in RESIZES:
        raise ValueError(f"resize_side: which={which!r}; expected one of {RESIZES}")
    return v2.Resize(side, antialias=True) if which == "short" else v2.Resize(None, max_size=side, antialias=True)


def hflip(p: float = 0.5):
    from torchvision.transforms import v2

    return v2.RandomHorizontalFlip(p)


def image_transform(size: int | Sequence[int], crop: str = "center", hflip_p: float = 0.0,
                    resize: str = "short", scale: tuple[float, float] = (0.08, 1.0),
                    ratio: tuple[float, float] = (3 / 4, 4 / 3), normalize: bool = True) -> Callable:
    """PIL image -> tensor (3, H, W): float in [-1, 1] if `normalize`, else uint8.

    crop="center": resize + centre crop to `size`; "random": random-resized crop to `size`;
    "none": only resize the `resize` side ("short" or "long") to `size` (an int), aspect kept.
    """
    from torchvision.transforms import v2

    if crop not in CROPS:
        raise ValueError(f"image_transform: crop={crop!r}; expected one of {CROPS}")
    steps: list = []
    if crop == "center":
        steps.append(center_crop(size))
    elif crop == "random":
        steps.append(random_resized_crop(size, scale, ratio))
    else:
        if not isinstance(size, int):
            raise ValueError("image_transform: crop='none' resizes one side; give size as an int")
        steps.append(resize_side(size, resize))
    if hflip_p > 0:
        steps.append(hflip(hflip_p))
    steps.append(v2.PILToTensor())
    if normalize:
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.5] * 3)]
    return v2.Compose(steps)


def keyed_uniform(seed: int, *parts) -> float:
    """A uniform number in [0, 1) fixed by (seed, *parts); the same in every process (unlike hash())."""
    h = hashlib.blake2b(repr((int(seed),) + tuple(parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2.0 ** 64


def keyed_seed(seed: int, *parts) -> int:
    return int(keyed_uniform(seed, "seed", *parts) * 2 ** 63)


class CaptionDropout:
    """Replace a caption with the empty one with probability `p` (classifier-free guidance training)."""

    def __init__(self, p: float, seed: int = 0, empty: str = ""):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"CaptionDropout: p={p} must be in [0, 1]")
        self.p, self.seed, self.empty = float(p), int(seed), empty

    def drops(self, key: str, epoch: int = 0) -> bool:
        return self.p > 0 and keyed_uniform(self.seed, "uncond", int(epoch), str(key)) < self.p

    def __call__(self, caption: str, key: str, epoch: int = 0) -> str:
        return self.empty if self.drops(key, epoch) else caption


def drop_condition(cond: torch.Tensor, empty: torch.Tensor, p: float,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-level dropout for tokens or embeddings: rows of `cond` (B, ...) become `empty` (...) with prob. p.

    Returns (new cond, boolean mask of dropped rows). Seeded through `generator`.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop_condition: p={p} must be in [0, 1]")
    mask = torch.rand(cond.shape[0], generator=generator, device="cpu") < p
    mask = mask.to(cond.device)
    shape = (-1,) + (1,) * (cond.dim() - 1)
    return torch.where(mask.view(shape), empty.to(cond.dtype).expand_as(cond), cond), mask
