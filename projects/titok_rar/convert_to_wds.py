"""ImageNet-style class folders -> WebDataset shards with class labels (the original's convert_imagenet_to_wds.py).

    python projects/titok_rar/convert_to_wds.py src=/datasets/imagenet/train out_dir=data/paper/titok_rar/shards/train
    python projects/titok_rar/convert_to_wds.py src=... list_only=true          # dry run: images, classes, counts

`src/<class>/<image>`: the class is the first folder level; classes are numbered in sorted order (ImageNet's
synsets n01440764..n15075141 -> 0..999, the order of the original's labels), or by the number their names start
with (`labels=prefix`, for a split that lacks some classes). Each sample is
    <key>.jpg|png|webp   the original bytes (other formats re-encoded as PNG)
    <key>.cls            the class index (as the original writes it)
    <key>.json           {"label", "class", "caption", "width", "height", "source"}
The caption is the image's .txt file when it has one (the toy digits), else the class folder's name.
Unreadable / truncated images are skipped, counted and listed in skips.json; the conversion fails if more than
max_skip_rate of the images are bad (shared.data.convert). Written into a temp folder, then renamed.
Outputs: out_dir/shard-NNNNNN.tar, index.json (+ "classes"), skips.json, config.yaml.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from shared.config import ConfigError, cli, resolve, save_resolved
from shared.data.convert import ConverterOptions, folder_records, ordered, require
from shared.data.folder import list_images
from shared.data.shards import write_shards
from shared.data.skips import SkipCounter
from shared.io import atomic_dir, write_json


@dataclass
class Config(ConverterOptions):
    src: str = field(default="", metadata={"help": "class folders: src/<class>/<image>"})
    out_dir: str = field(default="", metadata={"help": "folder for the shards"})
    scale: str = "toy"
    shard_size: int = field(default=1000, metadata={"help": "samples per shard (the original: 1281167/252)"})
    shard_max_bytes: int = 1_000_000_000
    shuffle: bool = field(default=True, metadata={"help": "shuffle (seeded) so every shard mixes classes"})
    labels: str = field(default="sorted", metadata={"help": "sorted: class i = i-th folder in sorted order; "
                                                             "prefix: the number before the first '_' of the name"})
    seed: int = 0


PRESETS = {"tiny": {"shard_size": 64}, "toy": {}, "paper": {"shard_size": 5000}}


def class_of(path: str) -> str:
    parts = path.split("/")
    if len(parts) < 2:
        raise ConfigError(f"src: {path} is not inside a class folder (expected src/<class>/<image>)")
    return parts[0]


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    require(cfg, "src")
    listing = list_images(cfg.src)
    classes = sorted({class_of(it.path) for it in listing.items})
    if not classes:
        raise ConfigError(f"src={cfg.src}: no images in class folders")
    if cfg.labels == "sorted":
        index_of = {c: i for i, c in enumerate(classes)}
    elif cfg.labels == "prefix":
        bad = [c for c in classes if not c.split("_", 1)[0].isdigit()]
        if bad:
            raise ConfigError(f"labels=prefix: class folders {bad[:3]} do not start with '<number>_'")
        index_of = {c: int(c.split("_", 1)[0]) for c in classes}
    else:
        raise ConfigError(f"labels={cfg.labels!r}; allowed: sorted, prefix")
    # a folder without caption files: the class name is the caption
    items = [it if it.prompt and it.source != "folder" else dataclasses.replace(it, prompt=class_of(it.path))
             for it in listing.items]
    if cfg.list_only:
        print(listing.report())
        print(f"{len(classes)} classes: {', '.join(classes[:10])}{' ...' if len(classes) > 10 else ''}")
        return {"images": len(listing.items), "classes": len(classes)}
    require(cfg, "out_dir")
    skips = SkipCounter()
    with atomic_dir(cfg.out_dir) as tmp:
        def samples():
            for i, r in enumerate(folder_records(cfg.src, ordered(items, cfg.shuffle, cfg.seed), skips,
                                                 cfg.verify, desc="wds")):
                name = class_of(r.item.path)
                yield {"__key__": f"{i:08d}", r.ext: r.data, "cls": str(index_of[name]),
                       "json": {"label": index_of[name], "class": name, "caption": r.item.prompt,
                                "width": r.width, "height": r.height, "source": r.item.path}}
        index = write_shards(samples(), tmp, cfg.shard_size, cfg.shard_max_bytes)
        skips.check(cfg.max_skip_rate)
        skips.save(Path(tmp) / "skips.json")
        write_json(Path(tmp) / "classes.json", classes)
        save_resolved(cfg, tmp)
    print(f"wrote {index['count']} samples of {len(classes)} classes in {len(index['shards'])} shards to "
          f"{cfg.out_dir}; {skips.summary()}")
    return {"count": index["count"], "classes": len(classes), "shards": len(index["shards"]),
            "skipped": skips.to_dict()}


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
