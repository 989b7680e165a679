"""Images for the tokenizer steps: WebDataset shards (from convert_to_wds.py / prepare.py) or an image folder.

    source = image_source("data/toy/titok_rar/digits/shards/train", size=32, random_crop=False, random_flip=False)
    loader = ResumableLoader(source, batch_size=64, ...)
    for batch in loader: images = to_unit(batch["image"]); labels = batch["label"]

Images come out as float tensors in [0, 1] (the range TiTok and the MaskGIT-VQGAN read), resized on the short
side and centre- or randomly cropped (the original's preprocessing: resize_shorter_edge, crop_size, random_crop,
random_flip). Samples carry `label` (class index, from the shard's JSON; -1 when there is none) and `caption`.
Corrupt samples are skipped and counted by shared.data (ResumableLoader's `skips`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from shared.data import open_source


class _Transform:
    """PIL -> uint8 (3, S, S): short side to `resize`, then a centre or random `crop` square, optional flip."""
    def __init__(self, resize: int, crop: int, random_crop: bool, random_flip: bool):
        self.resize, self.crop, self.random_crop, self.random_flip = resize, crop, random_crop, random_flip

    def __call__(self, img):
        from torchvision.transforms import v2
        steps = [v2.Resize(self.resize, antialias=True),
                 (v2.RandomCrop if self.random_crop else v2.CenterCrop)(self.crop)]
        if self.random_flip:
            steps.append(v2.RandomHorizontalFlip(0.5))
        steps.append(v2.PILToTensor())
        return v2.Compose(steps)(img.convert("RGB"))


def image_source(path: str, size: int, resize: int = 0, random_crop: bool = False, random_flip: bool = False,
                 transform: Any = None, caption_key: str = "json:caption"):
    """A shared.data source over shards / LMDB / an image folder, giving uint8 images and labels. `caption_key`:
    where shards keep the caption ("json:caption" as ours; "txt" in img2dataset / DataComp shards)."""
    if not path:
        raise ValueError("dataset: no data path (dataset.params.train_shards_path_or_url or data=...)")
    tf = transform or _Transform(resize or size, size, random_crop, random_flip)
    return open_source(path, transform=tf, **_extra_keys(path, caption_key))


def _extra_keys(path: str, caption_key: str = "json:caption") -> dict:
    p = Path(path)
    is_shards = str(path).endswith(".tar") or any(c in str(path) for c in "{*?[") or (p.is_dir() and any(p.glob("*.tar")))
    # shards: the class index and caption live in <key>.json; folders: caption from .txt / metadata.jsonl
    return {"extra_keys": ("label",), "caption_key": caption_key, "allow_empty_caption": True} if is_shards else {}


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B,3,H,W) -> float [0,1]."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


def labels_of(batch: dict, n: int) -> torch.Tensor:
    lab = batch.get("label")
    if lab is None:
        return torch.full((n,), -1, dtype=torch.long)
    return torch.as_tensor(lab).long().reshape(n)
