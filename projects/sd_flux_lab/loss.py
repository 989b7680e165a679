"""Training losses of the lab: sibling classes per model family, picked by name from registries.

Diffusion (UNet on VAE latents, DDPM noise schedule):
    DIFFUSION_LOSSES["epsilon"|"v_prediction"](schedule, t_min, t_max, noise_offset, snr_gamma)
        loss(denoise, latents, generator) -> scalar; denoise(x_t, t) is the UNet with its conditioning bound.
Flow matching (the toy FLUX analogue): FlowMatchingLoss(time_sampling="uniform"|"logit_normal", shift).
Autoencoder: VAELoss(kl_weight, recon="l1"|"l2", perceptual=None|module, perceptual_weight),
    build_perceptual("digits:<features.safetensors>" | "vgg16:<vgg16 state dict>") and
    HingeGANLoss (discriminator / generator terms of the optional adversarial part).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr
from safetensors.torch import load_file
from torch import nn

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _per_sample_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred.float(), target.float(), reduction="none").flatten(1).mean(1)


class DiffusionLoss:
    """MSE of the UNet output against `target()` at timesteps drawn uniformly from [t_min, t_max).

    noise_offset: add offset * N(0, 1) per (sample, channel) to the noise (brighter/darker images).
    snr_gamma > 0: min-SNR-gamma weighting (Hang et al. 2023), weight = min(SNR, gamma) / (SNR for eps,
    SNR + 1 for v) so every timestep's effective target is SNR-clamped x0 prediction. The SNR table is diffusers'
    `training_utils.compute_snr` (what its training examples weight with); the weights are the examples' formula.
    Against the a/(1-a) computed here before, compute_snr's (sqrt(a)/sqrt(1-a))^2 in float32 differs by at most
    3.4e-7 relative (weights by 2.4e-7) on the SD schedule; no table of this repository trains with snr_gamma.
    With a zero terminal SNR (rescale_betas_zero_snr) the eps weight at SNR 0 is its limit 1 (0/0 otherwise).
    """

    prediction_type = ""

    def __init__(self, schedule: Mapping[str, Any] | None = None, t_min: int = 0, t_max: int = 1000,
                 noise_offset: float = 0.0, snr_gamma: float = 0.0):
        keep = {"num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                "rescale_betas_zero_snr"}
        self.scheduler = DDPMScheduler(**{k: v for k, v in dict(schedule or {}).items() if k in keep},
                                       prediction_type=self.prediction_type)
        n = self.scheduler.config.num_train_timesteps
        if not 0 <= t_min < t_max <= n:
            raise ValueError(f"timestep range [{t_min}, {t_max}) must lie inside [0, {n}]")
        self.t_min, self.t_max = t_min, t_max
        self.noise_offset, self.snr_gamma = noise_offset, snr_gamma
        self.snr = compute_snr(self.scheduler, torch.arange(n))

    def target(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def snr_weight(self, snr: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, denoise: Denoise, latents: torch.Tensor, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
        b, dev = latents.shape[0], latents.device
        noise = torch.randn(latents.shape, generator=generator, device=dev, dtype=latents.dtype)
        if self.noise_offset:
            noise = noise + self.noise_offset * torch.randn((b, latents.shape[1], 1, 1), generator=generator,
                                                            device=dev, dtype=latents.dtype)
        t = torch.randint(self.t_min, self.t_max, (b,), generator=generator, device=dev)
        noisy = self.scheduler.add_noise(latents, noise, t)
        per_sample = _per_sample_mse(denoise(noisy, t), self.target(latents, noise, t))
        if self.snr_gamma > 0:
            per_sample = per_sample * self.snr_weight(self.snr.to(dev)[t]).to(per_sample.dtype)
        return per_sample.mean()


class EpsilonLoss(DiffusionLoss):
    prediction_type = "epsilon"

    def target(self, latents, noise, t):
        return noise

    def snr_weight(self, snr):
        return torch.where(snr > 0, torch.clamp(snr, max=self.snr_gamma) / snr, torch.ones_like(snr))


class VPredictionLoss(DiffusionLoss):
    prediction_type = "v_prediction"

    def target(self, latents, noise, t):
        return self.scheduler.get_velocity(latents, noise, t)

    def snr_weight(self, snr):
        return torch.clamp(snr, max=self.snr_gamma) / (snr + 1)


DIFFUSION_LOSSES: dict[str, type[DiffusionLoss]] = {"epsilon": EpsilonLoss, "v_prediction": VPredictionLoss}


def diffusion_loss(prediction_type: str, **kwargs: Any) -> DiffusionLoss:
    try:
        return DIFFUSION_LOSSES[prediction_type](**kwargs)
    except KeyError:
        raise ValueError(f"prediction_type={prediction_type!r}; expected one of {', '.join(DIFFUSION_LOSSES)}") \
            from None


class FlowMatchingLoss:
    """Rectified flow: x_s = (1 - s) x0 + s noise, the model predicts noise - x0 at timestep 1000 s
    (the convention of diffusers' FlowMatchEulerDiscreteScheduler, so shared.samplers' flow_euler samples it).
    time_sampling: "uniform" or "logit_normal" (SD3's default); shift > 1 moves s towards noise (s' = shift s /
    (1 + (shift - 1) s)), as the scheduler's `shift` does at sampling time."""

    TIME_SAMPLING = ("uniform", "logit_normal")

    def __init__(self, time_sampling: str = "logit_normal", shift: float = 1.0):
        if time_sampling not in self.TIME_SAMPLING:
            raise ValueError(f"time_sampling={time_sampling!r}; expected one of {', '.join(self.TIME_SAMPLING)}")
        self.time_sampling, self.shift = time_sampling, shift

    def sample_s(self, b: int, generator, device) -> torch.Tensor:
        if self.time_sampling == "uniform":
            s = torch.rand(b, generator=generator, device=device)
        else:
            s = torch.sigmoid(torch.randn(b, generator=generator, device=device))
        return self.shift * s / (1 + (self.shift - 1) * s)

    def __call__(self, denoise: Denoise, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        s = self.sample_s(x0.shape[0], generator, x0.device).to(x0.dtype)
        s_ = s.view(-1, *([1] * (x0.dim() - 1)))
        x_s = (1 - s_) * x0 + s_ * noise
        return _per_sample_mse(denoise(x_s, s * 1000), noise - x0).mean()


class DigitsPerceptual(nn.Module):
    """Toy perceptual distance: MSE between the frozen digits CNN's features (shared/toy) of two image
    batches in [-1, 1]. The CNN was trained on this very domain, so its features are what "looks the same"
    means for the toy digits."""

    def __init__(self, path: str):
        super().__init__()
        from shared.toy import features

        self.net = features.load(path).requires_grad_(False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        f = lambda x: self.net.features((x.float() + 1) * 127.5)  # noqa: E731 - the net reads 0..255
        return F.mse_loss(f(a), f(b))


class VGGPerceptual(nn.Module):
    """LPIPS-style distance with uniform layer weights: torchvision VGG16 features after relu1_2, relu2_2,
    relu3_3, relu4_3 and relu5_3, unit-normalised over channels, squared difference averaged per layer and
    summed. Weights from a local torchvision VGG16 state dict (.safetensors or .pth, read weights-only)."""

    CUTS = (4, 9, 16, 23, 30)
    MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def __init__(self, path: str):
        super().__init__()
        import torchvision

        vgg = torchvision.models.vgg16()
        state = (load_file(path) if str(path).endswith(".safetensors")
                 else torch.load(path, map_location="cpu", weights_only=True))
        features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        missing = [k for k in vgg.features.state_dict() if k not in features]
        if missing:
            raise ValueError(f"{path}: not a torchvision VGG16 state dict (no features.{missing[0]})")
        vgg.features.load_state_dict(features)  # the classifier is not used: a features-only file will do
        self.blocks = nn.ModuleList(vgg.features[a:b] for a, b in zip((0,) + self.CUTS[:-1], self.CUTS))
        self.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x = torch.cat([a, b]).float()
        x = ((x + 1) / 2 - self.mean) / self.std
        total = x.new_zeros(())
        for block in self.blocks:
            x = block(x)
            fa, fb = F.normalize(x, dim=1, eps=1e-10).chunk(2)
            total = total + (fa - fb).pow(2).sum(1).mean()
        return total


PERCEPTUAL = {"digits": DigitsPerceptual, "vgg16": VGGPerceptual}


def build_perceptual(spec: str) -> nn.Module | None:
    """'' -> None; '<name>:<weights path>' with name in PERCEPTUAL."""
    if not spec:
        return None
    name, sep, path = spec.partition(":")
    if not sep or name not in PERCEPTUAL or not path:
        raise ValueError(f"perceptual={spec!r}: expected '<name>:<weights path>' with name one of "
                         f"{', '.join(PERCEPTUAL)} (e.g. digits:results/toy/digits_features/features.safetensors)")
    if not Path(path).is_file():
        raise FileNotFoundError(f"perceptual={spec!r}: {path} does not exist")
    return PERCEPTUAL[name](path)


class VAELoss:
    """Reconstruction + kl_weight * KL(q(z|x) || N(0, I)) [+ perceptual_weight * perceptual(recon, x)].

    `perceptual`: a frozen module giving a distance between two image batches in [-1, 1] (PERCEPTUAL);
    None disables the term. Returns (total, parts) with every part detached for logging."""

    RECON = {"l1": F.l1_loss, "l2": F.mse_loss}

    def __init__(self, kl_weight: float = 1e-6, recon: str = "l1", perceptual: nn.Module | None = None,
                 perceptual_weight: float = 0.0):
        if recon not in self.RECON:
            raise ValueError(f"recon={recon!r}; expected one of {', '.join(self.RECON)}")
        self.kl_weight, self.recon = kl_weight, self.RECON[recon]
        self.perceptual, self.perceptual_weight = perceptual, perceptual_weight

    def __call__(self, x: torch.Tensor, recon: torch.Tensor, posterior) -> tuple[torch.Tensor, dict]:
        rec = self.recon(recon.float(), x.float())
        kl = posterior.kl().mean() / x[0].numel()  # per pixel value, like the reconstruction term
        total = rec + self.kl_weight * kl
        parts = {"recon": rec.detach(), "kl": kl.detach()}
        if self.perceptual is not None and self.perceptual_weight > 0:
            p = self.perceptual(recon, x)
            total = total + self.perceptual_weight * p
            parts["perceptual"] = p.detach()
        return total, parts


class HingeGANLoss:
    """Hinge adversarial losses (as in VQGAN / the SD autoencoder): the discriminator pushes real logits
    above +1 and fake below -1; the generator raises the fake logits."""

    def discriminator(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        return 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())

    def generator(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return -fake_logits.mean()
