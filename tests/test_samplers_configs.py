"""shared.samplers against diffusers' own `from_config` on saved scheduler configs, the flow-prediction timestep the
model is fed by the multistep samplers (against hand-written flow solvers), and the guidance form chosen for a
learned-variance model."""
from __future__ import annotations

import inspect
import json

import pytest
import torch
from diffusers import (
    DDIMScheduler,
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
    UNet2DModel,
    UniPCMultistepScheduler,
)

from shared.samplers import SAMPLERS, guided_output, make_scheduler, sample
from shared.samplers.gaussian import GaussianData

# runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json, as published (a PNDM config that never names
# prediction_type or timestep_spacing: loading it fills those from PNDMScheduler's defaults and lists them in
# `_use_default_values`).
SD15_SCHEDULER_JSON = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}

# Each sampler name written out independently of the registry: scheduler class, kwargs, prediction type to test.
REFERENCE = {
    "ddpm": (DDPMScheduler, {}, "epsilon"),
    "ddim": (DDIMScheduler, {}, "epsilon"),
    "plms": (PNDMScheduler, {"skip_prk_steps": True}, "epsilon"),
    "euler": (EulerDiscreteScheduler, {}, "epsilon"),
    "euler_karras": (EulerDiscreteScheduler, {"use_karras_sigmas": True}, "epsilon"),
    "euler_a": (EulerAncestralDiscreteScheduler, {}, "epsilon"),
    "heun": (HeunDiscreteScheduler, {}, "epsilon"),
    "heun_karras": (HeunDiscreteScheduler, {"use_karras_sigmas": True}, "epsilon"),
    "dpm++": (DPMSolverMultistepScheduler, {"solver_order": 2, "algorithm_type": "dpmsolver++"}, "epsilon"),
    "dpm++_1": (DPMSolverMultistepScheduler, {"solver_order": 1, "algorithm_type": "dpmsolver++"}, "epsilon"),
    "dpm++_karras": (DPMSolverMultistepScheduler, {"solver_order": 2, "algorithm_type": "dpmsolver++",
                                                   "use_karras_sigmas": True}, "epsilon"),
    "dpm++_sde": (DPMSolverMultistepScheduler, {"solver_order": 2, "algorithm_type": "sde-dpmsolver++"}, "epsilon"),
    "unipc": (UniPCMultistepScheduler, {"solver_order": 2}, "epsilon"),
    "edm_euler": (EDMEulerScheduler, {}, "epsilon"),
    "edm_dpm++": (EDMDPMSolverMultistepScheduler, {"solver_order": 2}, "epsilon"),
    "flow_euler": (FlowMatchEulerDiscreteScheduler, {}, "flow"),
    "flow_heun": (FlowMatchHeunDiscreteScheduler, {}, "flow"),
}


def _settings(scheduler) -> dict:
    """The config values the scheduler was built with (from_config also keeps the source class's other keys
    as hidden, unused entries)."""
    params = inspect.signature(type(scheduler).__init__).parameters
    return {k: v for k, v in dict(scheduler.config).items() if k in params and k != "self"}


@pytest.fixture(scope="module")
def saved_configs(tmp_path_factory):
    """The SD1.5 JSON loaded as diffusers loads it, and a DDIM config saved (save_config) and loaded back."""
    root = tmp_path_factory.mktemp("schedulers")
    (root / "sd15").mkdir()
    (root / "sd15" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER_JSON))
    pndm = PNDMScheduler.from_pretrained(root / "sd15")
    assert set(pndm.config["_use_default_values"]) >= {"prediction_type", "timestep_spacing"}
    DDIMScheduler.from_config(pndm.config).save_config(root / "ddim")
    ddim = DDIMScheduler.from_pretrained(root / "ddim")
    return {"sd15_pndm": pndm.config, "ddim_saved": ddim.config}


def test_reference_table_covers_every_sampler():
    assert set(REFERENCE) == set(SAMPLERS)


@pytest.mark.parametrize("source", ["sd15_pndm", "ddim_saved"])
@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_schedule_from_a_saved_config_is_what_from_config_builds(saved_configs, source, name):
    config = saved_configs[source]
    cls, kwargs, prediction = REFERENCE[name]
    as_scheduler = {} if prediction == "flow" else {"prediction_type": prediction}
    reference = cls.from_config(config, **kwargs, **as_scheduler)
    ours = make_scheduler(name, prediction_type=prediction, schedule=config)
    assert type(ours) is cls
    assert _settings(ours) == _settings(reference)
    for s in (ours, reference):
        s.set_timesteps(10)
    torch.testing.assert_close(ours.timesteps, reference.timesteps, rtol=0, atol=0)
    if hasattr(reference, "sigmas"):
        torch.testing.assert_close(ours.sigmas, reference.sigmas, rtol=0, atol=0)


