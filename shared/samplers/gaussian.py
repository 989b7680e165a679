"""Exact denoisers for Gaussian data, x0 ~ N(mean, std^2) per dimension: a model with no training error.

With them a sampler can be checked against closed forms: the posterior E[x0 | x_t] is linear in x_t, so the
ideal eps / v / x0 / flow predictions and the EDM network output are analytic. Used by the sampler tests and
handy for checking a new sampler or schedule before spending GPU time.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from shared.samplers.registry import DEFAULT_SCHEDULE


class GaussianData:
    def __init__(self, mean: float, std: float):
        self.mean, self.std = float(mean), float(std)

    def draw(self, shape, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.mean + self.std * torch.randn(shape, generator=generator, dtype=torch.float64).float()

    # --- variance-preserving (DDPM) models: x_t = sqrt(ab) x0 + sqrt(1 - ab) eps -------------------------
    def posterior_mean_x0(self, x: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
        var = alpha_bar * self.std ** 2 + 1 - alpha_bar
        return self.mean + alpha_bar.sqrt() * self.std ** 2 * (x - alpha_bar.sqrt() * self.mean) / var

    def vp_denoiser(self, prediction_type: str = "epsilon", schedule: Mapping[str, Any] | None = None):
        """denoiser(x, t) for a DDPM schedule; fractional t (Euler/Heun/Karras sigmas) is mapped back to a
        noise level the way diffusers maps sigmas to t: linear interpolation in log sigma."""
        from diffusers import DDPMScheduler

        cfg = {**DEFAULT_SCHEDULE, **(schedule or {})}
        ab = DDPMScheduler(**{k: v for k, v in cfg.items() if k in DEFAULT_SCHEDULE}).alphas_cumprod.double()
        log_sigmas = 0.5 * torch.log((1 - ab) / ab)

        def alpha_bar_at(t: torch.Tensor) -> torch.Tensor:
            t = t.double().clamp(0, len(ab) - 1)
            low = t.floor().long()
            high = (low + 1).clamp(max=len(ab) - 1)
            w = t - low
            log_sigma = (1 - w) * log_sigmas[low] + w * log_sigmas[high]
            return 1 / (1 + torch.exp(2 * log_sigma))

        def denoiser(x: torch.Tensor, t: torch.Tensor, **_: Any) -> torch.Tensor:
            a = alpha_bar_at(t).view(-1, *[1] * (x.dim() - 1))
            xd = x.double()
            x0 = self.posterior_mean_x0(xd, a)
            eps = (xd - a.sqrt() * x0) / (1 - a).sqrt()
            out = {"epsilon": eps, "sample": x0, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0}
            return out[prediction_type].to(x.dtype)

        return denoiser

    # --- EDM-preconditioned models: x = x0 + sigma n, network F(c_in x, c_noise) -------------------------
    def edm_denoiser(self, prediction_type: str = "epsilon", sigma_data: float = 0.5):
        def denoiser(x_in: torch.Tensor, c_noise: torch.Tensor, **_: Any) -> torch.Tensor:
            sigma = torch.exp(4 * c_noise.double()).view(-1, *[1] * (x_in.dim() - 1))
            c_in = 1 / (sigma ** 2 + sigma_data ** 2).sqrt()
            x = x_in.double() / c_in
            denoised = self.mean + self.std ** 2 * (x - self.mean) / (self.std ** 2 + sigma ** 2)
            c_skip = sigma_data ** 2 / (sigma ** 2 + sigma_data ** 2)
            c_out = sigma * sigma_data / (sigma ** 2 + sigma_data ** 2).sqrt()
            if prediction_type == "v_prediction":
                c_out = -c_out
            return ((denoised - c_skip * x) / c_out).to(x_in.dtype)

        return denoiser

    # --- rectified flow: x_s = (1 - s) x0 + s n, velocity n - x0, t = num_train_timesteps * s -------------
    def flow_denoiser(self, num_train_timesteps: int = 1000):
        def denoiser(x: torch.Tensor, t: torch.Tensor, **_: Any) -> torch.Tensor:
            s = (t.double() / num_train_timesteps).view(-1, *[1] * (x.dim() - 1))
            xd = x.double()
            var = (1 - s) ** 2 * self.std ** 2 + s ** 2
            centred = xd - (1 - s) * self.mean
            noise = s * centred / var
            x0 = self.mean + (1 - s) * self.std ** 2 * centred / var
            return (noise - x0).to(x.dtype)

        return denoiser
