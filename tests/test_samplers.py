"""shared.samplers against diffusers pipelines / plain scheduler loops, and against closed forms on Gaussian data."""
from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMPipeline,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EDMDPMSolverMultistepScheduler,
    EDMEulerScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    HeunDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
    UNet2DModel,
    UniPCMultistepScheduler,
)
from diffusers.utils.torch_utils import randn_tensor

from shared.samplers import SAMPLERS, make_scheduler, sample
from shared.samplers.gaussian import GaussianData

LINEAR = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear"}

# What each sampler name must mean, written out independently of the registry:
# name -> (scheduler class, its kwargs, whether the beta schedule applies, prediction type to test with)
REFERENCE = {
    "ddpm": (DDPMScheduler, {}, True, "epsilon"),
    "ddim": (DDIMScheduler, {}, True, "epsilon"),
    "plms": (PNDMScheduler, {"skip_prk_steps": True}, True, "epsilon"),
    "euler": (EulerDiscreteScheduler, {}, True, "epsilon"),
    "euler_karras": (EulerDiscreteScheduler, {"use_karras_sigmas": True}, True, "epsilon"),
    "euler_a": (EulerAncestralDiscreteScheduler, {}, True, "epsilon"),
    "heun": (HeunDiscreteScheduler, {}, True, "epsilon"),
    "heun_karras": (HeunDiscreteScheduler, {"use_karras_sigmas": True}, True, "epsilon"),
    "dpm++": (DPMSolverMultistepScheduler, {"solver_order": 2}, True, "epsilon"),
    "dpm++_1": (DPMSolverMultistepScheduler, {"solver_order": 1}, True, "epsilon"),
    "dpm++_karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}, True, "epsilon"),
    "dpm++_sde": (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"}, True, "epsilon"),
    "unipc": (UniPCMultistepScheduler, {}, True, "epsilon"),
    "edm_euler": (EDMEulerScheduler, {}, False, "epsilon"),
    "edm_dpm++": (EDMDPMSolverMultistepScheduler, {}, False, "epsilon"),
    "flow_euler": (FlowMatchEulerDiscreteScheduler, {}, False, "flow"),
    "flow_heun": (FlowMatchHeunDiscreteScheduler, {}, False, "flow"),
}
REQUIRED = {"ddpm", "ddim", "plms", "euler", "euler_a", "dpm++", "heun", "unipc", "flow_euler"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convolutions are slower with 2 threads on 2 shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_unet(in_channels=3, out_channels=3, num_class_embeds=None, seed=0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(sample_size=8, in_channels=in_channels, out_channels=out_channels,
                       block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       num_class_embeds=num_class_embeds).eval()


@pytest.fixture(scope="module")
def unet() -> UNet2DModel:
    return tiny_unet()


def call_unet(unet):
    return lambda x, t, **cond: unet(x, t, **cond).sample


@torch.no_grad()
def reference_loop(scheduler, model, shape, steps, seed, channels=None, **step_kwargs):
    """The loop every diffusers pipeline runs, written out plainly; a flow model on a multistep VP solver's flow
    sigmas is fed 1000 * sigma of the step (the solver's own timesteps are floor(1000 sigma))."""
    generator = torch.Generator().manual_seed(seed)
    scheduler.set_timesteps(steps)
    x = randn_tensor(shape, generator=generator) * getattr(scheduler, "init_noise_sigma", 1.0)
    if "generator" in inspect.signature(scheduler.step).parameters:
        step_kwargs["generator"] = generator
    flow_sigmas = scheduler.config.get("use_flow_sigmas", False)
    for i, t in enumerate(scheduler.timesteps):
        model_in = scheduler.scale_model_input(x, t) if hasattr(scheduler, "scale_model_input") else x
        out = model(model_in, 1000 * scheduler.sigmas[i] if flow_sigmas else t).sample
        if channels is not None:
            out = out[:, :channels]
        x = scheduler.step(out, t, x, **step_kwargs).prev_sample
    return x


def test_registry_has_every_required_sampler_and_a_reference_for_each():
    assert REQUIRED <= set(SAMPLERS)
    assert set(REFERENCE) == set(SAMPLERS), "add a REFERENCE entry for each new sampler"


def test_make_scheduler_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown sampler 'nope'.*ddim"):
        make_scheduler("nope")
    with pytest.raises(ValueError, match="no option.*use_karas_sigmas"):
        make_scheduler("euler", use_karas_sigmas=True)
    with pytest.raises(ValueError, match="does not support prediction_type 'flow'"):
        make_scheduler("ddim", prediction_type="flow")
    with pytest.raises(ValueError, match="eta=1.0 sampler"):
        sample(lambda x, t: x, (1, 1, 2, 2), "euler_a", 2, generator=None, eta=0.5, progress=False)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_sampler_matches_plain_diffusers_loop(unet, name):
    cls, kwargs, beta_schedule, prediction = REFERENCE[name]
    schedule = LINEAR if beta_schedule else {"num_train_timesteps": 1000}
    prediction_kwargs = {} if prediction == "flow" else {"prediction_type": prediction}
    reference = reference_loop(cls(**schedule, **kwargs, **prediction_kwargs), unet, (2, 3, 8, 8), 4, seed=7)
    ours = sample(call_unet(unet), (2, 3, 8, 8), name, 4, generator=torch.Generator().manual_seed(7),
                  prediction_type=prediction, schedule=schedule, progress=False)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,prediction,overrides", [
    ("ddim", "v_prediction", {"timestep_spacing": "trailing"}),
    ("euler", "sample", {"timestep_spacing": "leading", "steps_offset": 1}),
    ("dpm++", "v_prediction", {"thresholding": True, "dynamic_thresholding_ratio": 0.9}),
    ("unipc", "sample", {"timestep_spacing": "trailing"}),
    ("dpm++", "flow", {}),
    ("ddpm", "v_prediction", {"timestep_spacing": "trailing", "clip_sample": False}),
])
@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_prediction_types_schedules_and_spacings_match_plain_loop(unet, name, prediction, overrides,
                                                                   beta_schedule):
    cls = REFERENCE[name][0]
    schedule = {**LINEAR, "beta_schedule": beta_schedule}
    as_scheduler = ({"prediction_type": "flow_prediction", "use_flow_sigmas": True} if prediction == "flow"
                    else {"prediction_type": prediction})
    reference = reference_loop(cls(**schedule, **REFERENCE[name][1], **as_scheduler, **overrides), unet,
                               (2, 3, 8, 8), 5, seed=3)
    ours = sample(call_unet(unet), (2, 3, 8, 8), name, 5, generator=torch.Generator().manual_seed(3),
                  prediction_type=prediction, schedule=schedule, progress=False, **overrides)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def to_pipeline_images(x: torch.Tensor) -> np.ndarray:
    return (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def test_ddpm_with_learned_range_variance_matches_ddpm_pipeline():
    unet = tiny_unet(out_channels=6)  # GLIDE/ADM style: eps then variance interpolation
    scheduler = DDPMScheduler(variance_type="learned_range", beta_schedule="squaredcos_cap_v2")
    pipe = DDPMPipeline(unet, scheduler)
    pipe.set_progress_bar_config(disable=True)
    reference = pipe(batch_size=2, generator=torch.Generator().manual_seed(1), num_inference_steps=6,
                     output_type="np").images
    ours = sample(call_unet(unet), (2, 3, 8, 8), "ddpm", 6, generator=torch.Generator().manual_seed(1),
                  learned_variance=True, schedule=scheduler.config, progress=False)
    np.testing.assert_allclose(to_pipeline_images(ours), reference, atol=1e-5)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_ddim_with_eta_matches_ddim_pipeline(unet, spacing):
    pipe = DDIMPipeline(unet, DDIMScheduler(timestep_spacing=spacing))
    pipe.set_progress_bar_config(disable=True)
    reference = pipe(batch_size=2, generator=torch.Generator().manual_seed(2), num_inference_steps=5, eta=0.5,
                     output_type="np").images
    ours = sample(call_unet(unet), (2, 3, 8, 8), "ddim", 5, generator=torch.Generator().manual_seed(2), eta=0.5,
                  timestep_spacing=spacing, progress=False)
    np.testing.assert_allclose(to_pipeline_images(ours), reference, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_sd_unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                layers_per_block=1, cross_attention_dim=32, attention_head_dim=(2, 4),
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")).eval()


@pytest.mark.parametrize("name,eta", [("ddim", 0.3), ("euler_a", None), ("dpm++", None)])
def test_cfg_matches_stable_diffusion_pipeline(tiny_sd_unet, name, eta):
    sd_schedule = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                   "beta_schedule": "scaled_linear", "steps_offset": 1, "clip_sample": False,
                   "set_alpha_to_one": False}
    cls, kwargs, _, _ = REFERENCE[name]
    pipe = StableDiffusionPipeline(vae=None, text_encoder=None, tokenizer=None, unet=tiny_sd_unet,
                                   scheduler=cls.from_config({**sd_schedule, **kwargs}), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    text = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(0))
    null = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(1))
    reference = pipe(prompt_embeds=text, negative_prompt_embeds=null, height=64, width=64, num_inference_steps=4,
                     guidance_scale=5.0, eta=eta or 0.0, generator=torch.Generator().manual_seed(4),
                     output_type="latent").images
    ours = sample(call_unet(tiny_sd_unet), (2, 4, 8, 8), name, 4, generator=torch.Generator().manual_seed(4),
                  cond={"encoder_hidden_states": text}, uncond={"encoder_hidden_states": null},
                  guidance_scale=5.0, eta=eta, schedule=sd_schedule, progress=False)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_learned_variance_is_dropped_for_samplers_that_do_not_use_it():
    # 4 channels: diffusers' own DPM-Solver learned-variance path would keep 3 of them
    unet = tiny_unet(in_channels=4, out_channels=8)
    for name in ("dpm++", "euler", "ddim"):
        cls, kwargs, _, _ = REFERENCE[name]
        reference = reference_loop(cls(**LINEAR, **kwargs), unet, (2, 4, 8, 8), 4, seed=5, channels=4)
        ours = sample(call_unet(unet), (2, 4, 8, 8), name, 4, generator=torch.Generator().manual_seed(5),
                      learned_variance=True, progress=False)
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="8 channels.*learned_variance=True"):
        sample(call_unet(unet), (2, 4, 8, 8), "ddim", 2, generator=None, progress=False)


