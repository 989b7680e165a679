"""Convert an image folder with captions into an LMDB database (read with shared.data.LMDBDataset).

    python shared/data/folder_to_lmdb.py src=path/to/images out_dir=data/toy/images.lmdb
    python shared/data/folder_to_lmdb.py src=path/to/images out_dir=data/toy/images.lmdb image_mode=array size=64
    python -m shared.data.folder_to_lmdb src=path/to/images list_only=true   # dry-run: images, prompts, counts

Fields per record: image, caption, key (relative path), and the folder's metadata.jsonl fields (e.g. digit,
colour). image_mode=encoded stores the original file bytes (decoded on read); image_mode=array stores
uint8 (H, W, 3) arrays, centre-cropped and resized to `size` (size=0: all images must share one size),
so reading costs no decode. Bad images and images without a prompt are skipped and listed in skips.json;
the conversion fails, listing them, past max_skip_rate.
Outputs (written into a temp folder, then renamed): out_dir/{data.mdb, manifest.json, skips.json, config.yaml}.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from shared.config import ConfigError, cli, resolve, save_resolved
from shared.data.convert import ConverterOptions, folder_records, ordered, require
from shared.data.folder import list_images
from shared.data.lmdb_store import LMDBWriter
from shared.data.skips import SkipCounter

MODES = ("encoded", "array")


@dataclass
class Config(ConverterOptions):
    src: str = field(default="", metadata={"help": "image folder"})
    out_dir: str = field(default="", metadata={"help": "the database folder"})
    scale: str = "toy"
    image_mode: str = field(default="encoded", metadata={"help": "encoded (original file bytes) | array (uint8 H,W,3)"})
    size: int = field(default=0,
                      metadata={"help": "array mode: centre-crop + resize to size x size; 0 = keep (one size needed)"})
    shuffle: bool = field(default=False, metadata={"help": "shuffle write order (random access makes it irrelevant)"})
    seed: int = 0


PRESETS = {"tiny": {}, "toy": {}, "paper": {}}


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    require(cfg, "src")
    if cfg.image_mode not in MODES:
        raise ConfigError(f"bad value for 'image_mode': {cfg.image_mode!r}; allowed: {', '.join(MODES)}")
    listing = list_images(cfg.src)
    if cfg.list_only:
        print(listing.report())
        return listing.counts
    require(cfg, "out_dir")
    out = Path(cfg.out_dir)
    extra = sorted({k for i in listing.items for k, v in i.meta.items() if v is not None})
    skips = SkipCounter()
    verify = cfg.verify or cfg.image_mode == "array"
    with LMDBWriter(out, meta={"source": str(cfg.src), "image_mode": cfg.image_mode}) as w:
        for r in folder_records(cfg.src, ordered(listing.items, cfg.shuffle, cfg.seed), skips, verify, desc="lmdb"):
            missing = [k for k in extra if k not in r.item.meta]
            if missing:
                skips.record("missing_field", str(Path(cfg.src) / r.item.path), f"no {missing} in metadata.jsonl")
                continue
            if cfg.image_mode == "array":
                img = r.image if not cfg.size else ImageOps.fit(r.image, (cfg.size, cfg.size), Image.BICUBIC)
                image = np.asarray(img, dtype=np.uint8)
                if w.fields and list(image.shape) != w.fields["image"]["shape"]:
                    raise ConfigError(f"{r.item.path}: size {img.size} differs from the first image's; "
                                      f"image_mode=array needs size=N to store one shape")
            else:
                image = r.data
            w.add(image=image, caption=r.item.prompt, key=r.item.path, **{k: r.item.meta[k] for k in extra})
        skips.check(cfg.max_skip_rate)  # raising here discards the database
        skips.save(w.tmp / "skips.json")
        save_resolved(cfg, w.tmp)
    print(f"wrote {w.count} records to {out} ({cfg.image_mode}); {skips.summary()}")
    return {"count": w.count, "skipped": skips.to_dict()}


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
