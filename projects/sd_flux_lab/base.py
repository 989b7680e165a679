"""Put a base pipeline (the models DMD2 distils and the lab fine-tunes) at `<out_dir>/pipeline/`.

    source=build      a random pipeline from the models.py preset of arch/scale (tiny: built, not trained)
    source=<folder>   a diffusers pipeline folder, or a run_dir of train_sd.py (its pipeline/): a trained toy
                      base or the downloaded hub pipeline (paper: downloads/sd15, downloads/sdxl_base); its files
                      are hard-linked when on the same filesystem (no second copy of 7 GB), copied otherwise

The folder is checked to be a complete pipeline of the right architecture and loadable offline before it
appears (atomically), so a consumer never sees a half-made one.

    python projects/sd_flux_lab/base.py scale=tiny arch=sdxl out_dir=results/tiny/sd_flux_lab/base_sdxl
    python projects/sd_flux_lab/base.py scale=paper arch=sd15 source=downloads/sd15 out_dir=...
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from projects.sd_flux_lab import models
from shared.config import cli, resolve, save_resolved
from shared.io import atomic_dir, write_json


@dataclass
class Config:
    scale: str = "toy"
    arch: str = "sd15"
    source: str = "build"
    out_dir: str = "results/toy/sd_flux_lab/base_sd15"
    seed: int = 0
    check: bool = True  # load the result offline before publishing it


PRESETS = {"tiny": {"source": "build"}, "toy": {}, "paper": {}}


def _link_tree(src: Path, dst: Path) -> None:
    for root, _, files in os.walk(src, followlinks=True):
        rel = Path(root).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            s = Path(root) / name
            try:
                os.link(os.path.realpath(s), dst / rel / name)
            except OSError:
                shutil.copy2(s, dst / rel / name)


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    out = Path(cfg.out_dir) / "pipeline"
    with atomic_dir(out) as tmp:
        if cfg.source == "build":
            pipe = models.build_pipeline(cfg.arch, cfg.scale, seed=cfg.seed)
            pipe.save_pretrained(str(tmp))
            origin = f"built from preset {cfg.arch}/{cfg.scale} (random weights, seed {cfg.seed})"
        else:
            src = models.pipeline_folder(cfg.source)
            arch = models.arch_of(src)
            if arch != cfg.arch:
                raise ValueError(f"source {src} holds a {arch} pipeline, but arch={cfg.arch}")
            tmp.rmdir()
            _link_tree(src, tmp)
            origin = str(src.resolve())
        if cfg.check:
            models.load_pipeline(tmp)
    write_json(Path(cfg.out_dir) / "origin.json", {"arch": cfg.arch, "scale": cfg.scale, "origin": origin})
    save_resolved(cfg, cfg.out_dir)
    print(f"{cfg.arch} base pipeline ({origin}) -> {out}")
    return out


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