def test_ddpm_learned_range_step_matches_hand_computation():
    """x_{t-1} = posterior mean + exp(0.5 (v log beta_t + (1 - v) log beta~_t)) z, v = (output + 1) / 2."""
    shape, seed, steps = (3, 2, 4, 4), 11, 5
    unet = tiny_unet(in_channels=2, out_channels=4, seed=1)
    infos = []
    sample(call_unet(unet), shape, "ddpm", steps, generator=torch.Generator().manual_seed(seed),
           learned_variance=True, schedule={"clip_sample": False}, callback=infos.append, progress=False)
    alpha_bar = DDPMScheduler().alphas_cumprod.double()
    noise = torch.Generator().manual_seed(seed)
    torch.testing.assert_close(infos[0].x, torch.randn(shape, generator=noise))
    timesteps = [int(i.timestep) for i in infos]
    assert timesteps == [800, 600, 400, 200, 0]  # "leading" respacing of 1000 steps
    for info, t, t_prev in zip(infos, timesteps, timesteps[1:] + [-1]):
        ab, ab_prev = alpha_bar[t], (alpha_bar[t_prev] if t_prev >= 0 else torch.tensor(1.0, dtype=torch.float64))
        beta = 1 - ab / ab_prev
        x, out = info.x.double(), info.model_output.double()
        eps, v = out[:, :2], out[:, 2:]
        x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
        mean = (ab_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - ab_prev) * x) / (1 - ab)
        if t > 0:
            beta_tilde = (1 - ab_prev) / (1 - ab) * beta
            frac = (v + 1) / 2
            log_var = frac * beta.log() + (1 - frac) * beta_tilde.log()
            expected = mean + torch.exp(0.5 * log_var) * torch.randn(shape, generator=noise).double()
        else:
            expected = mean
        torch.testing.assert_close(info.prev_sample.double(), expected, rtol=1e-4, atol=1e-5)


