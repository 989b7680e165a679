"""The DMD2 training step and the few-step generator's sampling loop (shared, so training sees what inference does).

    few_step(backbone, G, noise, cond, timesteps, noise_fn)            inference: x0 after all steps
    few_step(..., stop_at=k)                                           the generator's input at step k
    DMD2Step(...).step(batch, global_step)                             one training step (two time-scale rule)

Generator inputs during training (`generator_input`):
    one timestep (1-step generator): pure noise at the conditioning timestep;
    several + backward_simulation: a random step k (one per batch, the same on every process), reached by
        running the generator itself for steps 0..k-1 without gradients: exactly what inference feeds it;
    several, no simulation: real samples noised to per-sample random steps of the list (pure noise at t=999).

Generator conditioning (`generator_cond`):
    random: drawn independently of the real batch, as DMD2 does (uniform class labels, or prompts drawn from a
        prompt set); the real batch's own labels/captions go with the real images into the GAN head only;
    real: the real batch's labels/captions (what the toy tables were measured with; see recipes.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from projects.dmd2.backbones import Backbone, frozen
from projects.dmd2.losses import (DistributionMatchingLoss, FakeDenoisingLoss, GANDiscriminatorLoss,
                                  GANGeneratorLoss)


def _full(t: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)


def few_step(backbone: Backbone, net, noise: torch.Tensor, cond, timesteps: Sequence[int],
             noise_fn: Callable[[torch.Tensor], torch.Tensor] = torch.randn_like, stop_at: int | None = None):
    """DMD2's multi-step sampler: x0 = G(x_i, t_i), then x_{i+1} = noised x0 at t_{i+1} with fresh noise.
    With `stop_at=k` returns the input x_k instead of the final x0 (k = 0: the pure noise)."""
    x = backbone.pure_noise(noise, _full(timesteps[0], noise))
    x0 = None
    for i, t in enumerate(timesteps):
        if i == stop_at:
            return x
        x0 = backbone.denoise(net, x, _full(t, x), cond)
        if i + 1 < len(timesteps):
            x = backbone.add_noise(x0, noise_fn(x0), _full(timesteps[i + 1], x0))
    return x0


GENERATOR_CONDS = ("random", "real")


@dataclass
class StepOptions:
    denoising_step_list: Sequence[int]
    backward_simulation: bool = True
    dfake_gen_update_ratio: int = 5
    gen_cls_loss_weight: float = 0.0  # 0 = no GAN term for the generator
    guidance_cls_loss_weight: float = 0.0  # 0 = no GAN term for the head
    seed: int = 0
    generator_cond: str = "random"  # random | real (module docstring)


class DMD2Step:
    """One DMD2 step on a Trainer: generator update every `dfake_gen_update_ratio` steps, fake denoiser (+GAN head)
    update every step, separate optimizers ("generator", "fake"); clipping and skipping are the Trainer's."""

    def __init__(self, backbone: Backbone, trainer, generator, fake, opts: StepOptions,
                 dm_loss: DistributionMatchingLoss, fake_loss: FakeDenoisingLoss,
                 gan_gen_loss: GANGeneratorLoss | None = None, gan_disc_loss: GANDiscriminatorLoss | None = None,
                 prompts=None):
        if opts.generator_cond not in GENERATOR_CONDS:
            raise ValueError(f"generator_cond={opts.generator_cond!r}; use one of {', '.join(GENERATOR_CONDS)}")
        self.backbone, self.trainer, self.generator, self.fake = backbone, trainer, generator, fake
        self.prompts = prompts  # the sd backbone's prompt set for generator_cond=random
        self.fake_raw = trainer.accelerator.unwrap_model(fake) if trainer is not None else fake
        self.opts = opts
        self.dm_loss, self.fake_loss = dm_loss, fake_loss
        self.gan_gen_loss = gan_gen_loss if opts.gen_cls_loss_weight > 0 else None
        self.gan_disc_loss = gan_disc_loss if opts.guidance_cls_loss_weight > 0 else None
        self.timesteps = list(opts.denoising_step_list)
        # Each step reseeds the global RNG (timesteps, noise) from this checkpointed stream: the data loader's own
        # draws (a DataLoader iterator takes one per epoch) then cannot shift a resumed run's noise.
        rank = trainer.rank if trainer is not None else 0
        seed = opts.seed * 1_000_003 + 7919 * rank + 1
        self.rng = trainer.generator("dmd2_step", seed, device="cpu") if trainer is not None else \
            torch.Generator().manual_seed(seed)

    def is_generator_step(self, global_step: int) -> bool:
        return global_step % self.opts.dfake_gen_update_ratio == 0

    def _shared_index(self, global_step: int, device) -> int:
        # a function of (seed, step) only: every process picks the same step without communicating
        g = torch.Generator().manual_seed(self.opts.seed * 1_000_003 + global_step)
        return int(torch.randint(0, len(self.timesteps), (1,), generator=g))

    @torch.no_grad()
    def generator_input(self, noise, cond, x_real, global_step: int):
        """(x_t, t) the generator is trained on at this step; see the module docstring."""
        ts = self.timesteps
        if len(ts) == 1:
            t = _full(ts[0], noise)
            return self.backbone.pure_noise(noise, t), t
        if self.opts.backward_simulation:
            k = self._shared_index(global_step, noise.device)
            return few_step(self.backbone, self.generator, torch.randn_like(noise), cond, ts, stop_at=k), \
                _full(ts[k], noise)
        idx = torch.randint(0, len(ts), (noise.shape[0],), device=noise.device)
        t = torch.tensor(ts, device=noise.device)[idx]
        x_t = self.backbone.add_noise(x_real, noise, t)
        pure = t >= self.backbone.num_train_timesteps - 1
        x_t[pure] = self.backbone.pure_noise(noise, t)[pure]
        return x_t, t

    def step(self, batch: Any, global_step: int) -> dict[str, torch.Tensor]:
        tr, bb = self.trainer, self.backbone
        torch.manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=self.rng)))
        x_real, cond_real, uncond_real = bb.batch(batch)
        if self.opts.generator_cond == "real":
            cond, uncond = cond_real, uncond_real
        else:
            cond, uncond = bb.draw_condition(x_real.shape[0], self.prompts)
        noise = torch.randn_like(x_real)
        x_in, t = self.generator_input(noise, cond, x_real, global_step)
        logs: dict[str, torch.Tensor] = {}
        if self.is_generator_step(global_step):
            x_fake = bb.denoise(self.generator, x_in, t, cond)
            with frozen(self.fake_raw):
                loss_dm, dm_logs = self.dm_loss(bb, x_fake, self.fake_raw.unet, bb.teacher, cond, uncond)
                loss_g = loss_dm
                logs.update(loss_dm=loss_dm.detach(), **dm_logs)
                if self.gan_gen_loss is not None:
                    loss_gan, gan_logs = self.gan_gen_loss(bb, self.fake_raw, x_fake, cond)
                    loss_g = loss_g + self.opts.gen_cls_loss_weight * loss_gan
                    logs.update(loss_g_gan=loss_gan.detach(), **gan_logs)
            tr.backward(loss_g)
            tr.optimizer_step("generator")
            x_fake = x_fake.detach()
        else:
            with torch.no_grad():
                x_fake = bb.denoise(self.generator, x_in, t, cond)
        losses, fake_logs = self.fake(bb, self.fake_loss, self.gan_disc_loss, x_fake, cond, x_real, cond_real)
        loss_d = losses["loss_fake"]
        if "loss_d" in losses:
            loss_d = loss_d + self.opts.guidance_cls_loss_weight * losses["loss_d"]
        tr.backward(loss_d)
        tr.optimizer_step("fake")
        logs.update({k: v.detach() for k, v in losses.items()}, **fake_logs)
        return logs
