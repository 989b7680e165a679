"""Write the toy digits dataset (shared/toy/prepare.py output) as WebDataset shards and as LMDB.

    python shared/toy/digits_formats.py data_dir=data/toy/digits out_dir=data/toy/digits_formats
    python -m shared.toy.digits_formats scale=tiny data_dir=data/tiny/digits out_dir=data/tiny/digits_formats

Outputs, per split (train, test):
    out_dir/shards/<split>/shard-NNNNNN.tar   <key>.png, <key>.txt caption, <key>.json {caption, digit, colour, ...}
    out_dir/lmdb/<split>/                     image uint8 (32, 32, 3), caption, key, digit, colour
Labels come from each split's metadata.jsonl. Read them back with
    ShardSource(out_dir/shards/train, extra_keys=("digit", "colour")) or LMDBSource(out_dir/lmdb/train).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.config import cli, resolve, save_resolved
from shared.data import folder_to_lmdb, folder_to_shards
from shared.io import atomic_dir

SPLITS = ("train", "test")


@dataclass
class Config:
    data_dir: str = "data/toy/digits"
    out_dir: str = "data/toy/digits_formats"
    scale: str = "toy"
    shard_size: int = 500
    seed: int = 0


PRESETS = {"tiny": {"data_dir": "data/tiny/digits", "out_dir": "data/tiny/digits_formats", "shard_size": 40},
           "toy": {}, "paper": {}}


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    data = Path(cfg.data_dir)
    for split in SPLITS:
        if not (data / split / "metadata.jsonl").is_file():
            raise FileNotFoundError(f"{data / split}/metadata.jsonl: missing; run shared/toy/prepare.py first")
    counts = {}
    with atomic_dir(cfg.out_dir) as tmp:
        for split in SPLITS:
            # a bad file in generated data is a bug: allow no skips
            shards = folder_to_shards.main({"src": str(data / split), "out_dir": str(tmp / "shards" / split),
                                            "scale": cfg.scale, "shard_size": cfg.shard_size, "seed": cfg.seed,
                                            "max_skip_rate": 0.0})
            db = folder_to_lmdb.main({"src": str(data / split), "out_dir": str(tmp / "lmdb" / split),
                                      "scale": cfg.scale, "image_mode": "array", "max_skip_rate": 0.0})
            counts[split] = {"shards": shards["count"], "lmdb": db["count"]}
        save_resolved(cfg, tmp)
    print(f"digits in shards and LMDB under {cfg.out_dir}: {counts}")
    return counts


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
