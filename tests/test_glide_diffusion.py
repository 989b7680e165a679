"""GLIDE diffusion: schedules and respacing as GLIDE uses them, learned-range posterior checked against diffusers'
DDPMScheduler, the hybrid loss's variational term."""
import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from projects.glide_finetune.diffusion import (create_diffusion, diffusers_schedule, get_named_beta_schedule,
                                               respacing_steps, space_timesteps)
from projects.glide_finetune.unet import model_and_diffusion_defaults, model_and_diffusion_defaults_upsampler


@pytest.mark.parametrize("opts", [model_and_diffusion_defaults(), model_and_diffusion_defaults_upsampler()],
                         ids=["base-cosine", "upsampler-linear"])
def test_betas_equal_diffusers_schedule(opts):
    ours = get_named_beta_schedule(opts["noise_schedule"], 1000)
    theirs = DDPMScheduler(**diffusers_schedule(opts)).betas.double().numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)
    assert ours.shape == (1000,) and ours.max() <= 0.999


def test_respacing_strings():
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    hundred = space_timesteps(1000, "100")
    assert len(hundred) == 100 and hundred[0] == 0 and hundred[-1] == 999 and hundred[1] == 10
    sections = space_timesteps(1000, "10,10,3,2,2")
    # five sections of 200 steps: 10 evenly spaced in [0, 199], 10 in [200, 399], 3 in [400, 599], ...
    assert sections[:3] == [0, 22, 44] and sections[9] == 199 and sections[10] == 200
    assert sections[20:23] == [400, 500, 599] and sections[-2:] == [800, 999]
    fast = space_timesteps(1000, "fast27")  # GLIDE's fast27: those, with 999 moved to 997
    assert len(fast) == 27 and fast[:-1] == sections[:-1] and fast[-1] == 997
    assert respacing_steps("27") == 27 and respacing_steps("fast27") == 27 and respacing_steps("ddim50") == 50
    with pytest.raises(ValueError, match="section 0 has 200 steps, asked for 300"):
        space_timesteps(1000, "300,1,1,1,1")
    with pytest.raises(ValueError, match="no integer stride gives exactly 999"):
        space_timesteps(1000, "ddim999")
    with pytest.raises(ValueError, match="expected '100', 'fast27'"):
        space_timesteps(1000, "fast")


def test_respaced_diffusion_keeps_alphas_cumprod():
    base = create_diffusion(model_and_diffusion_defaults())
    spaced = create_diffusion(model_and_diffusion_defaults(), "fast27")
    kept = space_timesteps(1000, "fast27")
    np.testing.assert_allclose(spaced.alphas_cumprod, base.alphas_cumprod[kept], rtol=1e-8)
    assert list(spaced.timestep_map) == kept and spaced.num_timesteps == 27


@pytest.mark.parametrize("schedule", ["squaredcos_cap_v2", "linear"])
def test_learned_range_step_equals_diffusers_ddpm(schedule):
    """One respaced reverse step with a learned variance: our mean/variance vs DDPMScheduler(variance_type=
    "learned_range") on custom timesteps, fed the same model output and the same noise."""
    opts = {**model_and_diffusion_defaults(), "noise_schedule": schedule}
    spaced = create_diffusion(opts, "fast27")
    sched = DDPMScheduler(**diffusers_schedule(opts), variance_type="learned_range", clip_sample=True)
    kept = space_timesteps(1000, "fast27")
    sched.set_timesteps(timesteps=kept[::-1])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 4, generator=g)
    for i in (26, 20, 12, 3, 1):
        out = torch.cat([torch.randn(2, 3, 4, 4, generator=g), torch.rand(2, 3, 4, 4, generator=g) * 2 - 1], 1)
        t = torch.full((2,), i)
        mine = spaced.p_mean_variance(out, x, t)
        z = torch.randn(x.shape, generator=torch.Generator().manual_seed(i))
        ours = mine["mean"] + torch.exp(0.5 * mine["log_variance"]) * z
        theirs = sched.step(out, kept[i], x, generator=torch.Generator().manual_seed(i)).prev_sample
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
        assert spaced.model_timesteps(t)[0].item() == kept[i]


def test_hybrid_loss_terms():
    diff = create_diffusion(model_and_diffusion_defaults())
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 3, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(3, 3, 8, 8, generator=g)
    t = torch.tensor([0, 10, 500])
    var = torch.full((3, 3, 8, 8), -1.0, requires_grad=True)  # frac 0: exactly the posterior variance

    def oracle(x_t, t_model):  # the true eps; variance channels from `var`
        return torch.cat([noise, var], dim=1)

    terms = diff.training_losses(oracle, x0, t, noise=noise, loss="hybrid")
    assert torch.allclose(terms["mse"], torch.zeros(3))
    assert terms["vb"][1:].abs().max() < 1e-4  # the true posterior: KL 0 for t > 0
    assert terms["vb"][0] > 0  # t = 0 is the decoder NLL in bits
    terms["loss"].sum().backward()
    assert var.grad is not None and var.grad.abs().sum() > 0
    # "mse" gives the variance channels no gradient
    var.grad = None
    eps = noise.clone().requires_grad_(True)
    out = diff.training_losses(lambda x_t, tm: torch.cat([eps * 0.5, var], 1), x0, t, noise=noise, loss="mse")
    out["loss"].sum().backward()
    assert (var.grad is None or not var.grad.any()) and eps.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="loss='l1'"):
        diff.training_losses(oracle, x0, t, loss="l1")
