"""Make the lab's folder-structured toy collection from the prepared digits (shared/toy/prepare.py).

    out_dir/{train,test}/_<colour>/a_<colour>_handwritten_<digit>/<id>.png
    out_dir/reference/{subset,rest}/<id>.png + <id>.txt   the train images of / not of the subset colour, flat
                                                           with captions: FD references for shared/evaluate.py

Prompts come from the folder names by shared.data's rules: the `_<colour>` level is hidden, the next one gives
"a blue handwritten seven" (the digits caption), so `train/` is the whole collection and `train/_blue/` the
fine-tuning subset (`subset` colour), with no caption files at all. `caption_files=true` also writes a `.cap`
override next to every `cap_every`-th image (same text), to exercise the override path. Images are hard links
when possible (copies otherwise). `list=true` prints the listing of out_dir instead.
"""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from projects.sd_flux_lab.data import list_flag
from shared.config import cli, resolve, save_resolved
from shared.data import list_images
from shared.toy.dataset import COLOUR_NAMES, DIGIT_WORDS, read_split
from shared.io import atomic_dir, write_json


@dataclass
class Config:
    digits_dir: str = "data/toy/digits"
    out_dir: str = "data/toy/sd_flux_lab"
    scale: str = "toy"
    subset: str = "blue"  # the colour of the fine-tuning subset (checked to exist)
    caption_files: bool = False
    cap_every: int = 10
    list: bool = False


PRESETS = {"tiny": {}, "toy": {}, "paper": {}}


def folder_of(digit: int, colour: str) -> str:
    return f"_{colour}/a_{colour}_handwritten_{DIGIT_WORDS[digit]}"


def _place(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another filesystem
        shutil.copyfile(src, dst)


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if cfg.list:
        for split in ("train", "test"):
            print(list_images(Path(cfg.out_dir) / split).report(limit=20))
        return None
    if cfg.subset not in COLOUR_NAMES:
        raise ValueError(f"subset={cfg.subset!r}; expected one of the digit colours {', '.join(COLOUR_NAMES)}")
    counts = {}
    with atomic_dir(cfg.out_dir) as tmp:
        for split in ("train", "test"):
            src_dir = Path(cfg.digits_dir) / split
            records = read_split(src_dir)
            for i, r in enumerate(tqdm(records, desc=f"sd_flux_lab/{split}", leave=False)):
                dst = tmp / split / folder_of(r.digit, COLOUR_NAMES[r.colour]) / r.file
                _place(src_dir / r.file, dst)
                if cfg.caption_files and i % cfg.cap_every == 0:
                    dst.with_suffix(".cap").write_text(f"# override\n{r.caption}\n")
                if split == "train":
                    ref = tmp / "reference" / ("subset" if COLOUR_NAMES[r.colour] == cfg.subset else "rest")
                    _place(src_dir / r.file, ref / r.file)
                    (ref / r.file).with_suffix(".txt").write_text(r.caption + "\n")
            listing = list_images(tmp / split)
            subset = list_images(tmp / split / f"_{cfg.subset}")
            counts[split] = {"images": len(listing.items), "subset": len(subset.items),
                             "prompts": listing.counts["distinct_prompts"]}
        write_json(tmp / "counts.json", counts)
        save_resolved(cfg, tmp)
    print(f"{cfg.out_dir}: " + "; ".join(f"{k} {v['images']} images ({v['subset']} {cfg.subset}, "
                                           f"{v['prompts']} prompts)" for k, v in counts.items()))
    return counts


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__, argv=list_flag(sys.argv[1:]))
