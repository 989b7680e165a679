"""CLIP guidance with GLIDE's noised CLIP: the sampling-time gradient (with timestep-scheduled cutouts) and the
CLIP loss term for fine-tuning.

    guide = ClipGuidance(clip, prompts, scale=3.0, max_cutouts=8, cut_min=0.5, seeds=seeds)
    x = generate(model, opts, tok, prompts, seeds=seeds, sampler="glide", steps="100", guidance_scale=1.0,
                 clip_guidance=guide)                       # sampling.py: every sampler takes it
    loss_fn = ClipFinetuneLoss(diffusion, clip, weight=0.1).bind(captions)
    terms = loss_fn(model, x0, t, model_kwargs, noise, loss="mse")   # = diffusion.training_losses + "clip"

The guidance gradient is GLIDE's (glide-text2im clip/model_creation.py cond_fn): g = scale * d/dx_t of
exp(logit_scale) * <z_text, z_image(x_t, t)>, the noised CLIP looking at the noisy sample x_t itself with the
timestep t (no x0 estimate, no backprop through the diffusion model). How g enters the step:
  * sampler="glide" (GLIDE's respaced ancestral DDPM, how the original samples with CLIP): the mean is shifted,
    mean + variance * g (guided-diffusion's condition_mean), in `clip_guided_p_sample_loop`, which is the same
    loop as GaussianDiffusion.p_sample_loop (same noise draws: with scale 0 the samples are identical);
  * every other sampler (glide_ddim, and the diffusers ones through shared.samplers): eps is shifted,
    eps - sqrt(1 - alpha_bar_t) * g (guided-diffusion's condition_score, what its DDIM does with a cond_fn), by
    wrapping the denoiser, so shared.samplers itself is untouched. Under classifier-free guidance both halves get
    the same shift, so the guided eps is shifted by exactly that amount too.

Cutouts (`max_cutouts` > 1): the gradient is averaged over square crops of x_t, each resized to the CLIP's input
size; cutout 0 is always the whole image. Their number and size follow the timestep (T diffusion steps,
p = 1 - t / (T - 1), 0 at the noisiest step, 1 at the clean end):
    n(t)        = 1 + round((max_cutouts - 1) * p)
    min_side(t) = ceil((1 - (1 - cut_min) * p) * side),  crop sides uniform in [min_side, side]
Why this schedule: the noised CLIP was trained on whole noisy images. A crop resized up to the CLIP's input
spreads each noise pixel over several, so at high noise crops are out of the distribution it knows and mostly
score noise; and early steps decide the layout, which only the whole image shows. Near the clean end the noise
is small, crops look like the clean crops CLIP-style cutouts rely on, and many small ones add gradient on detail.
So: one whole-image view at t = T - 1 (exactly the original), growing linearly to `max_cutouts` views down to
`cut_min` of the side at t = 0. With max_cutouts = 1 (the default) this is the original's guidance exactly.
Cutout positions and sides come from per-sample generators (`seeds`), so a sample does not depend on its batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from projects.glide_finetune.diffusion import GaussianDiffusion, _start, randn

CUTOUT_SEED_OFFSET = 2 * 10 ** 6  # cutout generators: seed + this (apart from the sample and upsampler seeds)


def cutout_schedule(t: int, num_timesteps: int, max_cutouts: int, cut_min: float) -> tuple[int, float]:
    """(number of cutouts, smallest side as a fraction of the image) at diffusion timestep t."""
    if max_cutouts < 1:
        raise ValueError(f"clip_cutouts={max_cutouts}: at least 1 (the whole image)")
    if not 0 < cut_min <= 1:
        raise ValueError(f"clip_cut_min={cut_min}: a fraction of the side in (0, 1]")
    p = 1.0 - min(max(int(t), 0), num_timesteps - 1) / max(1, num_timesteps - 1)
    return 1 + int(math.floor((max_cutouts - 1) * p + 0.5)), 1.0 - (1.0 - cut_min) * p


def make_cutouts(x: torch.Tensor, n: int, min_frac: float, out_size: int,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[int]]:
    """n views of one image x (3, H, W): the whole image, then n - 1 random square crops with sides in
    [ceil(min_frac * side), side], each resized to out_size (bilinear, antialiased when shrinking).
    Returns (n, 3, out_size, out_size) and the crop sides."""
    side = min(x.shape[-2:])
    lo = min(side, max(1, math.ceil(min_frac * side - 1e-9)))
    views, sides = [x[None]], [side]
    for _ in range(n - 1):
        s = int(torch.randint(lo, side + 1, (1,), generator=generator))
        oy = int(torch.randint(0, x.shape[-2] - s + 1, (1,), generator=generator))
        ox = int(torch.randint(0, x.shape[-1] - s + 1, (1,), generator=generator))
        views.append(x[None, :, oy:oy + s, ox:ox + s])
        sides.append(s)
    out = [v if v.shape[-2:] == (out_size, out_size) else
           F.interpolate(v, size=(out_size, out_size), mode="bilinear", align_corners=False,
                         antialias=v.shape[-1] > out_size) for v in views]
    return torch.cat(out), sides


@dataclass
class ClipGuidance:
    """The noised CLIP's gradient for `prompts` (one per sample), times `scale` (GLIDE: clip guidance_scale)."""
    clip: Any
    prompts: Sequence[str]
    scale: float = 3.0
    max_cutouts: int = 1
    cut_min: float = 0.5
    seeds: Sequence[int] | None = None
    z_text: torch.Tensor | None = field(default=None, repr=False)
    generators: list | None = field(default=None, repr=False)

    def __post_init__(self):
        cutout_schedule(0, 2, self.max_cutouts, self.cut_min)  # validates both
        if self.z_text is None:
            with torch.no_grad():
                self.z_text = self.clip.text_embeddings(list(self.prompts)).float()
        if self.generators is None and self.seeds is not None:
            if len(self.seeds) != len(self.prompts):
                raise ValueError(f"{len(self.seeds)} seeds for {len(self.prompts)} prompts")
            self.generators = [torch.Generator().manual_seed(int(s) + CUTOUT_SEED_OFFSET) for s in self.seeds]

    def check_diffusion(self, options: Mapping[str, Any]) -> None:
        """The CLIP's timestep embedding only means something for the noise schedule it was trained against."""
        cfg = self.clip.cfg
        if int(options["diffusion_steps"]) != cfg.n_timesteps or str(options["noise_schedule"]) != cfg.beta_schedule:
            raise ValueError(f"CLIP guidance: the noised CLIP was trained against {cfg.n_timesteps} steps of "
                             f"{cfg.beta_schedule}; this model diffuses with {options['diffusion_steps']} steps of "
                             f"{options['noise_schedule']} (guide the base model, not the upsampler)")

    def score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per sample: exp(logit_scale) * cos(text, image), averaged over the timestep's cutouts."""
        t_int = t.round().long().clamp(0, self.clip.cfg.n_timesteps - 1)
        if x.shape[0] != len(self.z_text):
            raise ValueError(f"CLIP guidance for {len(self.z_text)} prompts got a batch of {x.shape[0]}")
        views, steps, owner = [], [], []
        for b in range(x.shape[0]):
            n, frac = cutout_schedule(int(t_int[b]), self.clip.cfg.n_timesteps, self.max_cutouts, self.cut_min)
            gen = self.generators[b] if self.generators is not None else None
            v, _ = make_cutouts(x[b], n, frac, self.clip.image_size, gen)
            views.append(v)
            steps += [t_int[b]] * n
            owner += [b] * n
        views = torch.cat(views)
        owner_t = torch.tensor(owner, device=x.device)
        sim = self.clip.similarity(views.float(), torch.stack(steps).to(x.device), self.z_text[owner_t].to(x.device))
        counts = torch.bincount(owner_t, minlength=x.shape[0]).to(sim.dtype)
        return torch.zeros(x.shape[0], device=x.device, dtype=sim.dtype).index_add(0, owner_t, sim) / counts

    def grad(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """scale * d score / d x (each sample's gradient is its own: the batch sum separates)."""
        with torch.enable_grad():
            x_var = x.detach().float().requires_grad_(True)
            g = torch.autograd.grad(self.score(x_var, t).sum(), x_var)[0]
        return (g * self.scale).to(x.dtype)

    def eps_shift(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor,
                  alphas_cumprod: np.ndarray) -> torch.Tensor:
        """Model output with eps (the first 3 channels) moved by -sqrt(1 - alpha_bar_t) * g (score conditioning).
        A doubled batch ([uncond; cond], classifier-free guidance) gets the cond half's gradient on both halves."""
        b = len(self.z_text)
        if x.shape[0] not in (b, 2 * b):
            raise ValueError(f"CLIP guidance for {b} prompts got a batch of {x.shape[0]}")
        xs, ts = (x, t) if x.shape[0] == b else (x[b:], t[b:])
        g = self.grad(xs, ts)
        if x.shape[0] == 2 * b:
            g = torch.cat([g, g])
        idx = t.round().long().clamp(0, len(alphas_cumprod) - 1).cpu().numpy()
        coef = torch.from_numpy(np.sqrt(1.0 - alphas_cumprod[idx])).to(x.device, torch.float32).view(-1, 1, 1, 1)
        c = x.shape[1]
        return torch.cat([out[:, :c] - (coef * g.float()).to(out.dtype), out[:, c:]], dim=1)


def wrap_eps(fn: Callable[..., torch.Tensor], guidance: ClipGuidance,
             alphas_cumprod: np.ndarray) -> Callable[..., torch.Tensor]:
    """A denoiser / model_fn whose eps carries the CLIP gradient (for every sampler but "glide")."""
    def guided(x, t, **kw):
        out = fn(x, t, **kw)
        out = out.sample if hasattr(out, "sample") else (out[0] if isinstance(out, (tuple, list)) else out)
        return guidance.eps_shift(out, x, t, alphas_cumprod)

    return guided


@torch.no_grad()
def clip_guided_p_sample_loop(diffusion: GaussianDiffusion, model_fn, shape: Sequence[int],
                              guidance: ClipGuidance | None, *, noise: torch.Tensor | None = None,
                              generator=None, device=None, clip_denoised: bool = True,
                              denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                              progress: bool = False) -> torch.Tensor:
    """GaussianDiffusion.p_sample_loop with the CLIP gradient added to each step's mean (mean + variance * g),
    g taken at x_t with the model's (original) timestep, as GLIDE's CLIP-guided sampling does."""
    from tqdm.auto import tqdm

    x, device = _start(shape, noise, generator, device)
    for i in tqdm(range(diffusion.num_timesteps - 1, -1, -1), disable=not progress, leave=False, desc="clip ddpm"):
        t = torch.full((x.shape[0],), i, device=device, dtype=torch.long)
        t_model = diffusion.model_timesteps(t)
        out = diffusion.p_mean_variance(model_fn(x, t_model).float(), x, t, clip_denoised, denoised_fn)
        mean = out["mean"]
        if guidance is not None and guidance.scale != 0:
            mean = mean + out["variance"] * guidance.grad(x, t_model).float()
        z = randn(x.shape, generator, device)
        x = mean + (float(i > 0) * torch.exp(0.5 * out["log_variance"])) * z
    return x


@dataclass(frozen=True)
class ClipFinetuneLoss:
    """GaussianDiffusion.training_losses plus a noised-CLIP term on the model's x0 prediction (same call).

    clip term (per sample) = 1 - cos(z_text(caption), z_image(x0_hat, t=0)), x0_hat predicted from the model's
    eps at the sampled t; loss = the diffusion loss + weight * clip term. The CLIP is frozen (its parameters get no
    gradient); the gradient reaches the diffusion model through x0_hat. Captions dropped to "" by uncond_p get no
    CLIP term (there is no text to match). `bind(captions)` gives the per-batch loss function."""
    diffusion: GaussianDiffusion
    clip: Any
    weight: float = 0.1
    captions: tuple[str, ...] | None = None

    def __post_init__(self):
        self.clip.requires_grad_(False)

    def bind(self, captions: Sequence[str]) -> "ClipFinetuneLoss":
        return replace(self, captions=tuple(captions))

    def __call__(self, model_fn, x0: torch.Tensor, t: torch.Tensor, model_kwargs: Mapping | None = None,
                 noise: torch.Tensor | None = None, loss: str = "mse") -> dict[str, torch.Tensor]:
        if self.captions is None or len(self.captions) != x0.shape[0]:
            raise ValueError(f"ClipFinetuneLoss: bind(captions) to the batch's {x0.shape[0]} captions first")
        seen: dict[str, torch.Tensor] = {}

        def capture(x_t, t_model, **kw):  # the diffusion loss's own forward: no second model call
            out = model_fn(x_t, t_model, **kw)
            seen.update(x_t=x_t, out=out)
            return out

        terms = self.diffusion.training_losses(capture, x0, t, model_kwargs, noise, loss=loss)
        c = x0.shape[1]
        x0_hat = self.diffusion.predict_x0_from_eps(seen["x_t"], t, seen["out"][:, :c].float())
        keep = torch.tensor([bool(cap) for cap in self.captions], device=x0.device)
        with torch.no_grad():
            z_text = self.clip.text_embeddings([cap or "." for cap in self.captions]).float()
        if x0_hat.shape[-1] != self.clip.image_size:
            x0_hat = F.interpolate(x0_hat, size=(self.clip.image_size,) * 2, mode="bilinear", align_corners=False,
                                   antialias=x0_hat.shape[-1] > self.clip.image_size)
        z_image = self.clip.image_embeddings(x0_hat, torch.zeros_like(t))
        terms["clip"] = (1 - (z_image * z_text).sum(-1)) * keep
        terms["loss"] = terms["loss"] + self.weight * terms["clip"]
        return terms


def clip_finetune_loss(spec: str, diffusion: GaussianDiffusion, device="cpu") -> ClipFinetuneLoss | None:
    """train.py's clip_loss option: '' (off) or '<weight>@<noised CLIP: train_clip.py run folder | released>'."""
    if not spec:
        return None
    weight, sep, path = spec.partition("@")
    try:
        w = float(weight)
    except ValueError:
        w = float("nan")
    if not sep or not path or not math.isfinite(w) or w < 0:
        raise ValueError(f"clip_loss={spec!r}: expected '<weight>@<clip>', e.g. '0.1@results/toy/glide/clip' or "
                         f"'0.05@released' (weight >= 0)")
    from projects.glide_finetune.noised_clip import load_clip

    return ClipFinetuneLoss(diffusion, load_clip(path, device=device), w)
