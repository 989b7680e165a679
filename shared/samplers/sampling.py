"""The sampling loop: noise -> scheduler timesteps -> (guided) denoiser -> scheduler.step, as diffusers pipelines do.

The denoiser is any callable `denoiser(x, t, **cond)` returning the model output (a tensor, a diffusers output
with `.sample`, or a tuple whose first item is it). `t` is the scheduler's timestep repeated over the batch,
already in the model's convention (discrete/continuous DDPM step, EDM c_noise, or 1000 * sigma for flows; the
multistep solvers on flow sigmas report exact float timesteps, see registry.make_scheduler).

Classifier-free guidance forms (`guidance=`), for `sample` and `guided_output`:
    "auto"   (default) "glide" for a learned-variance model, "cfg" otherwise. In `sample` the model is a
             learned-variance one when `learned_variance=True`; in `guided_output` when it returns more channels
             than x has.
    "cfg"    out = u + s (c - u) over every output channel. `sample` refuses it with learned_variance=True: it
             would extrapolate the variance channels too (not what GLIDE/ADM models were sampled with).
    "glide"  the same on the first C channels (eps); the variance channels come from the conditional half
             (GLIDE's and guided-diffusion's CFG). For a GLIDE model:
                 sample(model, (B, 3, 64, 64), "ddpm", 100, generator=g, cond=..., uncond=...,
                        guidance_scale=3.0, learned_variance=True, schedule={"beta_schedule": "squaredcos_cap_v2"})
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from shared.samplers.registry import SAMPLERS, get_preset, make_scheduler

Denoiser = Callable[..., Any]
GUIDANCE_FORMS = ("auto", "cfg", "glide")


@dataclass
class StepInfo:
    """What one sampler step saw and produced (passed to `callback`)."""
    index: int
    timestep: torch.Tensor
    x: torch.Tensor
    model_output: torch.Tensor  # after guidance, as given to scheduler.step
    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None
    guided: bool


def _as_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "sample"):
        return out.sample
    if isinstance(out, (tuple, list)):
        return out[0]
    raise TypeError(f"denoiser returned {type(out).__name__}; expected a tensor, an object with .sample, or a tuple")


def _pair(uncond: Any, cond: Any, key: str) -> Any:
    """Uncond and cond values stacked along the batch (uncond first, as diffusers pipelines do)."""
    if isinstance(cond, torch.Tensor):
        if not isinstance(uncond, torch.Tensor):
            raise TypeError(f"cond[{key!r}] is a tensor but uncond[{key!r}] is {type(uncond).__name__}")
        if uncond.shape[0] == 1 and cond.shape[0] > 1:  # one shared null embedding
            uncond = uncond.expand(cond.shape[0], *uncond.shape[1:])
        return torch.cat([uncond, cond])
    if isinstance(cond, Mapping):
        return {k: _pair(uncond.get(k, v), v, f"{key}.{k}") for k, v in cond.items()}
    if uncond is not cond and uncond != cond:
        raise ValueError(f"cond[{key!r}] and uncond[{key!r}] differ but are not tensors; cannot batch them")
    return cond


def doubled_cond(cond: Mapping[str, Any], uncond: Mapping[str, Any]) -> dict[str, Any]:
    """Conditioning for one forward over [uncond; cond]. A key only in `cond` (a low-res image for an
    upsampler, say) is used for both halves; keys only in `uncond` are an error."""
    extra = set(uncond) - set(cond)
    if extra:
        raise ValueError(f"uncond has keys that cond lacks: {', '.join(sorted(extra))}")
    return {k: _pair(uncond.get(k, v), v, k) for k, v in cond.items()}


def guided_output(denoiser: Denoiser, x: torch.Tensor, t: torch.Tensor, cond: Mapping[str, Any],
                  uncond: Mapping[str, Any] | None, guidance_scale: float, guidance: str = "auto") -> torch.Tensor:
    """Model output at (x, t), classifier-free guided when `uncond` is given, from one forward of the doubled
    batch. Forms (see the module docstring): "auto" = "glide" when the output has more channels than x (a learned
    variance), else "cfg"; "cfg" guides every output channel; "glide" only the first C."""
    if guidance not in GUIDANCE_FORMS:
        raise ValueError(f"unknown guidance form {guidance!r}; use one of {', '.join(GUIDANCE_FORMS)}")
    if uncond is None:
        return _as_tensor(denoiser(x, t, **cond))
    both = _as_tensor(denoiser(torch.cat([x, x]), torch.cat([t, t]), **doubled_cond(cond, uncond)))
    out_uncond, out_cond = both.chunk(2)
    if guidance == "auto":
        guidance = "glide" if both.shape[1] > x.shape[1] else "cfg"
    if guidance == "cfg":
        return out_uncond + guidance_scale * (out_cond - out_uncond)
    if guidance == "glide":
        c = x.shape[1]
        eps = out_uncond[:, :c] + guidance_scale * (out_cond[:, :c] - out_uncond[:, :c])
        return torch.cat([eps, out_cond[:, c:]], dim=1)
    raise ValueError(f"unknown guidance form {guidance!r}; use one of {', '.join(GUIDANCE_FORMS)}")


@torch.no_grad()
def sample(denoiser: Denoiser, shape: Sequence[int], sampler: str = "ddim", steps: int = 50, *,
           generator: torch.Generator | None,
           cond: Mapping[str, Any] | None = None, uncond: Mapping[str, Any] | None = None,
           guidance_scale: float = 1.0, guidance: str = "auto",
           guidance_interval: tuple[float, float] = (0.0, 1.0),
           prediction_type: str = "epsilon", learned_variance: bool = False,
           schedule: Mapping[str, Any] | None = None, eta: float | None = None,
           x_T: torch.Tensor | None = None, device: torch.device | str | None = None,
           dtype: torch.dtype = torch.float32, progress: bool = True,
           callback: Callable[[StepInfo], None] | None = None, clip_denoised: float | None = None,
           **scheduler_overrides: Any) -> torch.Tensor:
    """Draw samples of `shape` (B, C, ...) from `denoiser` with sampler `sampler` in `steps` steps.

    cond / uncond: keyword arguments for the denoiser (text embeddings, class labels, low-res images...),
        passed through untouched. With `uncond` and guidance_scale != 1 each step runs one forward over the
        doubled batch [uncond; cond] and applies classifier-free guidance of form `guidance`: "auto" (default:
        "glide" with learned_variance, else "cfg"), "cfg" (refused with learned_variance) or "glide".
    guidance_interval: (start, end) as fractions of the step sequence (0 = first, noisiest step); guidance is
        applied only inside it, elsewhere the conditional model alone is evaluated.
    prediction_type: what the model outputs: "epsilon", "v_prediction", "sample" or "flow" (noise - x0).
    learned_variance: the model outputs 2C channels (mean part, then variance); DDPM uses them as a
        learned_range variance, other samplers drop them.
    schedule: the model's training noise schedule (beta_schedule, num_train_timesteps, beta_start/end, ...,
        or a whole saved scheduler config).
    eta: DDIM's eta (ddim only; ddpm and euler_a are eta = 1 samplers and accept only that).
    x_T: the starting noise at unit scale (multiplied by the scheduler's init_noise_sigma, as diffusers
        pipelines do with `latents=`); default: drawn from `generator` on `device` (default: the generator's).
    callback: called after every step with a `StepInfo` (trajectories, tests, previews).
    clip_denoised: clamp every step's x0 estimate to [-c, c] (epsilon models; the guided eps is rewritten to the
        clamped x0's), what GLIDE/ADM's own samplers do with clip_denoised=True. diffusers' Euler, PNDM and
        DPM-Solver have no such option (DDIM's clip_sample only clips its own update); a cosine-schedule model
        needs it once a sampler starts at t=999, where 1/sqrt(alpha_bar) ~ 2e4 multiplies any eps error.
    scheduler_overrides: more scheduler kwargs (timestep_spacing, use_karras_sigmas, thresholding, ...).
    Returns the final sample in model space (for pixel models, roughly -1..1).
    """
    preset = get_preset(sampler)
    if clip_denoised is not None and prediction_type != "epsilon":
        raise ValueError(f"clip_denoised is implemented for epsilon models, not prediction_type={prediction_type!r}")
    if guidance not in GUIDANCE_FORMS:
        raise ValueError(f"unknown guidance form {guidance!r}; use one of {', '.join(GUIDANCE_FORMS)}")
    if guidance == "auto":
        guidance = "glide" if learned_variance else "cfg"
    elif guidance == "cfg" and learned_variance:
        raise ValueError("guidance='cfg' with learned_variance=True would extrapolate the variance channels as "
                         "well; use guidance='glide' (what 'auto' picks), which guides eps only and takes the "
                         "variance from the conditional half")
    if guidance_scale != 1.0 and uncond is None:
        raise ValueError("guidance_scale != 1 needs `uncond` (the unconditional denoiser kwargs)")
    if eta is not None and not preset.takes_eta and eta != preset.fixed_eta:
        takers = [n for n, p in SAMPLERS.items() if p.takes_eta]
        raise ValueError(f"sampler {sampler!r} does not take eta={eta}"
                         + (f" (it is an eta={preset.fixed_eta} sampler)" if preset.fixed_eta is not None else "")
                         + f"; samplers with a free eta: {', '.join(takers)}")
    cond = dict(cond or {})
    use_uncond = uncond if (uncond is not None and guidance_scale != 1.0) else None

    scheduler = make_scheduler(sampler, prediction_type=prediction_type, learned_variance=learned_variance,
                               schedule=schedule, **scheduler_overrides)
    if x_T is not None:
        if tuple(x_T.shape) != tuple(shape):
            raise ValueError(f"x_T has shape {tuple(x_T.shape)}, expected {tuple(shape)}")
        device, dtype = x_T.device, x_T.dtype
    device = torch.device(device) if device is not None else (generator.device if generator is not None
                                                                else torch.device("cpu"))
    scheduler.set_timesteps(steps, device=device)
    if x_T is None:
        x = randn_tensor(tuple(shape), generator=generator, device=device, dtype=dtype)
    else:
        x = x_T
    x = x * getattr(scheduler, "init_noise_sigma", 1.0)  # flow-matching schedulers start at unit noise

    step_params = inspect.signature(scheduler.step).parameters
    step_kwargs: dict[str, Any] = {}
    if "generator" in step_params:
        step_kwargs["generator"] = generator
    if preset.takes_eta:
        step_kwargs["eta"] = 0.0 if eta is None else eta
    scheduler_eats_variance = learned_variance and preset.learned_variance is not None
    channels = shape[1]
    expected_channels = 2 * channels if learned_variance else channels

    timesteps = scheduler.timesteps
    lo, hi = guidance_interval
    for i, t in enumerate(tqdm(timesteps, desc=f"{sampler} x{steps}", disable=not progress, leave=False)):
        model_in = scheduler.scale_model_input(x, t) if hasattr(scheduler, "scale_model_input") else x
        t_batch = t.reshape(()).expand(x.shape[0])
        guided = use_uncond is not None and lo <= i / len(timesteps) < hi
        out = guided_output(denoiser, model_in, t_batch, cond, use_uncond if guided else None,
                            guidance_scale, guidance)
        if out.shape[1] != expected_channels:
            hint = (" (pass learned_variance=True for a model that predicts its variance)"
                    if out.shape[1] == 2 * channels else "")
            raise ValueError(f"denoiser returned {out.shape[1]} channels for a {channels}-channel sample; "
                             f"expected {expected_channels}{hint}")
        if clip_denoised is not None:
            out = torch.cat([clamped_x0_eps(out[:, :channels], model_in, _alpha_bar(scheduler, t), clip_denoised),
                             out[:, channels:]], dim=1)
        if learned_variance and not scheduler_eats_variance:
            out = out[:, :channels]
        result = scheduler.step(out, t, x, **step_kwargs)
        if callback is not None:
            callback(StepInfo(i, t, x, out, result.prev_sample, getattr(result, "pred_original_sample", None),
                              guided))
        x = result.prev_sample
    return x



def _alpha_bar(scheduler, t: torch.Tensor) -> torch.Tensor:
    """alpha_bar of the (VP-scaled) model input at timestep t: the training sigmas interpolated linearly in t, as
    diffusers' sigma schedulers place a fractional t (exact at integer t, where it is alphas_cumprod[t])."""
    ac = scheduler.alphas_cumprod.double()
    sigmas = ((1 - ac) / ac).sqrt()
    tf = float(t)
    lo = min(int(tf), len(ac) - 1)
    hi = min(lo + 1, len(ac) - 1)
    sigma = sigmas[lo] + (tf - lo) * (sigmas[hi] - sigmas[lo])
    return (1 / (1 + sigma ** 2)).float()


def clamped_x0_eps(eps: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor, limit: float) -> torch.Tensor:
    """eps whose x0 estimate (x_t - sqrt(1 - a) eps) / sqrt(a) is clamped to [-limit, limit]; eps itself where
    the estimate is inside."""
    a, s = alpha_bar.sqrt().to(x_t.dtype), (1 - alpha_bar).sqrt().to(x_t.dtype)
    x0 = ((x_t - s * eps) / a).clamp(-limit, limit)
    return (x_t - a * x0) / s