def test_sd15_config_starts_euler_and_dpm_at_the_last_training_timestep(saved_configs):
    """The published SD1.5 config names no timestep_spacing: Euler and DPM-Solver use their own default
    (linspace) and start at t=999, sigma 14.6; the PNDM default "leading" would start them at t=901, sigma 8.45."""
    for name in ("euler", "dpm++"):
        s = make_scheduler(name, schedule=saved_configs["sd15_pndm"])
        s.set_timesteps(10)
        assert int(s.timesteps[0]) == 999, name
        if name == "euler":
            assert abs(float(s.sigmas[0]) - 14.6146) < 1e-3
    ddim = make_scheduler("ddim", schedule=saved_configs["sd15_pndm"])
    ddim.set_timesteps(10)
    assert int(ddim.timesteps[0]) == 901  # DDIM's own default is "leading" (+ steps_offset 1), as diffusers does


def test_sd_flux_lab_passes_the_whole_loaded_config(saved_configs):
    from types import SimpleNamespace

    from projects.sd_flux_lab.generate import scheduler_for
    from projects.sd_flux_lab.sampling import schedule_of

    sched = PNDMScheduler.from_config(saved_configs["sd15_pndm"])
    for s in (make_scheduler("euler", schedule=schedule_of(sched)),  # sampling.unet_generate (train grids, dmd2)
              scheduler_for(SimpleNamespace(scheduler=sched), "sd", "euler", "txt2img")):  # generate.py
        s.set_timesteps(10)
        assert int(s.timesteps[0]) == 999


# ---- flow prediction with the multistep (VP-style) solvers -----------------------------------------------------
GAUSS = GaussianData(mean=0.5, std=0.8)


class Recorder:
    """The exact Gaussian-data flow model (velocity noise - x0, fed t = 1000 s), recording every t it is given."""

    def __init__(self):
        self.model = GAUSS.flow_denoiser()
        self.ts: list[torch.Tensor] = []

    def __call__(self, x, t, **_):
        self.ts.append(t.clone())
        return self.model(x, t)


def _flow_sigmas(name, steps):
    s = make_scheduler(name, prediction_type="flow")
    s.set_timesteps(steps)
    return s.sigmas.double()


def euler_flow_reference(model, x, sigmas):
    """x_{i+1} = x_i + (s_{i+1} - s_i) v(x_i, 1000 s_i): DPM-Solver++ 1st order in the flow parametrisation."""
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        v = model(x, torch.full((x.shape[0],), 1000 * float(s), dtype=torch.float64)).double()
        x = x + (s_next - s) * v
    return x


def dpmpp_2m_flow_reference(model, x, sigmas):
    """DPM-Solver++(2M) (Lu et al. 2022, data prediction, midpoint form) for x_s = (1 - s) x0 + s n: alpha = 1 - s,
    lambda = log(alpha / s); first order on the first step and on the final step to s = 0."""
    lam = lambda s: torch.log((1 - s) / s)  # noqa: E731
    prev_x0, n = None, len(sigmas) - 1
    for i in range(n):
        s, s_next = sigmas[i], sigmas[i + 1]
        v = model(x, torch.full((x.shape[0],), 1000 * float(s), dtype=torch.float64)).double()
        x0 = x - s * v
        if s_next == 0:
            x = x0
        else:
            h = lam(s_next) - lam(s)
            d = x0
            if prev_x0 is not None and i < n - 1:
                r = (lam(s) - lam(sigmas[i - 1])) / h
                d = x0 + 0.5 * (x0 - prev_x0) / r
            x = (s_next / s) * x - (1 - s_next) * torch.expm1(-h) * d
        prev_x0 = x0
    return x


@pytest.mark.parametrize("name,reference", [("dpm++_1", euler_flow_reference), ("dpm++", dpmpp_2m_flow_reference)])
def test_flow_multistep_solvers_match_hand_written_flow_solvers(name, reference):
    steps, shape = 8, (64, 1, 2, 2)
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rec = Recorder()
    ours = sample(rec, shape, name, steps, generator=None, prediction_type="flow", x_T=x_T, progress=False)
    sigmas = _flow_sigmas(name, steps)
    want = reference(GAUSS.flow_denoiser(), x_T.clone(), sigmas)
    torch.testing.assert_close(ours, want, rtol=0, atol=1e-5)  # the bug: ~3e-3
    # the model saw the exact 1000 * sigma of each step, not diffusers' integer timestep
    seen = torch.stack([t[0] for t in rec.ts]).double()
    torch.testing.assert_close(seen, 1000 * sigmas[:-1], rtol=0, atol=1e-4)