class LabelDenoiser:
    """A 2C-channel model whose output depends on the class label; records what it is called with."""

    def __init__(self):
        self.unet = tiny_unet(out_channels=6, num_class_embeds=4, seed=2)
        self.calls = []

    def __call__(self, x, t, class_labels, low_res=None):
        self.calls.append({"batch": x.shape[0], "labels": class_labels.clone(), "t": t.clone(),
                           "low_res": low_res})
        out = self.unet(x, t, class_labels=class_labels).sample
        return out if low_res is None else out + low_res.repeat(1, 2, 1, 1)


def test_glide_guidance_guides_eps_only_and_takes_variance_from_the_conditional_half():
    model = LabelDenoiser()
    labels, null = torch.tensor([1, 2]), torch.tensor([0, 0])
    infos = []
    sample(model, (2, 3, 8, 8), "ddpm", 3, generator=torch.Generator().manual_seed(0),
           cond={"class_labels": labels}, uncond={"class_labels": null}, guidance_scale=3.0, guidance="glide",
           learned_variance=True, callback=infos.append, progress=False)
    assert len(infos) == 3 and all(c["batch"] == 4 for c in model.calls)  # one doubled forward per step
    for info in infos:
        t = info.timestep.expand(2)
        cond_out = model.unet(info.x, t, class_labels=labels).sample
        uncond_out = model.unet(info.x, t, class_labels=null).sample
        eps = uncond_out[:, :3] + 3.0 * (cond_out[:, :3] - uncond_out[:, :3])
        torch.testing.assert_close(info.model_output, torch.cat([eps, cond_out[:, 3:]], 1), rtol=1e-5, atol=1e-5)
        # the plain CFG form would have extrapolated the variance channels as well
        cfg = uncond_out + 3.0 * (cond_out - uncond_out)
        assert not torch.allclose(info.model_output[:, 3:], cfg[:, 3:], atol=1e-3)


