"""Sample an SD1.5/SDXL pipeline (a folder or a train_sd.py run_dir): a prompt x seed grid, and optionally every
image with its prompt as `<i>.png` + `<i>.txt` (what shared/evaluate.py reads for FD and prompt accuracy).

Prompts: `prompts=[...]`, or `prompts_from=<image folder>` (the distinct prompts of its listing, by the
shared.data folder rules), minus those containing the word `exclude` (e.g. exclude=blue: "the rest").

    python projects/sd_flux_lab/make_samples.py pipeline=runs/ft prompts='[a red cat, a blue dog]' seeds=[0,1,2]
    python -m projects.sd_flux_lab.make_samples pipeline=results/toy/sd_flux_lab/base_sd15
        prompts_from=data/toy/sd_flux_lab/test/_blue per_prompt=10 save_images=true out_dir=...   (one line)
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import numpy as np
import torch
from tqdm.auto import tqdm

from projects.sd_flux_lab import models
from projects.sd_flux_lab.sampling import unet_generate
from shared.config import cli, resolve, save_resolved
from shared.data import list_images
from shared.io import atomic_dir, write_json
from shared.plots import image_grid


@dataclass
class Config:
    scale: str = "toy"
    pipeline: str = ""
    out_dir: str = "runs/toy/sd_flux_lab/samples"
    prompts: List[str] = field(default_factory=list)
    prompts_from: str = ""
    exclude: str = field(default="", metadata={"help": "drop prompts_from prompts containing this word"})
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2, 3])
    per_prompt: int = field(default=0, metadata={"help": "> 0: this many images per prompt (seeds 0..n-1) "
                                                         "instead of `seeds`"})
    grid_prompts: int = field(default=10, metadata={"help": "rows of the grid (the first N prompts)"})
    save_images: bool = False
    sampler: str = "ddim"
    steps: int = 25
    guidance_scale: float = 3.0
    size: int = 0  # 0 = the UNet's native size
    batch_size: int = 64
    seed_offset: int = field(default=0, metadata={"help": "added to every seed (a new set of noises)"})
    threads: int = 0


PRESETS = {"tiny": {"steps": 2, "seeds": [0, 1], "threads": 1}, "toy": {"threads": 1},
           "paper": {"steps": 30, "guidance_scale": 7.5, "batch_size": 4}}


def prompts_of(cfg) -> list[str]:
    if cfg.prompts and cfg.prompts_from:
        raise ValueError("give prompts=[...] or prompts_from=<folder>, not both")
    if cfg.prompts:
        return list(cfg.prompts)
    if not cfg.prompts_from:
        raise ValueError("no prompts: set prompts=[...] or prompts_from=<image folder>")
    found = sorted({i.prompt for i in list_images(cfg.prompts_from).items if i.prompt
                    and not (cfg.exclude and cfg.exclude in i.prompt.split())})
    if not found:
        raise ValueError(f"prompts_from={cfg.prompts_from}: no image there has a prompt"
                         + (f" without the word {cfg.exclude!r}" if cfg.exclude else ""))
    return found


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if not cfg.pipeline:
        raise ValueError("pipeline: set the pipeline folder (or train_sd run_dir) to sample")
    folder = models.pipeline_folder(cfg.pipeline)
    arch = models.arch_of(folder)
    pipe = models.load_pipeline(folder)
    prompts = prompts_of(cfg)
    seeds = list(range(cfg.per_prompt)) if cfg.per_prompt > 0 else list(cfg.seeds)
    seeds = [s + cfg.seed_offset for s in seeds]
    all_p = [p for p in prompts for _ in seeds]
    all_s = [s for _ in prompts for s in seeds]
    images = []
    t0 = time.perf_counter()
    for lo in tqdm(range(0, len(all_p), cfg.batch_size), desc="make_samples", leave=False):
        images.append(unet_generate(pipe, arch, all_p[lo:lo + cfg.batch_size], all_s[lo:lo + cfg.batch_size],
                                    sampler=cfg.sampler, steps=cfg.steps, guidance_scale=cfg.guidance_scale,
                                    size=cfg.size or None, batch_size=cfg.batch_size))
    images = np.concatenate(images)
    seconds = time.perf_counter() - t0
    out = Path(cfg.out_dir)
    with atomic_dir(out) as tmp:
        rows = min(cfg.grid_prompts, len(prompts))
        image_grid(images[:rows * len(seeds)], len(seeds), pad=2).save(tmp / "grid.png")  # one row per prompt
        (tmp / "grid_prompts.txt").write_text("\n".join(prompts[:rows]) + "\n")
        if cfg.save_images:
            (tmp / "images").mkdir()
            from PIL import Image
            for i, (im, p) in enumerate(zip(images, all_p)):
                Image.fromarray(im).save(tmp / "images" / f"{i:05d}.png")
                (tmp / "images" / f"{i:05d}.txt").write_text(p + "\n")
            # beside the images shared/evaluate.py reads: the leaderboard's columns (the UNet sampled)
            write_json(tmp / "images" / "samples.json", {
                "num_images": len(images), "sampler": cfg.sampler, "steps": cfg.steps,
                "guidance_scale": cfg.guidance_scale, "seconds_per_image": seconds / len(images),
                "parameters": sum(t.numel() for t in pipe.unet.parameters())})
        save_resolved(cfg, tmp)
    print(f"{arch}: {len(images)} images of {len(prompts)} prompts x {len(seeds)} seeds -> {out}")
    return {"images": len(images), "prompts": len(prompts)}


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
