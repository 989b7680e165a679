"""DMD2's losses, as sibling classes with the same call shape: `loss(backbone, ...) -> (loss, logs)`.

    DistributionMatchingLoss   generator: the DM gradient (real score - fake score) as 0.5 * MSE to a moved target
    FakeDenoisingLoss          fake denoiser: denoising loss on detached generated samples, all timesteps
    GANGeneratorLoss           generator: softplus(-D(fake)) through the fake denoiser's bottleneck head
    GANDiscriminatorLoss       GAN head (+ fake denoiser): softplus(D(fake)) + softplus(-D(real))
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def dm_gradient(x: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor) -> torch.Tensor:
    """(p_real - p_fake) / mean|p_real| per sample, p = x - x0_hat. Normalising by the real residual makes the
    step size independent of the noise level and of how far off the sample is (DMD, eq. 8)."""
    p_real, p_fake = x - x0_real, x - x0_fake
    dims = list(range(1, x.ndim))
    return torch.nan_to_num((p_real - p_fake) / p_real.abs().mean(dim=dims, keepdim=True))


def _draw_t(n: int, lo: int, hi: int, device) -> torch.Tensor:
    return torch.randint(lo, hi, (n,), device=device)


@dataclass
class DistributionMatchingLoss:
    min_step_percent: float = 0.02
    max_step_percent: float = 0.98
    real_guidance_scale: float = 1.0

    def __call__(self, backbone, x, fake_net, real_net, cond, uncond):
        """x: generated samples (with grad). fake_net/real_net are used as fixed functions (no grad)."""
        n_t = backbone.num_train_timesteps
        lo, hi = int(self.min_step_percent * n_t), int(self.max_step_percent * n_t)
        with torch.no_grad():
            t = _draw_t(x.shape[0], lo, min(hi + 1, n_t), x.device)
            x_t = backbone.add_noise(x.detach(), torch.randn_like(x), t)
            x0_fake = backbone.denoise(fake_net, x_t, t, cond)
            x0_real = backbone.guided_denoise(real_net, x_t, t, cond, uncond, self.real_guidance_scale)
            grad = dm_gradient(x.detach().float(), x0_real.float(), x0_fake.float())
        # d/dx of 0.5 * mean((x - stopgrad(x - grad))^2) = grad / numel: autodiff hands `grad` to the generator
        loss = 0.5 * F.mse_loss(x.float(), (x.detach().float() - grad).detach())
        return loss, {"dm_grad_norm": grad.norm().detach(), "dm_t": t.float().mean()}


@dataclass
class FakeDenoisingLoss:
    def __call__(self, backbone, fake_net, x0, cond):
        return backbone.denoising_loss(fake_net, x0.detach(), cond), {}


@dataclass
class GANNoise:
    """Where the discriminator looks: the clean sample (t = 0), or with `diffusion_gan` a sample noised to a
    random t < max_timestep (the same for real and fake, so the head cannot tell them apart by noise level)."""
    diffusion_gan: bool = False
    max_timestep: int = 1000

    def __call__(self, backbone, x):
        n = x.shape[0]
        if not self.diffusion_gan:
            return x, torch.zeros(n, dtype=torch.long, device=x.device)
        t = _draw_t(n, 0, min(self.max_timestep, backbone.num_train_timesteps), x.device)
        return backbone.add_noise(x, torch.randn_like(x), t), t


def gan_logits(backbone, fake_score, x, cond, noise: GANNoise) -> torch.Tensor:
    x_t, t = noise(backbone, x)
    return fake_score.head(backbone.bottleneck(fake_score.unet, x_t, t, cond))


@dataclass
class GANGeneratorLoss:
    noise: GANNoise

    def __call__(self, backbone, fake_score, x, cond):
        logits = gan_logits(backbone, fake_score, x, cond, self.noise)
        return F.softplus(-logits).mean(), {"d_fake_for_gen": torch.sigmoid(logits).mean().detach()}


@dataclass
class GANDiscriminatorLoss:
    noise: GANNoise

    def __call__(self, backbone, fake_score, x_fake, cond_fake, x_real, cond_real):
        fake = gan_logits(backbone, fake_score, x_fake.detach(), cond_fake, self.noise)
        real = gan_logits(backbone, fake_score, x_real.detach(), cond_real, self.noise)
        loss = F.softplus(fake).mean() + F.softplus(-real).mean()
        return loss, {"d_real": torch.sigmoid(real).mean().detach(), "d_fake": torch.sigmoid(fake).mean().detach()}