def test_conditioning_passes_through_and_guidance_interval_limits_doubled_forwards():
    model = LabelDenoiser()
    low_res = torch.randn(2, 3, 8, 8)
    labels, null = torch.tensor([3, 1]), torch.tensor([0])
    steps = 10
    sample(model, (2, 3, 8, 8), "ddim", steps, generator=torch.Generator().manual_seed(0),
           cond={"class_labels": labels, "low_res": low_res}, uncond={"class_labels": null}, guidance_scale=2.0,
           guidance_interval=(0.2, 0.6), learned_variance=True, progress=False)
    guided = [c for c in model.calls if c["batch"] == 4]
    assert [c["batch"] for c in model.calls] == [2, 2] + [4] * 4 + [2] * 4
    for call in guided:
        assert torch.equal(call["labels"], torch.tensor([0, 0, 3, 1]))  # uncond half first; null broadcast
        assert torch.equal(call["low_res"], torch.cat([low_res, low_res]))  # cond-only key used for both halves
        assert call["t"].shape == (4,) and call["t"].unique().numel() == 1
    unguided = [c for c in model.calls if c["batch"] == 2]
    assert all(c["low_res"] is low_res and torch.equal(c["labels"], labels) for c in unguided)
    with pytest.raises(ValueError, match="needs `uncond`"):
        sample(model, (2, 3, 8, 8), "ddim", 2, generator=None, cond={"class_labels": labels}, guidance_scale=2.0)


@pytest.mark.parametrize("name", [n for n, p in SAMPLERS.items() if p.stochastic])
def test_stochastic_samplers_are_reproducible_with_a_generator(unet, name):
    prediction = REFERENCE[name][3]

    def draw(seed):
        return sample(call_unet(unet), (2, 3, 8, 8), name, 3, generator=torch.Generator().manual_seed(seed),
                      prediction_type=prediction, progress=False)

    first, again, other = draw(0), draw(0), draw(1)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_x_T_fixes_deterministic_samplers_whatever_the_generator(unet):
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    a = sample(call_unet(unet), x_T.shape, "unipc", 4, generator=torch.Generator().manual_seed(0), x_T=x_T,
               progress=False)
    b = sample(call_unet(unet), x_T.shape, "unipc", 4, generator=None, x_T=x_T.clone(), progress=False)
    assert torch.equal(a, b)


def test_ddim_with_eta_one_is_ddpm(unet):
    """With the same noise stream, DDIM(eta=1) and DDPM take the same ancestral steps."""
    schedule = {"clip_sample": False}
    ddpm = sample(call_unet(unet), (2, 3, 8, 8), "ddpm", 6, generator=torch.Generator().manual_seed(3),
                  schedule=schedule, progress=False)
    ddim = sample(call_unet(unet), (2, 3, 8, 8), "ddim", 6, generator=torch.Generator().manual_seed(3), eta=1.0,
                  schedule=schedule, progress=False)
    torch.testing.assert_close(ddim, ddpm, rtol=1e-4, atol=1e-4)


