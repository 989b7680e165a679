"""Training data for GLIDE fine-tuning through shared.data: image+caption folders or WebDataset shards.

    source = make_source("data/pics", side=64)                                         # folder: <id>.png + <id>.txt
    source = make_source("shards/{00000..00099}.tar", side=64, use_webdataset=True, wds_dataset_name="laion",
                         data_filter=GlideFilter(min_size=256, min_similarity=0.3))
    loader = make_loader(source, batch_size=4, uncond_p=0.2, seed=0, rank=0, world_size=1)

WebDataset layouts (`wds_dataset_name`, as glide-finetune names them): which member holds the caption and the
image, and which metadata filters apply. `wds_caption_key` / `wds_image_key` override the layout's keys.
Filtered samples (NSFW, too small, aspect ratio, CLIP similarity outside bounds, duplicate captions/URLs through
`DedupFilter`'s Bloom filter) are counted under `filtered`, corrupt ones under the loader's skip counter; neither
stops a run (shared.data). `trim_white=True` crops white margins before the crop.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

from shared.data import FolderSource, ResumableLoader, SampleFilter, ShardSource, image_transform
from shared.data.skips import Filtered


@dataclass(frozen=True)
class WdsLayout:
    caption_key: str
    image_key: str
    drop_nsfw: bool = False  # the layout's metadata has an NSFW field
    description: str = ""


WDS_LAYOUTS: dict[str, WdsLayout] = {
    "laion": WdsLayout("txt", "jpg", drop_nsfw=True,
                       description="LAION (img2dataset): <key>.jpg, <key>.txt, <key>.json with NSFW, similarity, "
                                   "width, height"),
    "alamy": WdsLayout("txt", "jpg", description="Alamy scrape: <key>.jpg + <key>.txt, no metadata filters"),
    "synthetic": WdsLayout("txt", "png", description="generated images: <key>.png + <key>.txt"),
}


@dataclass
class GlideFilter(SampleFilter):
    """shared.data's SampleFilter plus LAION's CLIP-similarity bounds (0 = no bound). A sample whose metadata
    has no similarity field passes (folders and synthetic shards have none)."""
    min_similarity: float = 0.0
    max_similarity: float = 0.0
    similarity_key: str = "similarity"

    def check_meta(self, meta: dict) -> None:
        super().check_meta(meta)
        s = meta.get(self.similarity_key)
        if s is None:
            return
        s = float(s)
        if self.min_similarity and s < self.min_similarity:
            raise Filtered("similarity_low")
        if self.max_similarity and s > self.max_similarity:
            raise Filtered("similarity_high")


class BloomFilter:
    """A set of strings in `bits` bits with `hashes` hash functions; `add` says whether the string was (probably)
    seen before. False-positive rate after n insertions: (1 - exp(-k n / m))^k; `for_capacity` sizes it."""

    def __init__(self, bits: int, hashes: int):
        if bits < 8 or hashes < 1:
            raise ValueError("BloomFilter needs bits >= 8 and hashes >= 1")
        self.bits, self.hashes = int(bits), int(hashes)
        self.array = bytearray((self.bits + 7) // 8)
        self.count = 0

    @classmethod
    def for_capacity(cls, n: int, fp_rate: float) -> "BloomFilter":
        m = math.ceil(-n * math.log(fp_rate) / math.log(2) ** 2)
        return cls(max(8, m), max(1, round(m / n * math.log(2))))

    def false_positive_rate(self, n: int | None = None) -> float:
        n = self.count if n is None else n
        return (1 - math.exp(-self.hashes * n / self.bits)) ** self.hashes

    def _positions(self, text: str):
        d = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
        h1, h2 = int.from_bytes(d[:8], "little"), int.from_bytes(d[8:], "little") | 1
        return [(h1 + i * h2) % self.bits for i in range(self.hashes)]  # double hashing

    def __contains__(self, text: str) -> bool:
        return all(self.array[p // 8] >> (p % 8) & 1 for p in self._positions(text))

    def add(self, text: str) -> bool:
        """Insert `text`; True if it was (probably) there already."""
        seen = True
        for p in self._positions(text):
            byte, bit = divmod(p, 8)
            if not self.array[byte] >> bit & 1:
                seen = False
                self.array[byte] |= 1 << bit
        self.count += not seen
        return seen


@dataclass
class DedupFilter(GlideFilter):
    """GlideFilter that also drops repeated captions and/or URLs (metadata `url_key`) with a Bloom filter sized for
    `dedup_capacity` items at `dedup_fp_rate` false positives (a unique sample wrongly dropped with that
    probability). The filter lives in each loader stream (worker), so duplicates that land in different workers
    or ranks are not caught, and its state is not checkpointed: after a resume it starts empty."""
    dedup_captions: bool = False
    dedup_urls: bool = False
    url_key: str = "url"
    dedup_capacity: int = 1_000_000
    dedup_fp_rate: float = 1e-4
    _bloom: BloomFilter | None = field(default=None, init=False, repr=False)

    def _seen(self, text: str) -> bool:
        if self._bloom is None:
            self._bloom = BloomFilter.for_capacity(self.dedup_capacity, self.dedup_fp_rate)
        return self._bloom.add(text)

    def check_meta(self, meta: dict) -> None:
        super().check_meta(meta)
        url = meta.get(self.url_key)
        if self.dedup_urls and url and self._seen("url\0" + str(url)):
            raise Filtered("duplicate_url")

    def check_caption(self, caption: str) -> None:
        super().check_caption(caption)
        if self.dedup_captions and caption and self._seen("caption\0" + " ".join(caption.lower().split())):
            raise Filtered("duplicate_caption")


def trim_white_border(img, threshold: int = 245, min_keep: float = 0.25):
    """Crop away uniform near-white margins (product photos on white): the bounding box of pixels with any channel
    below `threshold`. Kept as is when nothing or almost nothing (< min_keep of the area) would remain."""
    import numpy as np

    arr = np.asarray(img.convert("RGB"))
    content = (arr < threshold).any(axis=2)
    rows, cols = np.flatnonzero(content.any(axis=1)), np.flatnonzero(content.any(axis=0))
    if not len(rows):
        return img
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    if (box[2] - box[0]) * (box[3] - box[1]) < min_keep * arr.shape[0] * arr.shape[1]:
        return img
    return img.crop(box)


class _TrimThen:
    """trim_white_border, then `inner` (a class, not a closure, so DataLoader workers can pickle it)."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, img):
        return self.inner(trim_white_border(img))


