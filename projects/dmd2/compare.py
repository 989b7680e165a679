"""A labelled comparison grid: one row per sample folder (sample.py's output), the same samples (same prompts,
same seeds) in every row, so a row is one model or sampler and a column one prompt + seed. Samples are read
through the shared decoder; one that cannot be read (truncated, empty, not an image, dangling link) is left as a
grey cell, counted per reason and named in the summary (a missing sample is an error: the folder is too short).

    python projects/dmd2/compare.py folders=[results/toy/dmd2/samples/teacher_edm_edm_euler_1_g1.0,...] \
        labels='[teacher 1 step,...]' out=results/toy/dmd2/grids/imagenet64.png
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

from shared.config import cli, resolve
from shared.data import BadSample, SkipCounter, decode_image, read_file
from shared.io import atomic_path


@dataclass
class Config:
    scale: str = "toy"
    folders: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # one per folder; default: the folder names
    n: int = 12  # columns
    stride: int = 7  # sample indices 0, stride, 2*stride, ...: spread over the prompt list
    cell: int = 64  # pixels per image
    out: str = "results/toy/dmd2/grids/compare.png"


PRESETS = {"tiny": {"n": 4, "stride": 1, "cell": 32}, "toy": {}, "paper": {"n": 6, "cell": 256}}
LABEL_WIDTH = 230


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if not cfg.folders:
        raise ValueError("folders=[...]: give at least one sample folder")
    labels = list(cfg.labels) or [Path(f).name for f in cfg.folders]
    if len(labels) != len(cfg.folders):
        raise ValueError(f"labels: {len(labels)} given for {len(cfg.folders)} folders")
    grid = Image.new("RGB", (LABEL_WIDTH + cfg.n * cfg.cell, len(cfg.folders) * cfg.cell), "white")
    draw = ImageDraw.Draw(grid)
    skips = SkipCounter(log_first=0)
    for row, (folder, label) in enumerate(zip(cfg.folders, labels)):
        for col in range(cfg.n):
            path = Path(folder) / f"{col * cfg.stride:06d}.png"
            if not path.exists() and not path.is_symlink():  # a dangling link is a bad sample, not a short folder
                raise FileNotFoundError(f"{path}: {folder} has fewer samples than n={cfg.n} x stride={cfg.stride}")
            skips.add_seen()
            try:
                tile = decode_image(read_file(path), str(path)).resize((cfg.cell, cfg.cell), Image.NEAREST)
            except BadSample as e:
                skips.record(e.reason, str(path), e.detail)
                tile = Image.new("RGB", (cfg.cell, cfg.cell), (128, 128, 128))  # the cell says "no sample here"
            grid.paste(tile, (LABEL_WIDTH + col * cfg.cell, row * cfg.cell))
        draw.text((6, row * cfg.cell + cfg.cell // 2 - 6), label, fill="black")
    with atomic_path(cfg.out) as tmp:
        grid.save(tmp, format="PNG")
    if skips.bad:
        print(f"skipped (grey cells): {skips.summary()}\n{skips.listing()}")
    print(f"{len(cfg.folders)} rows x {cfg.n} samples -> {cfg.out}")
    return Path(cfg.out)


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