# --- Gaussian data: the exact model is known in closed form ----------------------------------------------

GAUSS = GaussianData(mean=0.5, std=0.8)


def gaussian_denoiser(name, prediction):
    if name.startswith("edm"):
        return GAUSS.edm_denoiser(prediction)
    return GAUSS.flow_denoiser() if prediction == "flow" else GAUSS.vp_denoiser(prediction)


def test_ddpm_ancestral_steps_match_the_closed_form_reverse_posterior():
    shape, steps = (4096, 1, 2, 2), 10
    infos = []
    out = sample(GAUSS.vp_denoiser(), shape, "ddpm", steps, generator=torch.Generator().manual_seed(0),
                 schedule={"clip_sample": False}, callback=infos.append, progress=False)
    alpha_bar = DDPMScheduler().alphas_cumprod.double()
    mu, s2 = GAUSS.mean, GAUSS.std ** 2
    mean, var = 0.0, 1.0  # of x_T ~ N(0, 1), pushed through the linear-Gaussian chain below
    timesteps = [int(i.timestep) for i in infos]
    for info, t, t_prev in zip(infos, timesteps, timesteps[1:] + [-1]):
        ab = alpha_bar[t].item()
        ab_prev = alpha_bar[t_prev].item() if t_prev >= 0 else 1.0
        x = info.x.double()
        # E[x0 | x_t] and E[x_prev | x_t] by conditioning the joint Gaussian of (x_prev, x_t)
        torch.testing.assert_close(info.pred_original_sample.double(),
                                   mu + ab ** 0.5 * s2 * (x - ab ** 0.5 * mu) / (ab * s2 + 1 - ab),
                                   rtol=1e-4, atol=1e-4)
        var_prev, var_t = ab_prev * s2 + 1 - ab_prev, ab * s2 + 1 - ab
        gain = (ab / ab_prev) ** 0.5 * var_prev / var_t
        offset = ab_prev ** 0.5 * mu - gain * ab ** 0.5 * mu
        residual = info.prev_sample.double() - (offset + gain * x)
        beta_tilde = (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)
        if t > 0:
            z = residual / beta_tilde ** 0.5
            assert abs(z.mean().item()) < 0.03 and abs(z.std().item() - 1) < 0.03, (t, z.mean(), z.std())
        else:
            assert residual.abs().max().item() < 1e-4
        mean, var = offset + gain * mean, gain ** 2 * var + beta_tilde
    # 10 ancestral steps with the posterior-given-x0 variance land on this narrower Gaussian
    assert var ** 0.5 < 0.95 * GAUSS.std
    assert abs(out.mean().item() - mean) < 0.03 and abs(out.std().item() / var ** 0.5 - 1) < 0.02


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_converges_to_the_data_distribution(name):
    """With many steps every sampler, on every model output type it takes, lands on N(0.5, 0.8^2); a few
    steps of a first-order sampler measurably does not (so the tolerance can catch a wrong sampler)."""
    for prediction in SAMPLERS[name].predictions:
        x = sample(gaussian_denoiser(name, prediction), (512, 1, 4, 4), name, 200,
                   generator=torch.Generator().manual_seed(1), prediction_type=prediction,
                   schedule={"clip_sample": False}, progress=False)
        mean_err, std_err = abs(x.mean().item() - GAUSS.mean), abs(x.std().item() - GAUSS.std)
        assert mean_err < 0.03 and std_err < 0.035, (prediction, mean_err, std_err)
    if name in ("ddim", "euler", "ddpm"):
        few = sample(gaussian_denoiser(name, "epsilon"), (512, 1, 4, 4), name, 8,
                     generator=torch.Generator().manual_seed(1), schedule={"clip_sample": False}, progress=False)
        assert abs(few.std().item() - GAUSS.std) > 0.1


# --- the digits diffusion model and the comparison script, at tiny scale ---------------------------------

@pytest.fixture(scope="module")
def trained_tiny(digits_tiny, tmp_path_factory):
    from shared.toy import train_diffusion

    out = tmp_path_factory.mktemp("digits_diffusion")
    metrics = train_diffusion.main({"scale": "tiny", "data_dir": str(digits_tiny), "out_dir": str(out),
                                    "threads": 1})
    return out, metrics


