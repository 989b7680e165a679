"""GLIDE's Gaussian diffusion: noise schedules, respacing, learned-range variance, training losses, and its own
respaced DDPM sampler (written here; the other samplers are diffusers' through shared.samplers).

    diff = create_diffusion(options)                        # 1000 steps, options["noise_schedule"]
    loss = diff.training_losses(model_fn, x0, t)["loss"]    # eps MSE (+ the variational term with loss="hybrid")
    spaced = create_diffusion(options, "fast27")            # respaced: "100", "fast27", "ddim50", "10,10,3,2,2"
    x = spaced.p_sample_loop(model_fn, (4, 3, 64, 64), noise=torch.randn(...) * 0.997, generator=g)

The model outputs 6 channels: eps (3) and v (3); the variance is exp(frac * log beta_t + (1 - frac) *
log beta~_t) with frac = (v + 1) / 2 ("learned_range", Nichol & Dhariwal 2021), beta~_t the posterior variance.
A respaced diffusion keeps the kept steps' alphas_cumprod and recomputes betas from them, and calls the model
with the original timestep indices (GLIDE does not rescale timesteps). Arrays are float64 numpy, as in GLIDE.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

# GLIDE's named shortcut (glide_text2im respace.py): sections 10,10,3,2,2 (27 steps, dense at the clean end),
# with the noisiest step 999 replaced by 997 ("reduce DDIM artifacts from the noisiest timesteps")
FAST27 = "10,10,3,2,2"


def get_named_beta_schedule(name: str, num_steps: int) -> np.ndarray:
    if name == "linear":  # Ho et al., scaled so any number of steps covers the same range
        scale = 1000 / num_steps
        return np.linspace(scale * 0.0001, scale * 0.02, num_steps, dtype=np.float64)
    if name == "squaredcos_cap_v2":  # Nichol & Dhariwal's cosine alpha_bar, betas capped at 0.999
        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        return np.array([min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), 0.999)
                         for i in range(num_steps)], dtype=np.float64)
    raise ValueError(f"noise_schedule={name!r}; GLIDE has 'linear' and 'squaredcos_cap_v2'")


def space_timesteps(num_timesteps: int, section_counts: str | Sequence[int]) -> list[int]:
    """The kept timesteps of a respacing: "ddimN" (an even stride giving exactly N steps), "fast27" (see FAST27),
    or comma-separated counts: the 1000 steps are cut into equal sections and each section is
    sampled with that many evenly spaced (rounded) steps, its ends included."""
    if isinstance(section_counts, str) and section_counts == "fast27":
        steps = set(space_timesteps(num_timesteps, FAST27))
        steps.discard(num_timesteps - 1)
        steps.add(num_timesteps - 3)
        return sorted(steps)
    if isinstance(section_counts, str):
        text = section_counts
        if text.startswith("ddim"):
            try:
                want = int(text[len("ddim"):])
            except ValueError:
                raise ValueError(f"timestep_respacing={section_counts!r}: expected 'ddim<N>'") from None
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == want:
                    return list(range(0, num_timesteps, stride))
            raise ValueError(f"timestep_respacing={section_counts!r}: no integer stride gives exactly {want} of "
                             f"{num_timesteps} steps")
        try:
            counts = [int(c) for c in text.split(",")]
        except ValueError:
            raise ValueError(f"timestep_respacing={section_counts!r}: expected '100', 'fast27', 'ddim50' or "
                             f"comma-separated counts like '10,10,3,2,2'") from None
    else:
        counts = [int(c) for c in section_counts]
    size_per, extra = divmod(num_timesteps, len(counts))
    start, steps = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if count > size or count < 1:
            raise ValueError(f"timestep_respacing={section_counts!r}: section {i} has {size} steps, asked for {count}")
        stride = (size - 1) / (count - 1) if count > 1 else 1
        pos = 0.0
        for _ in range(count):
            steps.append(start + round(pos))
            pos += stride
        start += size
    return sorted(set(steps))


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """log P(x) of 8-bit data in [-1, 1] under a Gaussian discretised into 255 bins (edge bins open)."""
    def cdf(v):
        return 0.5 * (1.0 + torch.erf(v / math.sqrt(2.0)))

    centred = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus, cdf_min = cdf(inv_std * (centred + 1.0 / 255)), cdf(inv_std * (centred - 1.0 / 255))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def _extract(arr: np.ndarray, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    out = torch.from_numpy(arr).to(device=t.device)[t.long()].float()
    return out.view(-1, *([1] * (like.dim() - 1))).expand_as(like)


def randn(shape: Sequence[int], generator: torch.Generator | Sequence[torch.Generator] | None,
          device: torch.device | str | None = None) -> torch.Tensor:
    """Standard normal noise; with a list of generators, row i comes from generator i (per-sample seeds)."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
        return torch.cat([torch.randn((1, *shape[1:]), generator=g, device=device) for g in generator])
    return torch.randn(tuple(shape), generator=generator, device=device)


