"""Sampler presets: a name -> (diffusers scheduler class, default kwargs, what it accepts).

Every update rule comes from diffusers; a preset only says which scheduler to build and how to configure it
for a given model output type. Add a sampler by adding an entry to `SAMPLERS`.
"""
from __future__ import annotations

import inspect
import types
from dataclasses import dataclass, field
from typing import Any, Mapping

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
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

# The model's training-time noise schedule (what DDPMScheduler() defaults to). Keys a scheduler does not take
# (beta_* for a flow or EDM scheduler) are dropped, because they describe the model, not the sampler.
DEFAULT_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
}

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample", "flow")

# Our prediction names -> scheduler config, for schedulers on a beta (VP) schedule.
_VP = {p: {"prediction_type": p} for p in ("epsilon", "v_prediction", "sample")}
_VP_AND_FLOW = {**_VP, "flow": {"prediction_type": "flow_prediction", "use_flow_sigmas": True}}


@dataclass(frozen=True)
class SamplerPreset:
    scheduler: type[SchedulerMixin]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    # prediction type -> config that makes the scheduler read that model output
    predictions: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: _VP)
    # config that makes the scheduler consume the variance half of a 2C-channel output (None: we split it off)
    learned_variance: Mapping[str, Any] | None = None
    # eta is a step() argument of this scheduler; otherwise `fixed_eta` says which eta it implements, if any
    takes_eta: bool = False
    fixed_eta: float | None = None
    description: str = ""

    @property
    def stochastic(self) -> bool:
        return self.takes_eta or bool(self.fixed_eta) or self.defaults.get("algorithm_type", "").startswith("sde")


SAMPLERS: dict[str, SamplerPreset] = {
    "ddpm": SamplerPreset(DDPMScheduler, learned_variance={"variance_type": "learned_range"}, fixed_eta=1.0,
                          description="ancestral DDPM (Ho et al. 2020), respaced; learned_range variance"),
    "ddim": SamplerPreset(DDIMScheduler, takes_eta=True, description="DDIM, eta=0 deterministic"),
    "plms": SamplerPreset(PNDMScheduler, {"skip_prk_steps": True},
                          predictions={p: _VP[p] for p in ("epsilon", "v_prediction")},
                          description="PLMS (PNDM without Runge-Kutta warmup)"),
    "euler": SamplerPreset(EulerDiscreteScheduler, description="Euler ODE in sigma (Karras et al. 2022)"),
    "euler_karras": SamplerPreset(EulerDiscreteScheduler, {"use_karras_sigmas": True},
                                  description="Euler on Karras sigmas"),
    "euler_a": SamplerPreset(EulerAncestralDiscreteScheduler,
                             predictions={p: _VP[p] for p in ("epsilon", "v_prediction")},
                             fixed_eta=1.0, description="Euler ancestral"),
    "heun": SamplerPreset(HeunDiscreteScheduler, description="Heun 2nd order (2 evaluations per step)"),
    "heun_karras": SamplerPreset(HeunDiscreteScheduler, {"use_karras_sigmas": True},
                                 description="Heun on Karras sigmas (the EDM sampler for VP models)"),
    "dpm++": SamplerPreset(DPMSolverMultistepScheduler, {"solver_order": 2, "algorithm_type": "dpmsolver++"},
                           predictions=_VP_AND_FLOW, description="DPM-Solver++(2M)"),
    "dpm++_1": SamplerPreset(DPMSolverMultistepScheduler, {"solver_order": 1, "algorithm_type": "dpmsolver++"},
                             predictions=_VP_AND_FLOW, description="DPM-Solver++ 1st order (= DDIM)"),
    "dpm++_karras": SamplerPreset(DPMSolverMultistepScheduler,
                                  {"solver_order": 2, "algorithm_type": "dpmsolver++", "use_karras_sigmas": True},
                                  description="DPM-Solver++(2M) on Karras sigmas"),
    "dpm++_sde": SamplerPreset(DPMSolverMultistepScheduler, {"solver_order": 2, "algorithm_type": "sde-dpmsolver++"},
                               description="SDE-DPM-Solver++(2M)"),
    "unipc": SamplerPreset(UniPCMultistepScheduler, {"solver_order": 2}, predictions=_VP_AND_FLOW,
                           description="UniPC (bh2, order 2)"),
    # EDM-preconditioned models: the denoiser is the raw network F(c_in x, c_noise); c_skip/c_out in step().
    "edm_euler": SamplerPreset(EDMEulerScheduler, predictions={p: {"prediction_type": p}
                                                               for p in ("epsilon", "v_prediction")},
                               description="EDM Euler on Karras sigmas, EDM preconditioning"),
    "edm_dpm++": SamplerPreset(EDMDPMSolverMultistepScheduler, {"solver_order": 2},
                               predictions={p: {"prediction_type": p} for p in ("epsilon", "v_prediction")},
                               description="EDM DPM-Solver++(2M), EDM preconditioning"),
    # Rectified flow: x_t = (1 - s) x0 + s noise, model predicts noise - x0, timestep = 1000 s.
    "flow_euler": SamplerPreset(FlowMatchEulerDiscreteScheduler, predictions={"flow": {}},
                                description="flow-matching Euler (rectified flow)"),
    "flow_heun": SamplerPreset(FlowMatchHeunDiscreteScheduler, predictions={"flow": {}},
                               description="flow-matching Heun"),
}


