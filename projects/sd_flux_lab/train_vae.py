"""Train an AutoencoderKL (the latent space of the toy SD models): reconstruction + KL, optional perceptual and
hinge-GAN terms.

`perceptual=`: '' (off), `digits:<features.safetensors>` (the toy digits CNN: the toy preset uses it) or
`vgg16:<torchvision VGG16 state dict>` (LPIPS-style, uniform layer weights; paper scale), weighted by
`perceptual_weight`.

Starts from the models.py preset VAE config for `arch`/`scale` (`init=preset`) or from an AutoencoderKL folder
(`init=<folder>`). At the end the latent scale (1 / std of the latents over `scale_images` training images, the
way SD's 0.18215 was chosen) is written into the config, and the model is saved as a diffusers folder.

Outputs in run_dir: vae/ (AutoencoderKL.save_pretrained), samples/recon.png (originals above reconstructions),
checkpoints/, metrics.jsonl, metrics.json (recon_mse, psnr, scaling_factor), config.yaml.

    python projects/sd_flux_lab/train_vae.py scale=toy data_dir=data/toy/sd_flux_lab/train run_dir=runs/vae
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from torch import nn

from projects.sd_flux_lab import models
from projects.sd_flux_lab.data import BucketBatches, BucketedImages, skip_summary
from projects.sd_flux_lab.loss import HingeGANLoss, VAELoss, build_perceptual
from shared.config import cli, resolve
from shared.data import list_images
from shared.io import atomic_dir
from shared.plots import image_grid
from shared.train import Trainer, TrainConfig


@dataclass
class Config(TrainConfig):
    scale: str = "toy"
    run_dir: str = "runs/toy/sd_flux_lab/vae"
    init: str = "preset"  # 'preset' (models.py config of arch/scale) or an AutoencoderKL folder
    arch: str = "sd15"
    data_dir: str = "data/toy/sd_flux_lab/train"
    resolution: int = 32
    batch_size: int = 32
    lr: float = 1e-3
    kl_weight: float = 1e-4
    recon: str = "l1"  # l1 | l2
    perceptual: str = ""  # '' | digits:<features.safetensors> | vgg16:<state dict> (loss.PERCEPTUAL)
    perceptual_weight: float = 0.0
    gan_weight: float = 0.0  # 0 = no discriminator
    gan_start: int = 0  # steps of reconstruction-only training before the GAN term
    disc_lr: float = 1e-4
    scale_images: int = 256
    min_image_size: int = 16  # shorter side below this: left out, counted as filtered (0 = keep all)
    threads: int = 0


PRESETS = {
    "tiny": {"max_steps": 4, "batch_size": 8, "ckpt_every": 2, "log_every": 1, "scale_images": 16, "threads": 1},
    "toy": {"max_steps": 500, "lr_schedule": "cosine", "warmup_steps": 20, "min_lr_ratio": 0.1, "ckpt_every": 200,
            "log_every": 50, "threads": 1},
    "paper": {"max_steps": 50000, "batch_size": 8, "resolution": 256, "lr": 4.5e-6, "kl_weight": 1e-6,
              "gan_weight": 0.5, "gan_start": 50001 // 2, "mixed_precision": "bf16", "ckpt_every": 1000},
}


class PatchDiscriminator(nn.Module):
    """A small PatchGAN: one real/fake logit per patch."""

    def __init__(self, channels: int = 32, layers: int = 2):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = channels
        for _ in range(layers - 1):
            mods += [nn.Conv2d(c, 2 * c, 4, 2, 1), nn.GroupNorm(8, 2 * c), nn.LeakyReLU(0.2)]
            c *= 2
        mods.append(nn.Conv2d(c, 1, 3, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_vae(cfg) -> AutoencoderKL:
    if cfg.init == "preset":
        preset = models.get_preset(cfg.arch, cfg.scale)
        if not preset.vae:
            raise ValueError(f"preset {cfg.arch}/{cfg.scale} has no VAE config; pass init=<AutoencoderKL folder>")
        return models.build_vae(preset.vae, cfg.seed)
    if not (Path(cfg.init) / "config.json").is_file():
        raise FileNotFoundError(f"init={cfg.init}: not an AutoencoderKL folder (no config.json)")
    return AutoencoderKL.from_pretrained(cfg.init, local_files_only=True)


@torch.no_grad()
def latent_scale(vae: AutoencoderKL, dataset, n: int, device) -> float:
    xs = torch.stack([s["pixels"] for s in dataset.first_good(n)]).to(device)
    return float(1.0 / vae.encode(xs).latent_dist.sample(torch.Generator(device).manual_seed(0)).std())


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    images = BucketedImages(list_images(cfg.data_dir), cfg.resolution, seed=cfg.seed, min_size=cfg.min_image_size)
    perceptual = build_perceptual(cfg.perceptual)  # bad options fail before the Trainer takes signals and files
    if perceptual is None and cfg.perceptual_weight > 0:
        raise ValueError(f"perceptual_weight={cfg.perceptual_weight} needs perceptual=<name>:<weights path>")
    trainer = Trainer(cfg)
    dev = trainer.device
    if perceptual is not None:
        perceptual = perceptual.to(dev)
    vae = build_vae(cfg).train()
    vae, _ = trainer.add("vae", vae, torch.optim.AdamW(vae.parameters(), lr=cfg.lr, betas=(0.5, 0.9)))
    raw = trainer.unit("vae").raw
    gan = HingeGANLoss() if cfg.gan_weight > 0 else None
    if gan is not None:
        disc = PatchDiscriminator()
        disc, _ = trainer.add("disc", disc, torch.optim.AdamW(disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.9)))
    loss_fn = VAELoss(cfg.kl_weight, cfg.recon, perceptual, cfg.perceptual_weight)
    loader = trainer.register("train", BucketBatches(images, cfg.batch_size, cfg.seed, trainer.rank,
                                                     trainer.world_size))
    gen = trainer.generator("posterior", cfg.seed * 1000 + trainer.rank, device=dev)
    for batch in trainer.batches(loader):
        x = batch["pixels"]
        posterior = raw.encode(x).latent_dist  # encode/decode are methods, not forward: call them on the module
        recon = raw.decode(posterior.sample(gen)).sample
        loss, parts = loss_fn(x, recon, posterior)
        adversarial = gan is not None and trainer.global_step >= cfg.gan_start
        if adversarial:
            parts["g_adv"] = gan.generator(disc(recon)).detach()
            loss = loss + cfg.gan_weight * gan.generator(disc(recon))
        trainer.backward(loss)
        if gan is not None:
            trainer.optimizer_step("vae")
            trainer.zero_grad("disc")  # the generator term left gradients in the discriminator
            if adversarial:
                d_loss = gan.discriminator(disc(x), disc(recon.detach()))
                trainer.backward(d_loss)
                parts["d_loss"] = d_loss.detach()
            trainer.optimizer_step("disc")
        else:
            trainer.optimizer_step()
        trainer.log(loss=loss, **parts)

    metrics = {}
    if trainer.is_main:
        raw.eval()
        with torch.no_grad():
            xs = torch.stack([s["pixels"] for s in images.first_good(cfg.scale_images)]).to(dev)
            rec = raw.decode(raw.encode(xs).latent_dist.mode()).sample.clamp(-1, 1)
            mse = float(((rec - xs) / 2).pow(2).mean())  # in 0..1 pixel units
        metrics = {"recon_mse": mse, "psnr": 10 * math.log10(1 / max(mse, 1e-12)),
                   "scaling_factor": latent_scale(raw, images, cfg.scale_images, dev)}
        raw.register_to_config(scaling_factor=metrics["scaling_factor"])
        with atomic_dir(Path(cfg.run_dir) / "vae") as tmp:
            raw.to("cpu").save_pretrained(str(tmp))
        both = torch.cat([xs[:8], rec[:8]]).cpu()
        both = ((both + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        (Path(cfg.run_dir) / "samples").mkdir(parents=True, exist_ok=True)
        image_grid(both, min(8, len(xs)), pad=2).save(Path(cfg.run_dir) / "samples" / "recon.png")
        print(skip_summary(images, loader))
        print(f"vae: {trainer.global_step} steps, recon MSE {mse:.5f} (PSNR {metrics['psnr']:.2f} dB), "
              f"scaling_factor {metrics['scaling_factor']:.4f} -> {Path(cfg.run_dir) / 'vae'}")
    metrics.update(skipped_listing=images.skips.bad, skipped_training=loader.skips.bad)
    trainer.finish(metrics)
    return metrics


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
