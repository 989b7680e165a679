"""Generate from a DMD2 checkpoint: prompts in, one image grid out.

    python projects/dmd2/demo.py checkpoint=results/toy/dmd2/toy_sdxl_4step prompt="a red handwritten seven" \
        num_step=4 out=demo.png
    python -m projects.dmd2.demo checkpoint=downloads/dmd2/dmd2_sdxl_4step_unet_fp16.bin \
        teacher=downloads/sdxl_base prompt="a photo of a cat" num_step=4 device=cuda
    python -m projects.dmd2.demo checkpoint=<1-step sdxl run> num_step=1 conditioning_timestep=399 ...
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from shared.config import cli, resolve
from shared.io import atomic_path
from shared.plots import image_grid


@dataclass
class Config:
    scale: str = "toy"
    checkpoint: str = "results/toy/dmd2/toy_sdxl_4step"
    teacher: str = ""  # the pipeline a released generator file plugs into ('' = from generator.json)
    prompt: list[str] = field(default_factory=lambda: ["a red handwritten seven"])
    num_images: int = 4  # per prompt
    num_step: int = 0  # 0 = as trained; 1 = conditioning_timestep; n = DMD2's n evenly spaced steps
    conditioning_timestep: int = -1  # -1 = as trained
    seed: int = 0
    out: str = "results/toy/dmd2/demo.png"
    device: str = "cpu"


PRESETS = {"tiny": {"num_images": 1}, "toy": {}, "paper": {"device": "cuda"}}


def main(cfg=None):
    from projects.dmd2.generation import few_step_generate, load_generator, to_pil
    from projects.dmd2.sample import step_list

    cfg = resolve(Config, cfg, PRESETS)
    net, info, backbone = load_generator(cfg.checkpoint, cfg.teacher, device=cfg.device)
    timesteps = step_list(cfg.num_step, cfg.conditioning_timestep, info.get("denoising_step_list", [999]),
                          backbone.num_train_timesteps)
    prompts = [p for p in cfg.prompt for _ in range(cfg.num_images)]
    images = few_step_generate(backbone, net, prompts, timesteps, seeds=[cfg.seed + i for i in range(len(prompts))])
    with atomic_path(cfg.out) as tmp:
        image_grid(to_pil(images), cfg.num_images if len(cfg.prompt) > 1 else math.ceil(math.sqrt(len(prompts)))) \
            .save(tmp, format="PNG")
    print(f"{len(prompts)} images, timesteps {timesteps} -> {cfg.out}")
    return Path(cfg.out)


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