def _init_params(cls: type) -> set[str]:
    return {n for n, p in inspect.signature(cls.__init__).parameters.items()
            if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _schedule_settings(schedule: Mapping[str, Any] | None) -> dict[str, Any]:
    """DEFAULT_SCHEDULE under `schedule`, less what a loaded config only has as its class's defaults."""
    schedule = dict(schedule or {})
    filled = set(schedule.pop("_use_default_values", None) or ())
    merged = {**DEFAULT_SCHEDULE, **schedule}
    return {k: v for k, v in merged.items() if k not in filled and not k.startswith("_")}


def get_preset(name: str) -> SamplerPreset:
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; available: {', '.join(SAMPLERS)}") from None


def make_scheduler(name: str, *, prediction_type: str = "epsilon", learned_variance: bool = False,
                   schedule: Mapping[str, Any] | None = None, **overrides: Any) -> SchedulerMixin:
    """A configured diffusers scheduler for sampler `name`.

    Config precedence: preset defaults < `schedule` (the model's training schedule, e.g. a saved
    scheduler_config.json; keys this scheduler does not take are ignored) < prediction/variance settings
    < `overrides` (scheduler kwargs such as timestep_spacing, use_karras_sigmas, thresholding; an
    override this scheduler does not take is an error).

    A loaded config (`pipe.scheduler.config`, passed whole) is read as diffusers' `Cls.from_config` reads it:
    the keys it lists in `_use_default_values` were never in the file (the source class filled in its own
    defaults), so they are dropped and this scheduler's own defaults apply. SD1.5's PNDM JSON, for instance, names
    no timestep_spacing: PNDM's "leading" must not become Euler's or DPM-Solver's (whose default is "linspace").
    """
    preset = get_preset(name)
    if prediction_type not in preset.predictions:
        raise ValueError(f"sampler {name!r} does not support prediction_type {prediction_type!r}; "
                         f"it takes {', '.join(preset.predictions)}")
    accepted = _init_params(preset.scheduler)
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise ValueError(f"sampler {name!r} ({preset.scheduler.__name__}) has no option(s) {', '.join(unknown)}; "
                         f"it takes {', '.join(sorted(accepted))}")
    config = dict(preset.defaults)
    config.update({k: v for k, v in _schedule_settings(schedule).items() if k in accepted})
    config.update(preset.predictions[prediction_type])
    if learned_variance and preset.learned_variance:
        config.update(preset.learned_variance)
    elif config.get("variance_type") in ("learned", "learned_range"):
        # we split the variance channels off before step(); a learned-variance config left in place would make
        # DDPM expect them and DPM-Solver slice the first 3 channels itself
        config["variance_type"] = inspect.signature(preset.scheduler.__init__).parameters["variance_type"].default
    config.update(overrides)
    scheduler = preset.scheduler(**config)
    if config.get("use_flow_sigmas"):
        scheduler.set_timesteps = types.MethodType(_set_exact_flow_timesteps, scheduler)
    return scheduler


def _set_exact_flow_timesteps(self, *args: Any, **kwargs: Any) -> None:
    """set_timesteps, then timesteps = num_train_timesteps * sigma (float) instead of diffusers' int64
    floor(1000 sigma) (up to 1.0 off): the flow model is then fed the noise level the solver steps with, by
    `sample` and by any diffusers pipeline loop (FLUX.2's feeds t / 1000). step() finds its index by equality
    with these same values. Bound to the instance (a deepcopy rebinds it to the copy)."""
    type(self).set_timesteps(self, *args, **kwargs)
    n = len(self.timesteps)
    if len(self.sigmas) != n + 1:
        raise RuntimeError(f"{type(self).__name__}: expected one sigma per timestep (+ the final one)")
    self.timesteps = (self.sigmas[:n].to(torch.float32) * self.config.num_train_timesteps).to(self.timesteps.device)
