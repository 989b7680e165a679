"""Train the UNet of an SD1.5 or SDXL pipeline on a folder-structured image collection (VAE, text encoders frozen).

Fine-tuning starts from a pipeline folder (`base=downloads/sd15`, or a previous run: `base=<run_dir>`); toy base
models are trained from scratch with the same script (`base=preset`: the UNet, text encoders and scheduler of the
models.py preset for `arch`/`scale`, with `vae=` a trained AutoencoderKL folder). `unet_single_file=` replaces the
UNet by an original-format checkpoint (.safetensors with SD key names; its config comes from the base folder).

Prompts: shared.data folder rules (folder names, `.cap`/`.txt` overrides, `__` folders skipped); `list=true`
prints every image with its prompt, every image a run would skip and why (each image decoded), and the counts,
and stops. Bad files (truncated, empty, not an image, dangling links) and images whose shorter side is below
`min_image_size` are skipped and counted; the run's end prints how many and why (also in metrics.json).

Outputs in run_dir: pipeline/ (the full diffusers pipeline with the trained UNet, EMA weights when ema_decay > 0),
samples/step_*.png (validation prompts x seeds every sample_every steps), checkpoints/ (resume: start the same
command again), metrics.jsonl, config.yaml.

    python projects/sd_flux_lab/train_sd.py base=downloads/sd15 data_dir=pics run_dir=runs/ft resolution=512
    python -m shared.toy.prepare scale=tiny out_dir=data/tiny/digits                   # the tiny digits ...
    python -m projects.sd_flux_lab.prepare scale=tiny digits_dir=data/tiny/digits out_dir=data/tiny/sd_flux_lab
    python -m projects.sd_flux_lab.train_sd scale=tiny base=preset arch=sdxl data_dir=data/tiny/sd_flux_lab/train
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
import sys
from pathlib import Path
from typing import List

import torch

from projects.sd_flux_lab import models
from projects.sd_flux_lab.conditioning import CONDITIONING
from projects.sd_flux_lab.data import BucketBatches, BucketedImages, cache_latents, list_report, skip_summary
from projects.sd_flux_lab.loss import diffusion_loss
from projects.sd_flux_lab.sampling import unet_generate
from shared.config import option, resolve
from shared.data import CaptionDropout, list_images
from shared.plots import image_grid
from shared.train import Trainer, TrainConfig


@dataclass
class Config(TrainConfig):
    scale: str = "toy"
    run_dir: str = "runs/toy/sd_flux_lab/train_sd"
    base: str = field(default="preset", metadata={"help": "pipeline folder, a previous run_dir, or 'preset'"})
    arch: str = option("sd15", help="for base=preset; else read from the folder", choices=("sd15", "sdxl"))
    vae: str = field(default="", metadata={"help": "AutoencoderKL folder replacing the base's VAE (e.g. a toy VAE)"})
    unet_single_file: str = field(default="", metadata={"help": "original-format UNet checkpoint to start from"})
    data_dir: str = "data/toy/sd_flux_lab/all"
    list: bool = field(default=False, metadata={"help": "print images, prompts and counts, then stop (--list)"})
    resolution: int = option(32, min=8)
    buckets: bool = field(default=False, metadata={"help": "aspect-ratio buckets of ~resolution^2 pixels"})
    crop: str = option("center", choices=("center", "random"))
    hflip: float = option(0.0, help="probability of a horizontal flip", min=0, max=1)
    min_image_size: int = field(default=16, metadata={"help": "images with a shorter side below this many pixels "
                                                              "are left out (counted as filtered); 0 = keep all"})
    batch_size: int = option(16, min=1)
    epochs: int = field(default=0, metadata={"help": "> 0: train this many epochs (sets max_steps)"})
    lr: float = option(1e-4, min=0)
    adam_beta2: float = 0.999
    weight_decay: float = 1e-2
    prediction_type: str = option("epsilon", choices=("epsilon", "v_prediction"))
    t_min: int = 0
    t_max: int = field(default=1000, metadata={"help": "timesteps drawn from [t_min, t_max); the lab's habit: 700"})
    noise_offset: float = 0.0
    snr_gamma: float = field(default=0.0, metadata={"help": "min-SNR-gamma weighting; 0 = off (5 is usual)"})
    caption_dropout: float = option(0.0, min=0, max=1)
    cache_latents: bool = False
    gradient_checkpointing: bool = False
    validation_prompts: List[str] = field(default_factory=lambda: ["a red handwritten three",
                                                                   "a blue handwritten seven"])
    validation_seeds: List[int] = field(default_factory=lambda: [0, 1, 2, 3])
    sample_every: int = 0  # 0 = only at the end
    sample_sampler: str = "ddim"
    sample_steps: int = 20
    guidance_scale: float = 3.0
    threads: int = 0  # torch CPU threads; 0 = torch default (1 is much faster on a busy machine)


PRESETS = {
    "tiny": {"max_steps": 4, "batch_size": 4, "ckpt_every": 2, "log_every": 1, "sample_steps": 2,
             "validation_seeds": [0, 1], "threads": 1},
    # toy: noise_offset 0.1 because 8x8 latents leak their mean colour through SD's schedule even at t=999 (the
    # model would read colour off the noise instead of the prompt)
    "toy": {"max_steps": 3000, "batch_size": 32, "lr": 1e-3, "lr_schedule": "cosine", "warmup_steps": 50,
            "min_lr_ratio": 0.1, "ema_decay": 0.999, "ckpt_every": 500, "log_every": 50, "caption_dropout": 0.1,
            "noise_offset": 0.1,
            "cache_latents": True, "sample_every": 1000, "threads": 1},
    "paper": {"max_steps": 10000, "batch_size": 8, "resolution": 512, "mixed_precision": "bf16",
              "ema_decay": 0.9999, "ckpt_every": 500, "milestone_every": 2500, "gradient_checkpointing": True,
              "caption_dropout": 0.05, "sample_every": 500, "buckets": True, "guidance_scale": 7.5},
}


def load_base(cfg):
    """(pipeline, arch, folder the configs come from or None)."""
    if cfg.base == "preset":
        vae = None
        if cfg.vae:
            from diffusers import AutoencoderKL
            vae = AutoencoderKL.from_pretrained(cfg.vae, local_files_only=True)
        pipe = models.build_pipeline(cfg.arch, cfg.scale, seed=cfg.seed, vae=vae)
        folder = None
        if cfg.unet_single_file:
            raise ValueError("unet_single_file needs base=<pipeline folder> (the UNet config comes from it)")
        return pipe, cfg.arch, folder
    folder = models.pipeline_folder(cfg.base)
    pipe, arch = models.load_pipeline(folder), models.arch_of(folder)
    if cfg.vae:
        from diffusers import AutoencoderKL
        pipe.vae = AutoencoderKL.from_pretrained(cfg.vae, local_files_only=True)
    if cfg.unet_single_file:
        from diffusers import UNet2DConditionModel
        path = Path(cfg.unet_single_file)
        if not path.is_file():
            raise FileNotFoundError(f"unet_single_file: {path} does not exist")
        pipe.unet = UNet2DConditionModel.from_single_file(str(path), config=str(folder), subfolder="unet",
                                                          local_files_only=True)
    return pipe, arch, folder


def save_samples(pipe, arch, unet, cfg, path: Path) -> None:
    prompts = [p for p in cfg.validation_prompts for _ in cfg.validation_seeds]
    seeds = [s for _ in cfg.validation_prompts for s in cfg.validation_seeds]
    images = unet_generate(pipe, arch, prompts, seeds, sampler=cfg.sample_sampler, steps=cfg.sample_steps,
                           guidance_scale=cfg.guidance_scale, size=cfg.resolution, unet=unet)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(images, len(cfg.validation_seeds), pad=2).save(path)


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    listing = list_images(cfg.data_dir)
    if cfg.list:
        text, counts = list_report(listing, cfg.min_image_size)
        print(text)
        return counts
    pipe, arch, _ = load_base(cfg)
    factor = pipe.vae_scale_factor
    if cfg.resolution % factor:
        raise ValueError(f"resolution={cfg.resolution} must be a multiple of the VAE's factor {factor}")
    images = BucketedImages(listing, cfg.resolution, buckets=cfg.buckets, multiple=factor * 8 if cfg.buckets
                            else factor, crop=cfg.crop, hflip=cfg.hflip, seed=cfg.seed, min_size=cfg.min_image_size)
    probe = BucketBatches(images, cfg.batch_size, cfg.seed)
    if cfg.epochs > 0:
        cfg.max_steps = cfg.epochs * len(probe)  # before the Trainer: LR schedule and progress use it

    trainer = Trainer(cfg)
    dev = trainer.device
    frozen_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.mixed_precision, torch.float32) \
        if dev.type == "cuda" else torch.float32  # CPU autocast still wants fp32 frozen weights
    for name in ("vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if module is not None:
            module.to(dev) if frozen_dtype == torch.float32 else module.to(dev, frozen_dtype)
            module.requires_grad_(False).eval()
    unet = pipe.unet
    unet.train()
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, betas=(0.9, cfg.adam_beta2),
                            weight_decay=cfg.weight_decay)
    unet, _ = trainer.add("unet", unet, opt)
    raw = trainer.unit("unet").raw

    dataset = cache_latents(images, pipe.vae, Path(cfg.run_dir) / "latents.safetensors") if cfg.cache_latents \
        else images
    loader = trainer.register("train", BucketBatches(dataset, cfg.batch_size, cfg.seed, trainer.rank,
                                                     trainer.world_size))
    gen = trainer.generator("noise", cfg.seed * 1000 + trainer.rank)
    dropper = CaptionDropout(cfg.caption_dropout, cfg.seed)
    cond_of = CONDITIONING[arch](pipe, dev)
    loss_fn = diffusion_loss(cfg.prediction_type, schedule=pipe.scheduler.config, t_min=cfg.t_min, t_max=cfg.t_max,
                             noise_offset=cfg.noise_offset, snr_gamma=cfg.snr_gamma)
    scaling, shift = pipe.vae.config.scaling_factor, getattr(pipe.vae.config, "shift_factor", None) or 0.0
    samples_dir = Path(cfg.run_dir) / "samples"

    for batch in trainer.batches(loader):
        with torch.no_grad():
            if "latent_mean" in batch:
                latents = batch["latent_mean"] + batch["latent_std"] * torch.randn(
                    batch["latent_mean"].shape, generator=gen, device=dev)
            else:
                latents = pipe.vae.encode(batch["pixels"].to(frozen_dtype)).latent_dist.sample(gen)
            latents = ((latents.float() - shift) * scaling)
            drop = torch.tensor([dropper.drops(k, loader.epoch) for k in batch["key"]])
            kwargs = cond_of(batch["caption"], drop=drop, sizes=batch["sizes"])
        loss = loss_fn(lambda x, t: unet(x, t, **kwargs).sample, latents, gen)
        trainer.backward(loss)
        trainer.optimizer_step()
        trainer.log(loss=loss)
        step = trainer.global_step + 1  # the step this batch completes
        if cfg.sample_every and step % cfg.sample_every == 0 and step < cfg.max_steps and trainer.is_main:
            ema = trainer.ema("unet")
            with (ema.swap(raw) if ema else contextlib.nullcontext()):
                save_samples(pipe, arch, raw, cfg, samples_dir / f"step_{step:07d}.png")

    if trainer.is_main:
        ema = trainer.ema("unet")
        if ema is not None:
            ema.copy_to(raw)  # the exported pipeline carries the EMA weights
        pipe.unet = raw
        pipe.scheduler.register_to_config(prediction_type=cfg.prediction_type)
        for name in ("vae", "text_encoder", "text_encoder_2"):
            if getattr(pipe, name, None) is not None and frozen_dtype != torch.float32:
                getattr(pipe, name).to("cpu", torch.float32)
        save_samples(pipe, arch, raw, cfg, samples_dir / f"step_{trainer.global_step:07d}.png")
        models.save_pipeline(pipe.to("cpu"), Path(cfg.run_dir) / "pipeline")
    skipped = {"skipped_listing": images.skips.bad, "filtered_listing": sum(images.skips.filtered.values()),
               "skipped_training": loader.skips.bad, "samples_read": loader.skips.seen,
               "skip_reasons": ", ".join(f"{r}={images.skips.counts.get(r, 0) + loader.skips.counts.get(r, 0)}"
                                         for r in sorted({*images.skips.counts, *loader.skips.counts}))}
    trainer.finish({"images": len(images), **skipped})
    if trainer.is_main:
        print(skip_summary(images, loader))
        print(f"{arch}: {trainer.global_step} steps on {len(images)} images -> {Path(cfg.run_dir) / 'pipeline'}")
    return {"steps": trainer.global_step, "images": len(images), "arch": arch, **skipped}


if __name__ == "__main__":
    from projects.sd_flux_lab.original import train_sd_cli

    train_sd_cli(sys.argv[1:])  # our options, or the original train_sd.py's (which also generates): original.py