def test_compare_writes_grid_and_one_table_row_per_sampler_and_steps(trained_tiny, digits_tiny, tmp_path):
    import csv

    from PIL import Image

    from shared.toy import features
    from shared.toy import sampler_compare as compare

    features_path = tmp_path / "features.safetensors"
    features.save(features.DigitsNet(width=8, feature_dim=16), features_path)
    out = tmp_path / "compare"
    rows = compare.main({"scale": "tiny", "model_dir": str(trained_tiny[0] / "model"), "out_dir": str(out),
                         "features": str(features_path), "reference_dir": str(digits_tiny / "test"),
                         "samplers": ["ddim", "heun", "dpm++"], "steps": [2, 3], "labels": [], "per_label": 2,
                         "prompts": ["a red handwritten seven", "a white handwritten zero"],
                         "guidance_scale": 2.0, "grid_per_cell": 2, "save_images": True, "threads": 1,
                         "reference": "ddpm:4"})
    # 80 px of names + 2 columns of 2 images of 32 px + 3 gaps; 16 px header + 3 rows + the reference row
    assert Image.open(out / "grid.png").size == (80 + 2 * 2 * 32 + 3 * 2, 16 + 4 * 32 + 5 * 2)
    *rows, ref = rows
    assert (ref["sampler"], ref["steps"], ref["fd_minus_reference"]) == ("ddpm", 4, None)
    for r in rows:  # FD's bootstrap interval, and the paired interval of its difference to the reference row
        assert r["fd_ci_low"] <= r["fd"] <= r["fd_ci_high"] and r["fd_ci_low"] < r["fd_ci_high"]
        assert r["fd_minus_reference"] == pytest.approx(r["fd"] - ref["fd"])
        assert r["fd_minus_reference_ci_low"] <= r["fd_minus_reference"] <= r["fd_minus_reference_ci_high"]
    fd_entry = json.loads((out / "eval" / "heun_3.json").read_text())["metrics"][0]
    assert fd_entry["ci"] == [rows[3]["fd_ci_low"], rows[3]["fd_ci_high"]]
    expected = [("ddim", 2), ("ddim", 3), ("heun", 2), ("heun", 3), ("dpm++", 2), ("dpm++", 3)]
    assert [(r["sampler"], r["steps"]) for r in rows] == expected
    assert [r["nfe"] for r in rows] == [2, 3, 3, 5, 2, 3]  # heun: 2 evaluations per step but the last
    with open(out / "results.csv") as f:
        *table, _ = list(csv.DictReader(f))
    assert [(r["sampler"], int(r["steps"])) for r in table] == expected
    assert all(int(r["images"]) == 4 and float(r["seconds_per_image"]) > 0 and np.isfinite(float(r["fd"]))
               for r in table)
    md = (out / "results.md").read_text().splitlines()
    assert sum(line.startswith("| ddim |") or line.startswith("| heun |") or line.startswith("| dpm++ |")
               for line in md) == 6
    captions = sorted((out / "images" / "heun_3").glob("*.txt"))
    assert [p.read_text().strip() for p in captions] == ["a red handwritten seven"] * 2 + \
        ["a white handwritten zero"] * 2
    with pytest.raises(ValueError, match="names no digit"):
        compare.main({"scale": "tiny", "model_dir": str(trained_tiny[0] / "model"), "out_dir": str(out),
                      "features": str(features_path), "reference_dir": str(digits_tiny / "test"),
                      "labels": [], "prompts": ["a handwritten something"]})