def _start(shape, noise, generator, device) -> tuple[torch.Tensor, torch.device]:
    """The starting x_T of a sampling loop and its device: `noise` if given, else drawn from `generator` (one
    generator, or one per sample); the device follows `device`, else the noise, else the generator."""
    first = generator[0] if isinstance(generator, (list, tuple)) else generator
    device = torch.device(device) if device is not None else (
        noise.device if noise is not None else (first.device if first is not None else torch.device("cpu")))
    return (noise.to(device) if noise is not None else randn(shape, generator, device)), device


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> the nearest of the 256 levels an 8-bit image has (the upsampler's low-res input, in training and
    in sampling)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=list(range(1, x.dim())))


ModelFn = Callable[..., torch.Tensor]
LOSSES = ("mse", "hybrid")


class GaussianDiffusion:
    """Diffusion over `betas`; `timestep_map[i]` is the original timestep the model sees for step i."""

    def __init__(self, betas: np.ndarray, timestep_map: Sequence[int] | None = None, schedule_name: str = ""):
        self.betas = betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0) & (betas <= 1)).all():
            raise ValueError("betas must be a 1-d array in (0, 1]")
        self.num_timesteps = len(betas)
        self.timestep_map = np.asarray(timestep_map if timestep_map is not None else range(len(betas)), dtype=np.int64)
        self.schedule_name = schedule_name
        alphas = 1.0 - betas
        self.alphas_cumprod = ac = np.cumprod(alphas)
        self.alphas_cumprod_prev = acp = np.append(1.0, ac[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(ac)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - ac)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / ac)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / ac - 1)
        self.posterior_variance = betas * (1.0 - acp) / (1.0 - ac)
        # the posterior variance is 0 at t = 0: clip its log to the t = 1 value (only used as the range's low end)
        self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(acp) / (1.0 - ac)
        self.posterior_mean_coef2 = (1.0 - acp) * np.sqrt(alphas) / (1.0 - ac)

    # ---- forward process ----------------------------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        noise = torch.randn_like(x0) if noise is None else noise
        return (_extract(self.sqrt_alphas_cumprod, t, x0) * x0
                + _extract(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise)

    def q_posterior_mean_variance(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        mean = _extract(self.posterior_mean_coef1, t, x_t) * x0 + _extract(self.posterior_mean_coef2, t, x_t) * x_t
        return mean, _extract(self.posterior_variance, t, x_t), _extract(self.posterior_log_variance_clipped, t, x_t)

    # ---- reverse process ------------------------------------------------------------------------------------
    def predict_x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return (_extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
                - _extract(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps)

    def model_log_variance(self, var_values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """learned_range: interpolate between log beta~_t (frac 0) and log beta_t (frac 1)."""
        min_log = _extract(self.posterior_log_variance_clipped, t, var_values)
        max_log = _extract(np.log(self.betas), t, var_values)
        frac = (var_values + 1) / 2
        return frac * max_log + (1 - frac) * min_log

    def p_mean_variance(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                        clip_denoised: bool = True,
                        denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """From a 6-channel model output at step index t: the reverse step's mean, log variance and x0 estimate.
        `denoised_fn` edits the x0 estimate before the posterior (inpainting pastes the known pixels there)."""
        c = x_t.shape[1]
        if model_output.shape[1] != 2 * c:
            raise ValueError(f"model output has {model_output.shape[1]} channels; GLIDE models predict {2 * c} "
                             f"(eps + variance interpolation)")
        eps, var_values = model_output[:, :c], model_output[:, c:]
        log_var = self.model_log_variance(var_values, t)
        x0 = self.predict_x0_from_eps(x_t, t, eps)
        if denoised_fn is not None:
            x0 = denoised_fn(x0)
        if clip_denoised:
            x0 = x0.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(x0, x_t, t)
        return {"mean": mean, "log_variance": log_var, "variance": torch.exp(log_var), "pred_x0": x0, "eps": eps}

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Step indices -> the timesteps the model was trained on."""
        return torch.from_numpy(self.timestep_map).to(t.device)[t.long()]

    @torch.no_grad()
    def p_sample_loop(self, model_fn: ModelFn, shape: Sequence[int], *, noise: torch.Tensor | None = None,
                      generator: torch.Generator | Sequence[torch.Generator] | None = None,
                      device: torch.device | str | None = None,
                      model_kwargs: Mapping[str, Any] | None = None, clip_denoised: bool = True,
                      denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                      progress: bool = False,
                      callback: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
        """Ancestral sampling with the learned variance over this (respaced) diffusion's steps.

        `model_fn(x, t_model, **model_kwargs)` gets the original timesteps. Noise for step i is drawn from
        `generator` after the starting noise, in order, so a seed fixes the whole trajectory; a list of generators
        (one per sample) makes each sample's trajectory independent of the batch it is in."""
        from tqdm.auto import tqdm

        x, device = _start(shape, noise, generator, device)
        kw = dict(model_kwargs or {})
        for i in tqdm(range(self.num_timesteps - 1, -1, -1), disable=not progress, leave=False, desc="glide ddpm"):
            t = torch.full((x.shape[0],), i, device=device, dtype=torch.long)
            out = self.p_mean_variance(model_fn(x, self.model_timesteps(t), **kw).float(), x, t, clip_denoised,
                                       denoised_fn)
            z = randn(x.shape, generator, device)
            x = out["mean"] + (float(i > 0) * torch.exp(0.5 * out["log_variance"])) * z
            if callback is not None:
                callback(i, x)
        return x

    @torch.no_grad()
    def ddim_sample_loop(self, model_fn: ModelFn, shape: Sequence[int], *, eta: float = 0.0,
                         noise: torch.Tensor | None = None,
                         generator: torch.Generator | Sequence[torch.Generator] | None = None,
                         device: torch.device | str | None = None, model_kwargs: Mapping[str, Any] | None = None,
                         clip_denoised: bool = True, denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                         progress: bool = False) -> torch.Tensor:
        """DDIM over this (respaced) diffusion's steps (Song et al.; GLIDE samples its upsampler this way, eta 0,
        on fast27): x0 from eps (clipped), eps recomputed from the clipped x0, then
        x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev - sigma^2) eps + sigma z,
        sigma = eta sqrt((1 - ab_prev) / (1 - ab)) sqrt(1 - ab / ab_prev). The variance channels are unused."""
        from tqdm.auto import tqdm

        x, device = _start(shape, noise, generator, device)
        kw = dict(model_kwargs or {})
        for i in tqdm(range(self.num_timesteps - 1, -1, -1), disable=not progress, leave=False, desc="glide ddim"):
            t = torch.full((x.shape[0],), i, device=device, dtype=torch.long)
            out = self.p_mean_variance(model_fn(x, self.model_timesteps(t), **kw).float(), x, t, clip_denoised,
                                       denoised_fn)
            x0 = out["pred_x0"]
            eps = ((_extract(self.sqrt_recip_alphas_cumprod, t, x) * x - x0)
                   / _extract(self.sqrt_recipm1_alphas_cumprod, t, x))
            ab, ab_prev = _extract(self.alphas_cumprod, t, x), _extract(self.alphas_cumprod_prev, t, x)
            sigma = eta * torch.sqrt((1 - ab_prev) / (1 - ab)) * torch.sqrt(1 - ab / ab_prev)
            x = ab_prev.sqrt() * x0 + torch.sqrt((1 - ab_prev - sigma ** 2).clamp(min=0)) * eps
            if eta > 0 and i > 0:
                x = x + sigma * randn(x.shape, generator, device)
        return x

    # ---- training ---------------------------------------------------------------------------------------------
    def vb_terms_bpd(self, model_output: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor,
                     t: torch.Tensor) -> torch.Tensor:
        """Per-sample variational bound term in bits/dim: KL(q(x_{t-1}|x_t,x0) || p(x_{t-1}|x_t)), or the decoder
        NLL at t = 0."""
        true_mean, _, true_log_var = self.q_posterior_mean_variance(x0, x_t, t)
        out = self.p_mean_variance(model_output, x_t, t, clip_denoised=False)
        kl = _mean_flat(normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"])) / math.log(2.0)
        nll = -_mean_flat(discretized_gaussian_log_likelihood(x0, out["mean"], 0.5 * out["log_variance"]))
        nll = nll / math.log(2.0)
        return torch.where(t == 0, nll, kl)

    def training_losses(self, model_fn: ModelFn, x0: torch.Tensor, t: torch.Tensor, model_kwargs: Mapping | None = None,
                        noise: torch.Tensor | None = None, loss: str = "mse") -> dict[str, torch.Tensor]:
        """Per-sample losses. "mse": || eps - eps_hat ||^2 over the eps channels (glide-finetune's loss; the variance
        channels get no gradient). "hybrid": + the variational term with the mean frozen, which trains the variance
        channels (improved DDPM's L_hybrid, as GLIDE was trained)."""
        if loss not in LOSSES:
            raise ValueError(f"loss={loss!r}; expected one of {', '.join(LOSSES)}")
        noise = torch.randn_like(x0) if noise is None else noise
        x_t = self.q_sample(x0, t, noise)
        out = model_fn(x_t, self.model_timesteps(t), **dict(model_kwargs or {}))
        c = x0.shape[1]
        terms = {"mse": _mean_flat((noise - out[:, :c].float()) ** 2)}
        if loss == "hybrid":
            frozen = torch.cat([out[:, :c].detach(), out[:, c:]], dim=1).float()
            terms["vb"] = self.vb_terms_bpd(frozen, x0, x_t, t)
            terms["loss"] = terms["mse"] + terms["vb"]
        else:
            terms["loss"] = terms["mse"]
        return terms


def respaced(base: GaussianDiffusion, use_timesteps: Sequence[int]) -> GaussianDiffusion:
    """The diffusion over the kept steps only: same alphas_cumprod at those steps, betas recomputed."""
    keep = sorted(set(int(t) for t in use_timesteps))
    if not keep or keep[0] < 0 or keep[-1] >= base.num_timesteps:
        raise ValueError(f"respacing keeps steps outside 0..{base.num_timesteps - 1}")
    last, betas = 1.0, []
    for t in keep:
        ac = base.alphas_cumprod[t]
        betas.append(1 - ac / last)
        last = ac
    return GaussianDiffusion(np.array(betas), base.timestep_map[keep], base.schedule_name)


def create_diffusion(options: Mapping[str, Any], timestep_respacing: str | None = None) -> GaussianDiffusion:
    """The diffusion of a GLIDE options dict (diffusion_steps, noise_schedule, timestep_respacing); pass
    `timestep_respacing` to override the options' (which is "" = all steps, for training)."""
    steps = int(options["diffusion_steps"])
    name = str(options["noise_schedule"])
    base = GaussianDiffusion(get_named_beta_schedule(name, steps), schedule_name=name)
    spacing = options.get("timestep_respacing", "") if timestep_respacing is None else timestep_respacing
    if not spacing:
        return base
    return respaced(base, space_timesteps(steps, str(spacing)))


def diffusers_schedule(options: Mapping[str, Any]) -> dict[str, Any]:
    """The training schedule in diffusers' terms (shared.samplers `schedule=`): the same betas."""
    steps = int(options["diffusion_steps"])
    name = str(options["noise_schedule"])
    if name == "linear":
        scale = 1000 / steps
        return {"num_train_timesteps": steps, "beta_schedule": "linear", "beta_start": scale * 0.0001,
                "beta_end": scale * 0.02}
    if name == "squaredcos_cap_v2":
        return {"num_train_timesteps": steps, "beta_schedule": "squaredcos_cap_v2"}
    raise ValueError(f"noise_schedule={name!r}; GLIDE has 'linear' and 'squaredcos_cap_v2'")


def respacing_steps(spacing: str | int, num_timesteps: int = 1000) -> int:
    """How many model evaluations a respacing string means ("100" -> 100, "fast27" -> 27, "ddim50" -> 50)."""
    return len(space_timesteps(num_timesteps, str(spacing)))
