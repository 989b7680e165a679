"""GLIDE sampling: every sampler recovers Gaussian data from an exact denoiser on GLIDE's cosine schedule; guidance
uses the empty prompt and acts on eps only; per-sample seeds; the upsampler path (8-bit low-res, temperature)."""
import pytest
import torch

from projects.glide_finetune.diffusion import diffusers_schedule
from projects.glide_finetune.sampling import SAMPLERS, generate, quantize_8bit, run_sampler, upsample
from projects.glide_finetune.tokenizer import train_tokenizer
from projects.glide_finetune.unet import create_model, tiny_options
from shared.toy.dataset import COLOUR_NAMES, caption
from shared.samplers.gaussian import GaussianData

MEAN, STD = 0.2, 0.25


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    caps = [caption(d, c) for d in range(10) for c in COLOUR_NAMES]
    return train_tokenizer(caps, tmp_path_factory.mktemp("tok") / "t", vocab_size=300)


def perturbed(opts):
    torch.manual_seed(0)
    model = create_model(opts).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                p.normal_(0, 0.05)
    return model


def _gaussian_model(opts, v):
    """An exact eps for N(MEAN, STD^2) data on the options' schedule; the variance channels fixed at v (-1: the
    posterior variance beta~_t, +1: beta_t)."""
    eps_fn = GaussianData(MEAN, STD).vp_denoiser("epsilon", diffusers_schedule(opts))
    return lambda x, t: torch.cat([eps_fn(x, t), torch.full_like(x, v)], dim=1)


@pytest.mark.parametrize("sampler, steps", [("plms", 50), ("ddim", 50), ("euler", 50), ("dpm++", 25)])
def test_ode_samplers_recover_gaussian_data(sampler, steps):
    """GLIDE's squaredcos_cap_v2 schedule, 6 output channels: the diffusers samplers drop the variance channels
    and their samples have the data's mean and std."""
    opts = tiny_options()
    x = run_sampler(_gaussian_model(opts, -1.0), opts, (256, 3, 2, 2), {}, None, seeds=range(256), sampler=sampler,
                    steps=steps)
    assert abs(x.mean().item() - MEAN) < 0.02, x.mean()
    assert abs(x.std().item() - STD) < 0.03, x.std()


@pytest.mark.parametrize("sampler, steps", [("glide", "fast27"), ("glide", "50"), ("ddpm", 100)])
def test_ancestral_samplers_read_the_learned_variance(sampler, steps):
    """With the exact mean, ancestral sampling at the lower-bound variance under-disperses and at the upper bound
    over-disperses (measured 0.22 / 0.26 for std 0.25 with fast27): the variance channels reach the update, and
    the truth lies between, which is what the learned interpolation is for."""
    opts = tiny_options()
    stds = {}
    for v in (-1.0, 1.0):
        x = run_sampler(_gaussian_model(opts, v), opts, (256, 3, 2, 2), {}, None, seeds=range(256),
                        sampler=sampler, steps=steps)
        assert abs(x.mean().item() - MEAN) < 0.02, x.mean()
        stds[v] = x.std().item()
    assert stds[-1.0] < STD - 0.01 and stds[1.0] - stds[-1.0] > 0.015, stds
    assert abs(stds[-1.0] - STD) < 0.04 and abs(stds[1.0] - STD) < 0.04, stds


def test_guidance_uses_the_empty_prompt_and_guides_eps_only(tok, monkeypatch):
    import projects.glide_finetune.sampling as ours

    opts = tiny_options(n_vocab=300, text_ctx=16)
    seen, captured = [], []

    class Fake(torch.nn.Module):
        text_ctx = 16

        def forward(self, x, t, tokens, mask):
            seen.append((tokens.clone(), mask.clone()))
            cond = mask.any(dim=1).float().view(-1, 1, 1, 1)  # 1 for a prompt, 0 for the empty one
            return torch.cat([x * 0 + cond, x * 0 + 0.5 * cond - 0.25], dim=1)

    real = ours.guided_output

    def spy(*a, **k):
        captured.append(real(*a, **k))
        return captured[-1]

    monkeypatch.setattr(ours, "guided_output", spy)
    generate(Fake(), opts, tok, ["a red handwritten seven"], seeds=[0], sampler="glide", steps="3", guidance_scale=4.0)
    tokens, mask = seen[0]
    assert tokens.shape == (2, 16)
    assert not mask[0].any() and tokens[0].eq(tok.end_token).all()  # uncond half: all end tokens, mask False
    assert mask[1].any()
    out = captured[0]
    torch.testing.assert_close(out[:, :3], torch.full_like(out[:, :3], 4.0))  # 0 + 4 * (1 - 0)
    torch.testing.assert_close(out[:, 3:], torch.full_like(out[:, 3:], 0.25))  # the conditional half's variance


