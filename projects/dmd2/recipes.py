"""DMD2 recipes: a registry of named method settings (as DiT's `DiT_models`), layered over the scale presets.

Resolution order of train.py's options:
    Config defaults < SCALE_PRESETS[scale] < RECIPES[recipe].settings < RECIPES[recipe].scales[scale]
    < YAML files < key=value overrides

Paper recipes follow the released launch scripts of DMD2 (experiments/{imagenet,sdv1.5,sdxl}/*.sh): learning rates,
guidance scales, update ratios, GAN weights, step lists. Toy recipes are their analogues on the toy teachers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class Recipe:
    description: str
    settings: Mapping[str, Any]
    scales: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


# Budgets and sizes by scale; recipes may override. Toy GAN recipes train the fresh GAN head 10x faster than the
# fake denoiser (gan_head_lr): at the generator's 5e-5, 600 steps left the discriminator at chance (loss 2 ln 2).
SCALE_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"max_steps": 2, "batch_size": 2, "ckpt_every": 1, "log_every": 1, "keep_last": 2, "progress": False,
             "grid_size": 2},
    "toy": {"max_steps": 600, "batch_size": 32, "ckpt_every": 200, "log_every": 20, "grid_size": 8},
    "paper": {"max_steps": 200000, "batch_size": 32, "ckpt_every": 1000, "log_every": 100, "keep_last": 3,
              "milestone_every": 10000, "mixed_precision": "bf16", "grid_size": 4},
}

_SDXL_GAN = {"cls_on_clean_image": True, "gen_cls_loss_weight": 5e-3, "guidance_cls_loss_weight": 1e-2,
             "diffusion_gan": True, "diffusion_gan_max_timestep": 1000}

RECIPES: dict[str, Recipe] = {
    # ---- paper ------------------------------------------------------------------------------------------------
    "imagenet64": Recipe(
        "ImageNet-64 1-step from EDM's ADM teacher (sigma 80), GAN on the fake denoiser's bottleneck",
        {"backbone": "edm", "teacher_config": "imagenet64", "denoising_step_list": [999], "generator_lr": 2e-6,
         "guidance_lr": 2e-6, "dfake_gen_update_ratio": 5, "real_guidance_scale": 1.0, "cls_on_clean_image": True,
         "gen_cls_loss_weight": 3e-3, "guidance_cls_loss_weight": 1e-2, "diffusion_gan": True,
         "diffusion_gan_max_timestep": 1000},
        {"paper": {"batch_size": 40, "mixed_precision": "fp16"}}),
    "sd15": Recipe(
        "SD1.5 1-step (conditioning timestep 999), guidance 1.75, dfake ratio 10, GAN 1e-3",
        {"backbone": "sd", "denoising_step_list": [999], "generator_lr": 1e-5, "guidance_lr": 1e-5,
         "real_guidance_scale": 1.75, "dfake_gen_update_ratio": 10, "cls_on_clean_image": True,
         "gen_cls_loss_weight": 1e-3, "guidance_cls_loss_weight": 1e-2, "diffusion_gan": True,
         "diffusion_gan_max_timestep": 1000},
        {"paper": {"resolution": 512, "batch_size": 32}}),
    "sdxl_4step": Recipe(
        "SDXL 4-step (999, 749, 499, 249) with backward simulation, guidance 8, GAN 5e-3, FSDP",
        {"backbone": "sd", "denoising_step_list": [999, 749, 499, 249], "backward_simulation": True,
         "generator_lr": 5e-7, "guidance_lr": 5e-7, "real_guidance_scale": 8.0, "dfake_gen_update_ratio": 5,
         "max_grad_norm": 10.0, **_SDXL_GAN},
        {"paper": {"resolution": 1024, "batch_size": 2, "fsdp": "full_shard", "fsdp_wrap": "sdxl"}}),
    "sdxl_4step_lora": Recipe(
        "SDXL 4-step as a LoRA (rank 64) on the frozen teacher, lr 5e-5",
        {"backbone": "sd", "denoising_step_list": [999, 749, 499, 249], "backward_simulation": True,
         "generator_lr": 5e-5, "guidance_lr": 5e-5, "real_guidance_scale": 8.0, "dfake_gen_update_ratio": 5,
         "max_grad_norm": 10.0, "lora_rank": 64, "lora_alpha": 8.0, **_SDXL_GAN},
        {"paper": {"resolution": 1024, "batch_size": 2, "fsdp": "full_shard", "fsdp_wrap": "sdxl"}}),
    "sdxl_1step": Recipe(
        "SDXL 1-step at conditioning timestep 399, guidance 8, GAN 5e-3 (the paper's ODE-pair warm-up is not "
        "part of this recipe)",
        {"backbone": "sd", "denoising_step_list": [399], "generator_lr": 5e-7, "guidance_lr": 5e-7,
         "real_guidance_scale": 8.0, "dfake_gen_update_ratio": 5, "max_grad_norm": 10.0, **_SDXL_GAN},
        {"paper": {"resolution": 1024, "batch_size": 2, "fsdp": "full_shard", "fsdp_wrap": "sdxl"}}),
    # ---- toy analogues --------------------------------------------------------------------------------------
    "digits_1step": Recipe(
        "toy ImageNet-64 analogue: 1-step from the digits EDM teacher, distribution matching only",
        {"backbone": "edm", "denoising_step_list": [999], "generator_lr": 5e-5, "guidance_lr": 5e-5,
         "dfake_gen_update_ratio": 5, "real_guidance_scale": 1.0, "cls_on_clean_image": False,
         "gen_cls_loss_weight": 0.0, "guidance_cls_loss_weight": 0.0, "ema_decay": 0.99}),
    "digits_1step_gan": Recipe(
        "toy ImageNet-64 analogue: as digits_1step plus the GAN term",
        {"backbone": "edm", "denoising_step_list": [999], "generator_lr": 5e-5, "guidance_lr": 5e-5,
         "dfake_gen_update_ratio": 5, "real_guidance_scale": 1.0, "cls_on_clean_image": True,
         "gen_cls_loss_weight": 3e-2, "guidance_cls_loss_weight": 1e-1, "diffusion_gan": True,
         "diffusion_gan_max_timestep": 1000, "gan_head_lr": 5e-4, "ema_decay": 0.99}),
    "toy_sd15_1step": Recipe(
        "toy SD1.5 analogue: 1-step at timestep 999 with CFG on the teacher and the GAN term",
        {"backbone": "sd", "denoising_step_list": [999], "generator_lr": 5e-5, "guidance_lr": 5e-5,
         "real_guidance_scale": 1.75, "dfake_gen_update_ratio": 5, "cls_on_clean_image": True,
         "gen_cls_loss_weight": 3e-2, "guidance_cls_loss_weight": 1e-1, "diffusion_gan": True,
         "gan_head_lr": 5e-4, "ema_decay": 0.99}),
    "toy_sdxl_4step": Recipe(
        "toy SDXL analogue: 4-step (999, 749, 499, 249) with backward simulation, CFG and the GAN term",
        {"backbone": "sd", "denoising_step_list": [999, 749, 499, 249], "backward_simulation": True,
         "generator_lr": 5e-5, "guidance_lr": 5e-5, "real_guidance_scale": 4.0, "dfake_gen_update_ratio": 5,
         "max_grad_norm": 10.0, "cls_on_clean_image": True, "gen_cls_loss_weight": 3e-2,
         "guidance_cls_loss_weight": 1e-1, "diffusion_gan": True, "gan_head_lr": 5e-4, "ema_decay": 0.99}),
    "toy_sdxl_1step": Recipe(
        "toy SDXL analogue: 1-step at conditioning timestep 399",
        {"backbone": "sd", "denoising_step_list": [399], "generator_lr": 5e-5, "guidance_lr": 5e-5,
         "real_guidance_scale": 4.0, "dfake_gen_update_ratio": 5, "max_grad_norm": 10.0, "cls_on_clean_image": True,
         "gen_cls_loss_weight": 3e-2, "guidance_cls_loss_weight": 1e-1, "diffusion_gan": True,
         "gan_head_lr": 5e-4, "ema_decay": 0.99}),
}


def presets_for(recipe: str) -> dict[str, dict[str, Any]]:
    """Per-scale presets with the recipe layered on (what `shared.config.resolve` takes)."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")
    r = RECIPES[recipe]
    return {s: {**base, **r.settings, **r.scales.get(s, {})} for s, base in SCALE_PRESETS.items()}