def test_compare_gives_every_sampler_the_clamp_of_the_models_schedule(trained_tiny, digits_tiny, tmp_path,
                                                                       monkeypatch):
    """train_diffusion saves clip_sample=True, so DDPM/DDIM clamp x0 each step; the ODE solvers must get the same
    clamp (clip_denoised) or the table compares clamped DDPM with unclamped Euler/DPM++."""
    from shared.samplers import sampling
    from shared.toy import features
    from shared.toy import sampler_compare as compare

    assert compare.clip_limit("schedule", {"clip_sample": True, "clip_sample_range": 1.0}) == 1.0
    assert compare.clip_limit("schedule", {"clip_sample": False}) is None
    assert compare.clip_limit("none", {"clip_sample": True}) is None and compare.clip_limit("2.5", {}) == 2.5
    for bad in ("yes", "0", "-1"):
        with pytest.raises(ValueError, match="clip_denoised"):
            compare.clip_limit(bad, {})
    seen = []

    def recording_sample(*args, **kwargs):
        seen.append((args[2], kwargs["clip_denoised"]))
        return sampling.sample(*args, **kwargs)

    monkeypatch.setattr(compare, "sample", recording_sample)
    features_path = tmp_path / "features.safetensors"
    features.save(features.DigitsNet(width=8, feature_dim=16), features_path)
    common = {"scale": "tiny", "model_dir": str(trained_tiny[0] / "model"), "features": str(features_path),
              "reference_dir": str(digits_tiny / "test"), "samplers": ["euler"], "steps": [2], "labels": [3, 17],
              "guidance_sweep": [], "grid_per_cell": 1, "threads": 1}
    assert json.loads((trained_tiny[0] / "model/scheduler/scheduler_config.json").read_text())["clip_sample"]
    compare.main({**common, "out_dir": str(tmp_path / "a")})
    compare.main({**common, "out_dir": str(tmp_path / "b"), "clip_denoised": "none"})
    assert seen == [("euler", 1.0), ("euler", None)]
    with pytest.raises(ValueError, match="clip_denoised='x'"):
        compare.main({**common, "out_dir": str(tmp_path / "c"), "clip_denoised": "x"})


def test_clip_denoised_clamps_every_x0_estimate_and_leaves_eps_inside_the_range_alone():
    """GLIDE's clip_denoised for the diffusers samplers: on a cosine schedule a 1e-3 eps error at t=999 puts the
    x0 estimate ~20 off (1/sqrt(alpha_bar) ~ 2e4); with clip_denoised=1 Euler's every estimate is inside [-1, 1],
    and DDIM equals diffusers' own GLIDE mode (clip_sample + use_clipped_model_output=True)."""
    from shared.samplers.sampling import _alpha_bar, clamped_x0_eps

    schedule = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"}
    x0 = torch.full((2, 3, 4, 4), 0.5)
    ac = make_scheduler("ddim", schedule=schedule).alphas_cumprod

    def denoiser(x, t):
        a = ac[t.round().long().clamp(0, 999)].view(-1, 1, 1, 1)
        return (x - a.sqrt() * x0) / (1 - a).sqrt() + 1e-3

    def run(name, clip, **kw):
        worst = []
        out = sample(denoiser, x0.shape, name, 10, generator=torch.Generator().manual_seed(0), schedule=schedule,
                     progress=False, clip_denoised=clip, timestep_spacing="trailing",
                     callback=lambda info: worst.append(float(info.pred_original_sample.abs().max())), **kw)
        return out, max(worst)

    assert run("euler", None)[1] > 10
    assert run("euler", 1.0)[1] <= 1.01  # fp32 round-off: at alpha_bar ~ 2e-9 x0 is recomputed to about 1e-3
    ours, _ = run("ddim", 1.0)
    scheduler = make_scheduler("ddim", schedule=schedule, timestep_spacing="trailing")
    scheduler.set_timesteps(10)
    x = randn_tensor(tuple(x0.shape), generator=torch.Generator().manual_seed(0))
    for t in scheduler.timesteps:
        x = scheduler.step(denoiser(x, t.expand(2)), t, x, eta=0.0, use_clipped_model_output=True).prev_sample
    torch.testing.assert_close(ours, x, atol=1e-4, rtol=0)
    # inside the range the eps is returned unchanged; at a fractional t alpha_bar sits between its neighbours
    eps, a = torch.randn(2, 3, 4, 4), ac[500]
    x_t = a.sqrt() * torch.rand(2, 3, 4, 4).mul(1.8).sub(0.9) + (1 - a).sqrt() * eps
    torch.testing.assert_close(clamped_x0_eps(eps, x_t, a, 1.0), eps, atol=1e-5, rtol=0)
    sched = make_scheduler("ddim", schedule=schedule)
    assert float(_alpha_bar(sched, torch.tensor(500))) == pytest.approx(float(ac[500]), rel=1e-6)
    assert float(ac[501]) < float(_alpha_bar(sched, torch.tensor(500.5))) < float(ac[500])