@pytest.mark.parametrize("sampler", ["glide", "euler_a", "ddpm", "dpm++"])
def test_per_sample_seeds_do_not_depend_on_the_batch(tok, sampler):
    model = perturbed(tiny_options(n_vocab=300, text_ctx=16))
    both = generate(model, model.options, tok, ["a red handwritten seven", "a blue handwritten one"], seeds=[5, 9],
                    sampler=sampler, steps="6", guidance_scale=3.0)
    alone = generate(model, model.options, tok, ["a blue handwritten one"], seeds=[9], sampler=sampler, steps="6",
                     guidance_scale=3.0)
    torch.testing.assert_close(both[1:], alone, atol=1e-4, rtol=0)
    other = generate(model, model.options, tok, ["a blue handwritten one"], seeds=[10], sampler=sampler, steps="6",
                     guidance_scale=3.0)
    assert (other - alone).abs().max() > 1e-3


def test_upsampler_path(tok):
    x = torch.linspace(-1.2, 1.2, 3 * 8 * 8).view(1, 3, 8, 8)
    q = quantize_8bit(x)
    levels = (q + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4) and q.min() == -1 and q.max() == 1
    model = perturbed(tiny_options(super_res=True, image_size=32, n_vocab=300, text_ctx=16))
    seen = {}
    real_forward = model.forward

    def spy(x_t, t, **kw):
        seen.setdefault("x_T", x_t.clone())
        seen.setdefault("low_res", kw["low_res"].clone())
        return real_forward(x_t, t, **kw)

    model.forward = spy
    out = upsample(model, model.options, tok, ["a red handwritten seven"] * 4, x.expand(4, -1, -1, -1), seeds=range(4),
                   steps="2", upsample_temp=0.5)
    assert out.shape == (4, 3, 32, 32)
    torch.testing.assert_close(seen["low_res"], q.expand(4, -1, -1, -1))
    assert abs(seen["x_T"].std().item() - 0.5) < 0.02  # x_T = temp * N(0, I)
    with pytest.raises(ValueError, match="needs a super-resolution model"):
        upsample(perturbed(tiny_options(n_vocab=300, text_ctx=16)), tiny_options(), tok, ["a"], x, seeds=[0])


def test_unknown_sampler_and_dpm_order(tok):
    model = perturbed(tiny_options(n_vocab=300, text_ctx=16))
    with pytest.raises(ValueError, match="available: " + ", ".join(SAMPLERS).replace("+", r"\+")):
        generate(model, model.options, tok, ["a"], seeds=[0], sampler="heun2")
    with pytest.raises(ValueError, match="dpm_order=3"):
        generate(model, model.options, tok, ["a"], seeds=[0], sampler="dpm++", dpm_order=3)


def test_inpainting_keeps_the_known_pixels(tok):
    model = perturbed(tiny_options(inpaint=True, n_vocab=300, text_ctx=16))
    image = torch.rand(2, 3, 8, 8) * 2 - 1
    mask = torch.zeros(2, 1, 8, 8)
    mask[..., :, :4] = 1  # keep the left half
    x = generate(model, model.options, tok, ["a red handwritten seven"] * 2, seeds=[0, 1], sampler="glide",
                 steps="5", guidance_scale=3.0, inpaint_image=image, inpaint_mask=mask)
    # the last step has no noise and its x0 estimate carries the known pixels, so they come back exactly
    torch.testing.assert_close(x[..., :4], image[..., :4].clamp(-1, 1), atol=1e-4, rtol=0)
    assert (x[..., 4:] - image[..., 4:]).abs().mean() > 0.1
    with pytest.raises(ValueError, match="needs both inpaint_image and inpaint_mask"):
        generate(model, model.options, tok, ["a"], seeds=[0], sampler="glide", steps="2", inpaint_image=image[:1])
    # neither: nothing known (GLIDE feeds zeros), any sampler
    assert generate(model, model.options, tok, ["a"], seeds=[0], sampler="euler", steps="2").shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match="needs sampler='glide'"):
        generate(model, model.options, tok, ["a"], seeds=[0], sampler="euler", steps="2", inpaint_image=image[:1],
                 inpaint_mask=mask[:1])


def test_glide_ddim_equals_diffusers_ddim():
    """Our respaced DDIM on "ddim50" (stride 20, 980 ... 0) against diffusers' DDIMScheduler with 50 leading steps
    (the same timesteps), eta 0, same starting noise and the same exact denoiser: the same samples."""
    opts = tiny_options()
    model = _gaussian_model(opts, -1.0)
    ours = run_sampler(model, opts, (64, 3, 2, 2), {}, None, seeds=range(64), sampler="glide_ddim", steps="ddim50")
    theirs = run_sampler(model, opts, (64, 3, 2, 2), {}, None, seeds=range(64), sampler="ddim", steps=50)
    torch.testing.assert_close(ours, theirs, atol=2e-4, rtol=0)
    assert abs(ours.std().item() - STD) < 0.03
