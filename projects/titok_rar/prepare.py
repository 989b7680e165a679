"""Toy data for TiTok and its generators: the digits as ImageNet-style class folders, then WebDataset shards.

    python projects/titok_rar/prepare.py digits=data/toy/digits out_dir=data/toy/titok_rar/digits scale=toy

Reads the digits dataset (shared/toy/prepare.py: {train,test}/<id>.png + .txt + metadata.jsonl) and writes
    out_dir/classes/{train,test}/<label:02d>_<colour>_<digit>/<id>.png (+ .txt caption)   ImageNet-style folders
    out_dir/shards/{train,test}/                                                             via convert_to_wds.py
The class is digit and colour together: label = digit * 8 + colour index (80 classes), so a class-conditional
generator is asked for "a red seven" as ImageNet's are asked for "a goldfish", and the digits CNN (which
classifies both) can score whether it got it. Captions ("a red handwritten seven") are kept for text-to-image.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from shared.config import ConfigError, cli, resolve, save_resolved
from shared.toy.dataset import COLOUR_NAMES, DIGIT_WORDS
from shared.io import atomic_dir
from projects.titok_rar import convert_to_wds


@dataclass
class Config:
    digits: str = "data/toy/digits"
    out_dir: str = "data/toy/titok_rar/digits"
    scale: str = "toy"
    shard_size: int = 500


PRESETS = {"tiny": {"shard_size": 64}, "toy": {}, "paper": {}}


def label_of(digit: int, colour: int) -> int:
    return digit * len(COLOUR_NAMES) + colour


def class_name(label: int) -> str:
    digit, colour = divmod(label, len(COLOUR_NAMES))
    return f"{label:02d}_{COLOUR_NAMES[colour]}_{DIGIT_WORDS[digit]}"


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    src = Path(cfg.digits)
    out = Path(cfg.out_dir)
    counts = {}
    with atomic_dir(out) as tmp:
        for split in ("train", "test"):
            meta = src / split / "metadata.jsonl"
            if not meta.is_file():
                raise ConfigError(f"digits={src}: no {split}/metadata.jsonl (run shared/toy/prepare.py first)")
            n = 0
            for line in meta.read_text().splitlines():
                if not line.strip():
                    continue
                rec = json.loads(line)
                folder = tmp / "classes" / split / class_name(label_of(int(rec["digit"]), int(rec["colour"])))
                folder.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / split / rec["file"], folder / rec["file"])
                (folder / rec["file"]).with_suffix(".txt").write_text(rec["caption"] + "\n")
                n += 1
            convert_to_wds.main({"src": str(tmp / "classes" / split), "out_dir": str(tmp / "shards" / split),
                                 "scale": cfg.scale, "shard_size": cfg.shard_size, "shuffle": split == "train",
                                 "labels": "prefix"})
            counts[split] = n
        save_resolved(cfg, tmp)
    print(f"{out}: {counts['train']} train / {counts['test']} test images in 80 digit-colour classes")
    return counts


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