def test_flow_multistep_schedulers_give_pipeline_loops_the_exact_timestep():
    """A diffusers pipeline loop (FLUX.2's: the model gets t / 1000 of scheduler.timesteps) on the scheduler
    make_scheduler builds, as sd_flux_lab.generate hands it to Flux2Pipeline."""
    import copy

    for name in ("dpm++", "dpm++_1", "unipc"):
        s = make_scheduler(name, prediction_type="flow")
        s.set_timesteps(8)
        assert s.timesteps.is_floating_point(), name
        torch.testing.assert_close(s.timesteps, 1000 * s.sigmas[:-1], rtol=0, atol=0)
        probe = copy.deepcopy(s)  # as generate.flux_img2img probes a copy: the copy's own timesteps change
        probe.set_timesteps(4)
        assert (len(s.timesteps), len(probe.timesteps)) == (8, 4)
    shape = (64, 1, 2, 2)
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = make_scheduler("dpm++", prediction_type="flow")
    s.set_timesteps(8)
    x, model = x_T.clone(), GAUSS.flow_denoiser()
    for t in s.timesteps:
        x = s.step(model(x, t.expand(shape[0]).double()), t, x).prev_sample
    want = dpmpp_2m_flow_reference(model, x_T.clone(), s.sigmas.double())
    torch.testing.assert_close(x, want, rtol=0, atol=1e-5)


def test_flow_unipc_feeds_the_model_1000_sigma():
    steps, shape = 6, (16, 1, 2, 2)
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    rec = Recorder()
    ours = sample(rec, shape, "unipc", steps, generator=None, prediction_type="flow", x_T=x_T, progress=False)
    # the plain diffusers loop, with the model called at 1000 * sigma of the step
    s = UniPCMultistepScheduler(solver_order=2, prediction_type="flow_prediction", use_flow_sigmas=True)
    s.set_timesteps(steps)
    x, model = x_T.clone(), GAUSS.flow_denoiser()
    for i, t in enumerate(s.timesteps):
        x = s.step(model(x, torch.full((shape[0],), 1000 * float(s.sigmas[i]), dtype=torch.float64)), t, x).prev_sample
    torch.testing.assert_close(ours, x, rtol=0, atol=1e-6)
    seen = torch.stack([t[0] for t in rec.ts]).double()
    assert (seen - seen.round()).abs().max() > 1e-3  # not integer timesteps
    torch.testing.assert_close(seen, 1000 * s.sigmas[:-1].double(), rtol=0, atol=1e-4)


# ---- guidance on a learned-variance model ------------------------------------------------------------------------
def _variance_unet():
    torch.manual_seed(2)
    return UNet2DModel(sample_size=8, in_channels=3, out_channels=6, block_out_channels=(8, 16), layers_per_block=1,
                       norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), num_class_embeds=4).eval()


def test_learned_variance_guidance_defaults_to_eps_only_and_refuses_plain_cfg():
    unet = _variance_unet()
    model = lambda x, t, class_labels: unet(x, t, class_labels=class_labels).sample  # noqa: E731
    labels, null = torch.tensor([1, 2]), torch.tensor([0, 0])
    kw = dict(cond={"class_labels": labels}, uncond={"class_labels": null}, guidance_scale=3.0,
              learned_variance=True, progress=False)
    infos, glide = [], []
    sample(model, (2, 3, 8, 8), "ddpm", 3, generator=torch.Generator().manual_seed(0), callback=infos.append, **kw)
    sample(model, (2, 3, 8, 8), "ddpm", 3, generator=torch.Generator().manual_seed(0), callback=glide.append,
           guidance="glide", **kw)
    for a, b in zip(infos, glide):
        assert torch.equal(a.model_output, b.model_output)
        with torch.no_grad():
            cond_out = unet(a.x, a.timestep.expand(2), class_labels=labels).sample
        torch.testing.assert_close(a.model_output[:, 3:], cond_out[:, 3:], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="learned_variance.*variance channels.*glide"):
        sample(model, (2, 3, 8, 8), "ddpm", 2, generator=None, guidance="cfg", **kw)
    # the building block: "auto" guides only the first C channels when the output has more channels than x
    x, t = torch.randn(2, 3, 8, 8), torch.full((2,), 500)
    with torch.no_grad():
        auto = guided_output(model, x, t, {"class_labels": labels}, {"class_labels": null}, 3.0)
        both = guided_output(model, x, t, {"class_labels": labels}, {"class_labels": null}, 3.0, "glide")
    assert torch.equal(auto, both)
