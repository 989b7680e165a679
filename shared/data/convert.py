"""Shared steps of the converters: list a folder, read and check each image, count what is skipped."""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from shared.config import ConfigError
from shared.data.decode import decode_image, read_file
from shared.data.folder import FolderItem
from shared.data.skips import BadSample, SkipCounter


@dataclass
class ConverterOptions:
    """Options every folder converter (folder_to_shards, folder_to_lmdb) takes."""
    verify: bool = field(default=True,
                         metadata={"help": "decode each image fully (catches truncation); false = header only"})
    list_only: bool = field(default=False,
                            metadata={"help": "dry-run: print each image with its prompt, and counts; write nothing"})
    max_skip_rate: float = field(default=0.05,
                                 metadata={"help": "fail (listing the files) if more than this share of images is bad"})

_EXT = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp"}  # kept as is; others become PNG


@dataclass
class FolderRecord:
    item: FolderItem
    data: bytes  # encoded image, original bytes when the format is one webdataset readers expect
    ext: str
    width: int
    height: int
    image: Image.Image | None  # decoded RGB image when verify=True


def require(cfg, *keys: str) -> None:
    missing = [k for k in keys if not cfg[k]]
    if missing:
        raise ConfigError(f"missing required option(s): {', '.join(f'{k}=...' for k in missing)}")


def ordered(items: Sequence[FolderItem], shuffle: bool, seed: int) -> list[FolderItem]:
    """Items in write order; shuffled by default so a shard does not hold one folder's images only."""
    if not shuffle:
        return list(items)
    return [items[i] for i in np.random.default_rng(seed).permutation(len(items))]


def folder_records(root: str | Path, items: Sequence[FolderItem], skips: SkipCounter,
                   verify: bool = True, desc: str = "convert") -> Iterator[FolderRecord]:
    """Readable images with a prompt; every other image is recorded on `skips` with its reason."""
    root = Path(root)
    for item in tqdm(items, desc=desc, leave=False, disable=None, mininterval=5):
        skips.add_seen()
        name = str(root / item.path)
        try:
            if not item.prompt:
                raise BadSample("missing_caption", name, "no caption file, metadata caption or folder prompt")
            data = read_file(root / item.path)
            ext = _EXT.get(Path(item.path).suffix.lower())
            if verify or ext is None:
                img = decode_image(data, name)  # full decode: catches truncated files
            else:
                try:
                    img = Image.open(io.BytesIO(data))  # header only
                except (UnidentifiedImageError, OSError) as e:
                    raise BadSample("not_an_image", name, str(e).split(" <")[0]) from None
            if ext is None:
                buf = io.BytesIO()
                img.save(buf, format="PNG")
                data, ext = buf.getvalue(), "png"
        except BadSample as e:
            skips.record(e.reason, e.file, e.detail)
            continue
        yield FolderRecord(item, data, ext, img.size[0], img.size[1], img if verify else None)
