"""Crop and resize a folder-structured collection for training, keeping its folders and caption files.

    mode=center   resize the short side to `size`, centre crop to size x size
    mode=bucket   resize to cover the nearest aspect-ratio bucket of ~size^2 pixels (sides multiples of
                  `multiple`), centre crop to it (what train_sd.py buckets=true does on the fly)
    mode=pad      resize the long side to `size`, pad to a square with `pad_colour`

Folder names (the prompts), `.txt`/`.cap` captions and `metadata.jsonl` are copied unchanged; `__` folders are
left out, as the training listing would skip them. Images are read through the shared decoder (16-bit, palette
and alpha images decode correctly); unreadable ones (truncated, empty, not an image, dangling link) are skipped,
counted per reason and named in the summary.

    python projects/sd_flux_lab/crop_images.py in_dir=pics out_dir=pics_512 size=512 mode=bucket
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from projects.sd_flux_lab.data import make_buckets, nearest_bucket
from shared.config import cli, resolve, save_resolved
from shared.data import BadSample, SkipCounter, decode_image, list_images, read_file
from shared.data.folder import METADATA_FILE
from shared.io import atomic_dir

MODES = ("center", "bucket", "pad")


@dataclass
class Config:
    in_dir: str = ""
    out_dir: str = ""
    size: int = 512
    mode: str = "center"
    multiple: int = 64
    pad_colour: str = "black"
    format: str = "png"  # png | jpg
    scale: str = "toy"


PRESETS = {"tiny": {"size": 32, "multiple": 8}, "toy": {"size": 32, "multiple": 8}, "paper": {}}


def crop_one(img: Image.Image, cfg) -> Image.Image:
    w, h = img.size
    if cfg.mode == "pad":
        s = cfg.size / max(w, h)
        img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BICUBIC)
        canvas = Image.new("RGB", (cfg.size, cfg.size), cfg.pad_colour)
        canvas.paste(img, ((cfg.size - img.size[0]) // 2, (cfg.size - img.size[1]) // 2))
        return canvas
    if cfg.mode == "bucket":
        buckets = make_buckets(cfg.size, cfg.multiple)
        th, tw = buckets[nearest_bucket(buckets, h, w)]
    else:
        th = tw = cfg.size
    s = max(th / h, tw / w)
    rw, rh = max(tw, round(w * s)), max(th, round(h * s))
    img = img.resize((rw, rh), Image.BICUBIC)
    left, top = (rw - tw) // 2, (rh - th) // 2
    return img.crop((left, top, left + tw, top + th))


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if cfg.mode not in MODES:
        raise ValueError(f"mode={cfg.mode!r}; expected one of {', '.join(MODES)}")
    if not cfg.in_dir or not cfg.out_dir:
        raise ValueError("set in_dir=<image folder> and out_dir=<new folder>")
    src = Path(cfg.in_dir)
    listing = list_images(src)
    skips = SkipCounter(log_first=0)
    with atomic_dir(cfg.out_dir) as tmp:
        for item in tqdm(listing.items, desc="crop", leave=False):
            path = src / item.path
            skips.add_seen()
            try:
                out = crop_one(decode_image(read_file(path), str(path)), cfg)
            except BadSample as e:
                skips.record(e.reason, item.path, e.detail)
                continue
            dst = (tmp / item.path).with_suffix("." + cfg.format)
            dst.parent.mkdir(parents=True, exist_ok=True)
            out.save(dst)
            for ext in (".txt", ".cap"):
                if path.with_suffix(ext).is_file():
                    shutil.copyfile(path.with_suffix(ext), dst.with_suffix(ext))
            meta = path.parent / METADATA_FILE
            if meta.is_file() and not (dst.parent / METADATA_FILE).exists():
                shutil.copyfile(meta, dst.parent / METADATA_FILE)
        save_resolved(cfg, tmp, name=".crop_config.yaml")
    if skips.bad:
        print(f"skipped: {skips.summary()}\n{skips.listing()}")
    print(f"{len(listing.items) - skips.bad} images ({cfg.mode}, {cfg.size}) -> {cfg.out_dir}")
    return {"images": len(listing.items) - skips.bad, "skipped": skips.bad,
            "skip_reasons": dict(sorted(skips.counts.items()))}


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
