"""Train a small FLUX-architecture transformer (diffusers FluxTransformer2DModel) from scratch by flow matching on
VAE latents: the toy analogue of FLUX. Text comes from a frozen CLIP text encoder (hidden states for the joint
attention, the pooled output for the modulation), the latents are packed into 2x2 patches as FLUX does, and
samples are drawn with shared.samplers' flow-matching Euler.

    text_from=preset      the text encoder + tokenizer of the models.py SD1.5 preset of `scale` (random, frozen)
    text_from=<folder>    those of an SD1.5 pipeline folder (e.g. results/toy/sd_flux_lab/base_sd15)
    vae=<folder>          the AutoencoderKL whose latents are modelled ('' = the preset's random VAE: tiny only)

Outputs in run_dir: transformer/ (save_pretrained; EMA weights when ema_decay > 0), samples/step_*.png,
checkpoints/, metrics.jsonl, config.yaml. Starting the same command again resumes.

    python projects/sd_flux_lab/train_transformer.py scale=toy vae=results/toy/sd_flux_lab/vae/vae
        text_from=results/toy/sd_flux_lab/base_sd15 data_dir=data/toy/sd_flux_lab/train run_dir=runs/flux_toy
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import numpy as np
import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel

from projects.sd_flux_lab import models
from projects.sd_flux_lab.data import BucketBatches, BucketedImages, cache_latents, skip_summary
from projects.sd_flux_lab.loss import FlowMatchingLoss
from projects.sd_flux_lab.sampling import decode
from shared.config import cli, resolve
from shared.data import CaptionDropout, list_images
from shared.plots import image_grid
from shared.io import atomic_dir
from shared.samplers import sample
from shared.train import Trainer, TrainConfig

# transformer sizes per scale (sum(axes_dims_rope) = attention_head_dim)
ARCHITECTURES = {
    "tiny": dict(num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
                 axes_dims_rope=(4, 6, 6)),
    "toy": dict(num_layers=2, num_single_layers=2, attention_head_dim=16, num_attention_heads=4,
                axes_dims_rope=(4, 6, 6)),
    "paper": dict(num_layers=8, num_single_layers=16, attention_head_dim=64, num_attention_heads=12,
                  axes_dims_rope=(16, 24, 24)),
}


@dataclass
class Config(TrainConfig):
    scale: str = "toy"
    run_dir: str = "runs/toy/sd_flux_lab/flux_toy"
    architecture: str = ""  # '' = ARCHITECTURES[scale]
    text_from: str = "preset"
    vae: str = ""
    data_dir: str = "data/toy/sd_flux_lab/train"
    resolution: int = 32
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.0
    time_sampling: str = "logit_normal"  # uniform | logit_normal
    shift: float = 1.0
    caption_dropout: float = 0.1
    min_image_size: int = 16  # shorter side below this: left out, counted as filtered (0 = keep all)
    validation_prompts: List[str] = field(default_factory=lambda: ["a red handwritten three",
                                                                   "a blue handwritten seven"])
    validation_seeds: List[int] = field(default_factory=lambda: [0, 1, 2, 3])
    sample_every: int = 0
    sample_steps: int = 20
    guidance_scale: float = 3.0
    threads: int = 0


PRESETS = {
    "tiny": {"max_steps": 4, "batch_size": 4, "ckpt_every": 2, "log_every": 1, "sample_steps": 2,
             "validation_seeds": [0, 1], "threads": 1},
    "toy": {"max_steps": 1200, "lr_schedule": "cosine", "warmup_steps": 50, "min_lr_ratio": 0.1,
            "ema_decay": 0.999, "ckpt_every": 300, "log_every": 50, "sample_every": 400, "threads": 1},
    "paper": {"max_steps": 100000, "batch_size": 64, "resolution": 256, "lr": 1e-4, "mixed_precision": "bf16",
              "ema_decay": 0.9999, "ckpt_every": 2000, "sample_every": 2000, "shift": 3.0},
}


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/2 * W/2, 4C): 2x2 patches as tokens, FLUX's layout."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, c: int, h: int, w: int) -> torch.Tensor:
    b = tokens.shape[0]
    x = tokens.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, h, w)


def image_ids(h: int, w: int, device) -> torch.Tensor:
    """(h/2 * w/2, 3) rotary position ids: (0, row, column) per patch."""
    ids = torch.zeros(h // 2, w // 2, 3, device=device)
    ids[..., 1] = torch.arange(h // 2, device=device)[:, None]
    ids[..., 2] = torch.arange(w // 2, device=device)[None, :]
    return ids.reshape(-1, 3)


class TextEncoder:
    """Frozen CLIP text encoder: prompts -> (hidden states, pooled), memoised per prompt."""

    def __init__(self, tokenizer, encoder, device):
        self.tokenizer, self.encoder, self.device = tokenizer, encoder.to(device).eval().requires_grad_(False), device
        self._memo: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def __call__(self, prompts) -> dict:
        # one prompt per forward: a batched forward differs in the last bit with its batch-mates, so a memo filled
        # in another order (a resumed run) would drift from an uninterrupted run
        for p in sorted({p for p in prompts if p not in self._memo}):
            ids = self.tokenizer([p], padding="max_length", max_length=self.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt").input_ids.to(self.device)
            out = self.encoder(ids)
            self._memo[p] = (out.last_hidden_state[0], out.pooler_output[0])
        return {"encoder_hidden_states": torch.stack([self._memo[p][0] for p in prompts]),
                "pooled_projections": torch.stack([self._memo[p][1] for p in prompts])}

    @property
    def width(self) -> int:
        return self.encoder.config.hidden_size


def load_text_and_vae(cfg):
    if cfg.text_from == "preset":
        preset = models.get_preset("sd15", cfg.scale if cfg.scale != "paper" else "toy")
        tok, enc = models.clip_tokenizer(), models.build_text_encoder(preset.text_encoders[0], cfg.seed + 10)
    else:
        folder = models.pipeline_folder(cfg.text_from)
        pipe = models.load_pipeline(folder)
        tok, enc = pipe.tokenizer, pipe.text_encoder
    if cfg.vae:
        vae = AutoencoderKL.from_pretrained(cfg.vae, local_files_only=True)
    elif cfg.scale == "tiny":
        vae = models.build_vae(models.get_preset("sd15", "tiny").vae, cfg.seed + 1)
    else:
        raise ValueError("vae: give a trained AutoencoderKL folder (vae=<folder>); random VAEs are for scale=tiny")
    return tok, enc, vae.eval().requires_grad_(False)


@torch.no_grad()
def transformer_generate(transformer, vae, text, prompts, seeds, steps, guidance_scale, size, sampler="flow_euler"):
    dev = next(transformer.parameters()).device
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    c, h, w = vae.config.latent_channels, size // factor, size // factor
    noise = torch.stack([torch.randn((c, h, w), generator=torch.Generator().manual_seed(int(s))) for s in seeds])
    ids = image_ids(h, w, dev)

    def denoise(x, t, encoder_hidden_states, pooled_projections):
        txt_ids = torch.zeros(encoder_hidden_states.shape[1], 3, device=dev)
        out = transformer(pack(x), encoder_hidden_states=encoder_hidden_states,
                          pooled_projections=pooled_projections, timestep=t / 1000, img_ids=ids,
                          txt_ids=txt_ids).sample
        return unpack(out, c, h, w)

    was = transformer.training
    transformer.eval()
    latents = sample(denoise, noise.shape, sampler, steps, generator=None, cond=text(list(prompts)),
                     uncond=text([""] * len(prompts)) if guidance_scale != 1 else None,
                     guidance_scale=guidance_scale, prediction_type="flow", x_T=noise.to(dev), progress=False)
    transformer.train(was)
    return decode(vae, latents)


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tok, enc, vae = load_text_and_vae(cfg)
    images = BucketedImages(list_images(cfg.data_dir), cfg.resolution, seed=cfg.seed, min_size=cfg.min_image_size)
    trainer = Trainer(cfg)
    dev = trainer.device
    vae.to(dev)
    text = TextEncoder(tok, enc, dev)
    arch = dict(ARCHITECTURES[cfg.architecture or cfg.scale])
    torch.manual_seed(cfg.seed)
    model = FluxTransformer2DModel(in_channels=4 * vae.config.latent_channels, joint_attention_dim=text.width,
                                   pooled_projection_dim=text.width, **arch)
    model, _ = trainer.add("transformer", model, torch.optim.AdamW(model.parameters(), lr=cfg.lr,
                                                                   weight_decay=cfg.weight_decay))
    raw = trainer.unit("transformer").raw
    data = cache_latents(images, vae, Path(cfg.run_dir) / "latents.safetensors")
    loader = trainer.register("train", BucketBatches(data, cfg.batch_size, cfg.seed, trainer.rank,
                                                     trainer.world_size))
    gen = trainer.generator("noise", cfg.seed * 1000 + trainer.rank)
    dropper = CaptionDropout(cfg.caption_dropout, cfg.seed)
    loss_fn = FlowMatchingLoss(cfg.time_sampling, cfg.shift)
    scaling, shift = vae.config.scaling_factor, getattr(vae.config, "shift_factor", None) or 0.0
    samples_dir = Path(cfg.run_dir) / "samples"

    def save_samples(step: int) -> None:
        prompts = [p for p in cfg.validation_prompts for _ in cfg.validation_seeds]
        seeds = [s for _ in cfg.validation_prompts for s in cfg.validation_seeds]
        ims = transformer_generate(raw, vae, text, prompts, seeds, cfg.sample_steps, cfg.guidance_scale,
                                   cfg.resolution)
        samples_dir.mkdir(parents=True, exist_ok=True)
        image_grid(np.asarray(ims), len(cfg.validation_seeds), pad=2).save(samples_dir / f"step_{step:07d}.png")

    for batch in trainer.batches(loader):
        with torch.no_grad():
            lat = batch["latent_mean"] + batch["latent_std"] * torch.randn(batch["latent_mean"].shape,
                                                                           generator=gen, device=dev)
            lat = (lat - shift) * scaling
            captions = [c if not dropper.drops(k, loader.epoch) else "" for c, k in
                        zip(batch["caption"], batch["key"])]
            cond = text(captions)
        _, c, h, w = lat.shape
        ids = image_ids(h, w, dev)
        txt_ids = torch.zeros(cond["encoder_hidden_states"].shape[1], 3, device=dev)

        def denoise(x, t):
            out = model(pack(x), timestep=t / 1000, img_ids=ids, txt_ids=txt_ids, **cond).sample
            return unpack(out, c, h, w)

        loss = loss_fn(denoise, lat, gen)
        trainer.backward(loss)
        trainer.optimizer_step()
        trainer.log(loss=loss)
        step = trainer.global_step + 1
        if cfg.sample_every and step % cfg.sample_every == 0 and step < cfg.max_steps and trainer.is_main:
            ema = trainer.ema("transformer")
            with (ema.swap(raw) if ema else contextlib.nullcontext()):
                save_samples(step)

    if trainer.is_main:
        ema = trainer.ema("transformer")
        if ema is not None:
            ema.copy_to(raw)
        save_samples(trainer.global_step)
        with atomic_dir(Path(cfg.run_dir) / "transformer") as tmp:
            raw.to("cpu").save_pretrained(str(tmp))
    skipped = {"skipped_listing": images.skips.bad, "skipped_training": loader.skips.bad}
    trainer.finish({"images": len(images), **skipped})
    if trainer.is_main:
        print(skip_summary(images, loader))
    return {"steps": trainer.global_step, **skipped}


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
