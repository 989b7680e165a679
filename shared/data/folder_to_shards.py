"""Convert an image folder with captions into WebDataset shards.

    python shared/data/folder_to_shards.py src=path/to/images out_dir=data/toy/shards shard_size=1000
    python -m shared.data.folder_to_shards src=path/to/images list_only=true   # dry-run: images, prompts, counts

Prompts follow shared.data.folder: .txt / .cap caption files, metadata.jsonl, folder names (`__` skips a
subtree, `_` hides a level, `_` -> space, levels joined with ", "). Each sample is
    <key>.jpg|png|webp   the original image bytes (other formats re-encoded as PNG)
    <key>.txt            the prompt
    <key>.json           {"caption", "width", "height", "source": relative path, **metadata.jsonl fields}
with key = write index (%08d); images are shuffled with `seed` before writing so shards mix folders.
Unreadable or truncated images and images without a prompt are skipped and listed in skips.json; the
conversion fails, listing them, if more than max_skip_rate of the images are bad.
Outputs (written into a temp folder, then renamed): out_dir/shard-NNNNNN.tar, index.json, skips.json, config.yaml.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shared.config import cli, resolve, save_resolved
from shared.data.convert import ConverterOptions, folder_records, ordered, require
from shared.data.folder import list_images
from shared.data.shards import write_shards
from shared.data.skips import SkipCounter
from shared.io import atomic_dir


@dataclass
class Config(ConverterOptions):
    src: str = field(default="", metadata={"help": "image folder"})
    out_dir: str = field(default="", metadata={"help": "folder for the shards"})
    scale: str = "toy"
    shard_size: int = field(default=1000, metadata={"help": "samples per shard"})
    shard_max_bytes: int = field(default=1_000_000_000, metadata={"help": "bytes per shard at most"})
    shuffle: bool = field(default=True, metadata={"help": "shuffle images (seeded) so a shard mixes folders"})
    seed: int = 0


PRESETS = {"tiny": {"shard_size": 64}, "toy": {}, "paper": {"shard_size": 5000}}


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    require(cfg, "src")
    listing = list_images(cfg.src)
    if cfg.list_only:
        print(listing.report())
        return listing.counts
    require(cfg, "out_dir")
    skips = SkipCounter()
    with atomic_dir(cfg.out_dir) as tmp:  # a failed or interrupted run leaves no partial shard folder
        samples = ({"__key__": f"{i:08d}", r.ext: r.data, "txt": r.item.prompt,
                    "json": {"caption": r.item.prompt, "width": r.width, "height": r.height,
                             "source": r.item.path, **r.item.meta}}
                   for i, r in enumerate(folder_records(cfg.src, ordered(listing.items, cfg.shuffle, cfg.seed),
                                                        skips, cfg.verify, desc="shards")))
        index = write_shards(samples, tmp, cfg.shard_size, cfg.shard_max_bytes)
        skips.check(cfg.max_skip_rate)
        skips.save(Path(tmp) / "skips.json")
        save_resolved(cfg, tmp)
    print(f"wrote {index['count']} samples in {len(index['shards'])} shards to {cfg.out_dir}; {skips.summary()}")
    return {"count": index["count"], "shards": len(index["shards"]), "skipped": skips.to_dict()}


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
