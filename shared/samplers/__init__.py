"""One small API over diffusers' schedulers: `sample(denoiser, shape, sampler, steps, generator=...)`.

    from shared.samplers import sample
    x = sample(lambda x, t, **c: unet(x, t, **c).sample, (8, 3, 32, 32), "dpm++", 20,
               generator=torch.Generator().manual_seed(0), cond={"class_labels": labels},
               uncond={"class_labels": null_labels}, guidance_scale=3.0)

Guidance (`guidance=`): "auto" (default) is GLIDE-style eps-only CFG with `learned_variance=True` and plain CFG
otherwise; "cfg" on a learned-variance model is refused (it would extrapolate the variance); see sampling.py.
A saved scheduler config (`schedule=dict(pipe.scheduler.config)`) is read as diffusers' from_config reads it.

Samplers are registry presets (`SAMPLERS`: name -> diffusers scheduler class + default kwargs); the update
rules are diffusers'. `python -m shared.toy.sampler_compare` compares samplers x steps on a trained model.
"""
from shared.samplers.registry import (DEFAULT_SCHEDULE, PREDICTION_TYPES, SAMPLERS, SamplerPreset, get_preset,
                                      make_scheduler)
from shared.samplers.sampling import GUIDANCE_FORMS, StepInfo, doubled_cond, guided_output, sample

__all__ = ["DEFAULT_SCHEDULE", "GUIDANCE_FORMS", "PREDICTION_TYPES", "SAMPLERS", "SamplerPreset", "StepInfo",
           "doubled_cond", "get_preset", "guided_output", "make_scheduler", "sample"]
