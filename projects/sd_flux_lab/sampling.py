"""Text-to-image sampling of an SD1.5/SDXL pipeline's UNet through shared.samplers, and image grids.

    images = unet_generate(pipe, arch, prompts, seeds, sampler="ddim", steps=20, guidance_scale=5.0)  # uint8 (N,H,W,3)
    shared.plots.image_grid(images, cols, pad=2) -> PIL image   (the grids of the training steps)
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from projects.sd_flux_lab.conditioning import CONDITIONING
from shared.samplers import sample


def schedule_of(scheduler) -> dict:
    """The scheduler's whole config, `_use_default_values` included: shared.samplers needs it to tell the keys
    the saved file set from the source class's defaults (as diffusers' from_config does)."""
    return dict(scheduler.config)


@torch.no_grad()
def decode(vae, latents: torch.Tensor) -> np.ndarray:
    """Latents -> uint8 images (N, H, W, 3)."""
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    x = vae.decode(latents / vae.config.scaling_factor + shift).sample
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def unet_generate(pipe, arch: str, prompts: Sequence[str], seeds: Sequence[int], *, sampler: str = "ddim",
                  steps: int = 20, guidance_scale: float = 5.0, size: int | None = None, unet=None,
                  batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """One image per (prompt, seed) pair; `unet` overrides pipe.unet (e.g. the model being trained).
    The noise of image i comes from its own seed, so an image does not depend on the batch it is in."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    unet = unet or pipe.unet
    device = next(unet.parameters()).device
    cond_of = CONDITIONING[arch](pipe, device)
    factor = pipe.vae_scale_factor
    side = size or unet.config.sample_size * factor
    if side % factor:
        raise ValueError(f"image size {side} is not a multiple of the VAE's factor {factor}")
    shape = (unet.config.in_channels, side // factor, side // factor)
    pred = pipe.scheduler.config.get("prediction_type", "epsilon")
    was_training = unet.training
    unet.eval()
    out = []
    for lo in range(0, len(prompts), batch_size):
        p, s = list(prompts[lo:lo + batch_size]), list(seeds[lo:lo + batch_size])
        noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(x))) for x in s])
        sizes = torch.tensor([[side, side, 0, 0, side, side]] * len(p))
        cond = cond_of(p, sizes=sizes)
        uncond = cond_of.unconditional(len(p), sizes=sizes) if guidance_scale != 1.0 else None
        latents = sample(lambda x, t, **c: unet(x, t, **c).sample, (len(p), *shape), sampler, steps,
                         generator=None, cond=cond, uncond=uncond, guidance_scale=guidance_scale,
                         prediction_type=pred, schedule=schedule_of(pipe.scheduler), x_T=noise.to(device),
                         progress=progress)
        out.append(decode(pipe.vae, latents.to(pipe.vae.dtype)))
    unet.train(was_training)
    return np.concatenate(out)
