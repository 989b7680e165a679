"""Sampling GLIDE models: classifier-free guidance on eps, the upsampler path, every sampler by name.

    x64 = generate(base, opts, tok, ["a red handwritten seven"], seeds=[0], sampler="plms", steps="100",
                   guidance_scale=3.0)                                     # (B, 3, 64, 64) in [-1, 1]
    x256 = upsample(up, up_opts, tok, prompts, x64, seeds=[0])     # DDIM on fast27, x_T * 0.997, 8-bit low-res

Samplers (SAMPLERS): "glide" is GLIDE's own respaced ancestral DDPM with the learned variance and "glide_ddim" its
respaced DDIM (diffusion.py; both take GLIDE respacing strings: "100", "fast27", "ddim50", "27"; the upsampler
default is glide_ddim on fast27, as GLIDE's notebook samples it); the others are diffusers schedulers through
shared.samplers: "plms" (default for the base, as glide-finetune), "ddim" (eta), "euler", "euler_a" (eta 1),
"dpm++" (order 1 or 2 via dpm_order), "ddpm" (diffusers' DDPM reading the learned_range variance). For those,
`steps` is a count (a respacing string counts as its number of steps).

Guidance is GLIDE's: one forward over [uncond; cond], eps = eps_u + s (eps_c - eps_u) on the first 3 channels
only; the variance channels are the conditional half's (shared.samplers guidance "auto", which is "glide" for a
learned-variance output). The unconditional
input is the empty prompt (all end tokens, mask False), which is what training with uncond_p drops to.

CLIP guidance (`clip_guidance=`, a clip_guidance.ClipGuidance with GLIDE's noised CLIP): the gradient of the
CLIP image-text similarity at x_t is added to every step: to the mean for sampler="glide" (as GLIDE samples
with CLIP), to eps for every other sampler (the denoiser is wrapped; shared.samplers is unchanged). See
clip_guidance.py for the cutout schedule.

Per-sample seeds: sample i draws all its noise from its own generator (seed_i), so a sample does not depend on
the batch it was drawn in (sample.py shards by sample index).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from projects.glide_finetune.diffusion import (create_diffusion, diffusers_schedule, quantize_8bit, randn,
                                               respacing_steps)
from shared.samplers import guided_output, sample as shared_sample


# shared.samplers' "auto" form: "glide" (guide eps, keep the conditional variance) because the output has twice the
# sample's channels; plain cfg over the variance channels is refused there
GUIDANCE = "auto"
# GLIDE's own samplers clamp each step's x0 estimate to the image range (clip_denoised=True); the diffusers samplers
# get the same clamp. Without it, on the toy base (cosine schedule) Euler, Euler ancestral and DPM++, which start at
# t=999 (1/sqrt(alpha_bar) ~ 2e4), stayed at FD ~13 / prompt accuracy ~0.28 at every step count, and DDIM fell from
# FD 5.9 at 10 steps to 13.8 at 100 as its first step neared t=999; PLMS, starting at t=901, was unaffected.
CLIP_DENOISED = 1.0


@dataclass(frozen=True)
class Sampler:
    preset: str  # a shared.samplers preset, or "glide" for our respaced DDPM
    takes_eta: bool = False
    description: str = ""


SAMPLERS: dict[str, Sampler] = {
    "plms": Sampler("plms", description="PLMS (diffusers PNDM without Runge-Kutta warm-up); glide-finetune's default"),
    "ddim": Sampler("ddim", takes_eta=True, description="DDIM; sampler_eta=0 deterministic"),
    "euler": Sampler("euler", description="Euler ODE (Karras et al.)"),
    "euler_a": Sampler("euler_a", description="Euler ancestral (eta 1)"),
    "dpm++": Sampler("dpm++", description="DPM-Solver++ multistep; dpm_order 1 or 2"),
    "ddpm": Sampler("ddpm", description="diffusers DDPM with the learned_range variance"),
    "glide": Sampler("glide", description="GLIDE's respaced ancestral DDPM with the learned variance"),
    "glide_ddim": Sampler("glide_ddim", takes_eta=True,
                          description="GLIDE's respaced DDIM (how its notebook samples the upsampler, on fast27)"),
}


def sampler_preset(sampler: str, dpm_order: int = 2) -> str:
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r}; available: {', '.join(SAMPLERS)}")
    if sampler == "dpm++":
        if dpm_order not in (1, 2):
            raise ValueError(f"dpm_order={dpm_order}; DPM-Solver++ here has order 1 or 2")
        return "dpm++" if dpm_order == 2 else "dpm++_1"
    return SAMPLERS[sampler].preset


def generators(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    return [torch.Generator(device).manual_seed(int(s)) for s in seeds]


def text_condition(model, tokenizer, prompts: Sequence[str], device) -> tuple[dict, dict]:
    """(cond, uncond) keyword arguments for the model: tokens + mask of the prompts and of the empty prompt."""
    tokens, mask = tokenizer.batch(list(prompts), model.text_ctx)
    empty_tokens, empty_mask = tokenizer.batch([""], model.text_ctx)
    return ({"tokens": tokens.to(device), "mask": mask.to(device)},
            {"tokens": empty_tokens.to(device), "mask": empty_mask.to(device)})


def run_sampler(model, options: Mapping[str, Any], shape: Sequence[int], cond: Mapping[str, Any],
                uncond: Mapping[str, Any] | None, *, seeds: Sequence[int], sampler: str = "plms",
                steps: str | int = "100", guidance_scale: float = 1.0, sampler_eta: float = 0.0, dpm_order: int = 2,
                noise_scale: float = 1.0, device: torch.device | str = "cpu", progress: bool = False,
                count_nfe: Callable[[int], None] | None = None,
                denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                clip_guidance=None) -> torch.Tensor:
    """Core loop for both stages: x_T = noise_scale * N(0, I) per sample seed, then the named sampler.
    `denoised_fn` (GLIDE's own sampler only) edits each step's x0 estimate; `clip_guidance` adds the noised
    CLIP's gradient (clip_guidance.py)."""
    device = torch.device(device)
    gens = generators(seeds, device)
    if len(gens) != shape[0]:
        raise ValueError(f"{len(gens)} seeds for {shape[0]} samples")
    x_T = randn(shape, gens, device) * noise_scale
    guided = uncond is not None and guidance_scale != 1.0

    def denoiser(x, t, **kw):
        if count_nfe is not None:
            count_nfe(x.shape[0])
        return model(x, t, **kw)

    preset = sampler_preset(sampler, dpm_order)
    clip_on = clip_guidance is not None and clip_guidance.scale != 0
    if clip_on:
        clip_guidance.check_diffusion(options)
        train_alphas = create_diffusion(options, "").alphas_cumprod  # eps shift: alpha_bar at the model's t
    if preset in ("glide", "glide_ddim"):
        diffusion = create_diffusion(options, str(steps))

        def model_fn(x, t):
            return guided_output(denoiser, x, t.to(x.dtype), cond, uncond if guided else None, guidance_scale, GUIDANCE)

        if clip_on and preset == "glide":
            from projects.glide_finetune.clip_guidance import clip_guided_p_sample_loop

            return clip_guided_p_sample_loop(diffusion, model_fn, shape, clip_guidance, noise=x_T, generator=gens,
                                             device=device, denoised_fn=denoised_fn, progress=progress)
        if clip_on:
            from projects.glide_finetune.clip_guidance import wrap_eps

            model_fn = wrap_eps(model_fn, clip_guidance, train_alphas)
        if preset == "glide_ddim":
            return diffusion.ddim_sample_loop(model_fn, shape, eta=sampler_eta, noise=x_T, generator=gens,
                                              device=device, progress=progress, denoised_fn=denoised_fn)
        return diffusion.p_sample_loop(model_fn, shape, noise=x_T, generator=gens, device=device, progress=progress,
                                       denoised_fn=denoised_fn)
    if denoised_fn is not None:
        raise ValueError(f"sampler={sampler!r}: editing the x0 estimate (inpainting) needs sampler='glide'")
    n = respacing_steps(steps, int(options["diffusion_steps"])) if isinstance(steps, str) else int(steps)
    eta = float(sampler_eta) if SAMPLERS[sampler].takes_eta else None
    if clip_on:  # wrapped under CFG's doubled batch: both halves get the same eps shift
        from projects.glide_finetune.clip_guidance import wrap_eps

        denoiser = wrap_eps(denoiser, clip_guidance, train_alphas)
    return shared_sample(denoiser, shape, preset, n, generator=gens, cond=dict(cond),
                         uncond=dict(uncond) if guided else None, guidance_scale=guidance_scale if guided else 1.0,
                         guidance=GUIDANCE, learned_variance=True, schedule=diffusers_schedule(options), eta=eta,
                         x_T=x_T, device=device, progress=progress, clip_denoised=CLIP_DENOISED)


@torch.no_grad()
def generate(model, options: Mapping[str, Any], tokenizer, prompts: Sequence[str], *, seeds: Sequence[int],
             sampler: str = "plms", steps: str | int = "100", guidance_scale: float = 3.0, sampler_eta: float = 0.0,
             dpm_order: int = 2, side_x: int | None = None, side_y: int | None = None,
             device: torch.device | str = "cpu", progress: bool = False, count_nfe=None,
             inpaint_image: torch.Tensor | None = None, inpaint_mask: torch.Tensor | None = None,
             clip_guidance=None) -> torch.Tensor:
    """Base-model samples (B, 3, side_y, side_x) in [-1, 1], guided with the empty prompt (and, with
    `clip_guidance`, by the noised CLIP's gradient).

    Inpainting models: `inpaint_image` (B, 3, H, W) in [-1, 1] and `inpaint_mask` (B, 1, H, W), 1 = keep. Both
    halves of the guided batch see them, and (sampler="glide", as GLIDE's notebook does) each step's x0 estimate
    takes the known pixels from the image."""
    h = side_y or int(options["image_size"])
    w = side_x or int(options["image_size"])
    cond, uncond = text_condition(model, tokenizer, prompts, device)
    denoised_fn = None
    if getattr(model, "inpaint", False) and (inpaint_image is None) != (inpaint_mask is None):
        raise ValueError("inpainting needs both inpaint_image and inpaint_mask (or neither: nothing known)")
    if getattr(model, "inpaint", False) and inpaint_image is not None:
        image, mask = inpaint_image.to(device).float(), inpaint_mask.to(device).float()
        cond.update(inpaint_image=image, inpaint_mask=mask)

        def denoised_fn(x0):
            return x0 * (1 - mask) + image * mask
    out = run_sampler(model, options, (len(prompts), 3, h, w), cond, uncond, seeds=seeds, sampler=sampler,
                      steps=steps, guidance_scale=guidance_scale, sampler_eta=sampler_eta, dpm_order=dpm_order,
                      device=device, progress=progress, count_nfe=count_nfe, denoised_fn=denoised_fn,
                      clip_guidance=clip_guidance)
    return out.clamp(-1, 1)


@torch.no_grad()
def upsample(model, options: Mapping[str, Any], tokenizer, prompts: Sequence[str], low_res: torch.Tensor, *,
             seeds: Sequence[int], sampler: str = "glide_ddim", steps: str | int = "fast27",
             upsample_temp: float = 0.997,
             sampler_eta: float = 0.0, dpm_order: int = 2, device: torch.device | str = "cpu",
             progress: bool = False) -> torch.Tensor:
    """Upsampler samples from base samples: low-res quantised to 8 bit, x_T scaled by upsample_temp, no guidance
    (the released upsampler was trained with uncond_p 0)."""
    if not model.super_res:
        raise ValueError("upsample() needs a super-resolution model (options super_res=True)")
    size = int(options["image_size"])
    cond, _ = text_condition(model, tokenizer, prompts, device)
    cond["low_res"] = quantize_8bit(low_res.to(device))
    out = run_sampler(model, options, (len(prompts), 3, size, size), cond, None, seeds=seeds, sampler=sampler,
                      steps=steps, sampler_eta=sampler_eta, dpm_order=dpm_order, noise_scale=upsample_temp,
                      device=device, progress=progress)
    return out.clamp(-1, 1)