def make_source(data_dir: str, side: int, *, use_webdataset: bool = False, wds_dataset_name: str = "laion",
                wds_caption_key: str = "", wds_image_key: str = "", crop: str = "random", resize_ratio: float = 1.0,
                data_filter: GlideFilter | None = None, trim_white: bool = False):
    """A shared.data source yielding {"image": (3, side, side) in [-1, 1], "caption": str, "key": str}.
    crop="random": random-resized crop keeping at least `resize_ratio` of the area (glide-finetune's
    resize_ratio); "center": resize the short side and crop the centre."""
    if crop not in ("random", "center"):
        raise ValueError(f"crop={crop!r}; expected random or center")
    if not 0 < resize_ratio <= 1:
        raise ValueError(f"resize_ratio={resize_ratio}; expected a fraction of the image area in (0, 1]")
    transform = image_transform(side, crop=crop, scale=(resize_ratio, 1.0))
    if trim_white:
        transform = _TrimThen(transform)
    if use_webdataset:
        if wds_dataset_name not in WDS_LAYOUTS:
            raise ValueError(f"wds_dataset_name={wds_dataset_name!r}; known layouts: {', '.join(WDS_LAYOUTS)}")
        layout = WDS_LAYOUTS[wds_dataset_name]
        filt = data_filter or GlideFilter()
        if layout.drop_nsfw:
            filt.drop_nsfw = True
        return ShardSource(data_dir, transform=transform, image_keys=(wds_image_key or layout.image_key,),
                           caption_key=wds_caption_key or layout.caption_key, filter=filt)
    if not Path(data_dir).is_dir():
        raise FileNotFoundError(f"data_dir={data_dir}: not a folder of images with caption files "
                                f"(for WebDataset shards pass use_webdataset=true)")
    return FolderSource(data_dir, transform=transform)


def make_loader(source, batch_size: int, *, uncond_p: float, seed: int, rank: int, world_size: int,
                num_workers: int = 0, max_skip_rate: float = 0.05) -> ResumableLoader:
    """Seeded, sharded over ranks, resumable mid-epoch; `uncond_p` of the captions become "" (the empty prompt
    GLIDE's classifier-free guidance is trained with), decided per (seed, epoch, sample key)."""
    return ResumableLoader(source, batch_size, num_workers=num_workers, seed=seed, uncond_p=uncond_p, rank=rank,
                           world_size=world_size, drop_last=True, max_skip_rate=max_skip_rate)
