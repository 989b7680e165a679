"""DMD2 recipes: a registry of named method settings (as DiT's `DiT_models`), layered over the scale presets.

Resolution order of train.py's options:
    Config defaults < SCALE_PRESETS[scale] < RECIPES[recipe].settings < RECIPES[recipe].scales[scale]
    < YAML files < key=value overrides

Paper recipes follow the released launch scripts of DMD2 (experiments/{imagenet,sdv1.5,sdxl}/*.sh, named in each
recipe's `source`) and the defaults of main/train_sd.py / main/edm/train_edm.py that the scripts leave in place:
learning rates, guidance scales, update ratios, GAN weights, step lists, clipping, warm-up, precision, generator
conditioning. Toy recipes are their analogues on the toy teachers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class Recipe:
    description: str
    settings: Mapping[str, Any]
    scales: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str = ""  # the released DMD2 launch script a paper recipe follows
    needs: tuple[str, ...] = ()  # options train.py refuses to run the recipe without (e.g. init_from)


# Budgets and sizes by scale; recipes may override. Toy GAN recipes train the fresh GAN head 10x faster than the
# fake denoiser (gan_head_lr): at the generator's 5e-5, 600 steps left the discriminator at chance (loss 2 ln 2).
# The GAN head takes DMD2's layout (down to 1x1) at paper scale; tiny/toy bottlenecks are too narrow for its
# GroupNorm(32) on a 1x1 map (one channel per group), so they keep the head that stops at 2x2 (networks.GANHead).
SCALE_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"max_steps": 2, "batch_size": 2, "ckpt_every": 1, "log_every": 1, "keep_last": 2, "progress": False,
             "grid_size": 2, "gan_head_layout": "toy"},
    "toy": {"max_steps": 600, "batch_size": 32, "ckpt_every": 200, "log_every": 20, "grid_size": 8,
            "gan_head_layout": "toy"},
    "paper": {"max_steps": 200000, "batch_size": 32, "ckpt_every": 1000, "log_every": 100, "keep_last": 3,
              "milestone_every": 10000, "mixed_precision": "bf16", "grid_size": 4, "gan_head_layout": "published"},
}

# The training loop of every released run (argparse defaults of main/train_sd.py and main/edm/train_edm.py, which
# no launch script overrides except --max_grad_norm 10.0 restated): gradient clipping at 10, both optimizers on
# get_scheduler("constant_with_warmup", num_warmup_steps=500), and the generator conditioned independently of the
# real batch (train_sd.py: its own prompt loader over --train_prompt_path; train_edm.py: uniform random labels).
# Warm-up here counts each optimizer's own updates (the generator's every dfake_gen_update_ratio steps); DMD2
# steps both schedulers every iteration, and accelerate advances a prepared scheduler once per process, so its
# warm-up is over after 500 / num_gpus iterations (its own comment: "actually this scheduler is not very useful").
_PUBLISHED_LOOP = {"max_grad_norm": 10.0, "lr_schedule": "warmup", "warmup_steps": 500, "generator_cond": "random"}

_SDXL_GAN = {"cls_on_clean_image": True, "gen_cls_loss_weight": 5e-3, "guidance_cls_loss_weight": 1e-2,
             "diffusion_gan": True, "diffusion_gan_max_timestep": 1000}
_SD_GAN_OFF = {"cls_on_clean_image": False, "gen_cls_loss_weight": 0.0, "guidance_cls_loss_weight": 0.0,
               "diffusion_gan": False}
# the toy tables (README) were measured with the generator conditioned on the real batch's labels/captions and
# without the paper loop settings; the toy recipes keep that so their numbers stay reproducible. On the digits
# the two conditionings draw from nearly the same distribution (the real batches are uniform over the classes and
# captions); what "real" changes is that the GAN sees fake and real samples with paired conditioning.
_TOY = {"generator_cond": "real"}

RECIPES: dict[str, Recipe] = {
    # ---- paper ------------------------------------------------------------------------------------------------
    # experiments/imagenet/imagenet_gan_classifier_genloss3e-3_diffusion1000_lr2e-6_scratch.sh (7 GPUs x 40):
    # --use_fp16 runs the EDM network in bfloat16 (third_party/edm/training/networks.py: dtype = torch.bfloat16)
    "imagenet64": Recipe(
        "ImageNet-64 1-step from EDM's ADM teacher (sigma 80), GAN on the fake denoiser's bottleneck",
        {"backbone": "edm", "teacher_config": "imagenet64", "denoising_step_list": [999], "generator_lr": 2e-6,
         "guidance_lr": 2e-6, "dfake_gen_update_ratio": 5, "real_guidance_scale": 1.0, "cls_on_clean_image": True,
         "gen_cls_loss_weight": 3e-3, "guidance_cls_loss_weight": 1e-2, "diffusion_gan": True,
         "diffusion_gan_max_timestep": 1000, **_PUBLISHED_LOOP},
        {"paper": {"batch_size": 40, "mixed_precision": "bf16"}},
        source="experiments/imagenet/imagenet_gan_classifier_genloss3e-3_diffusion1000_lr2e-6_scratch.sh"),
    # the two runs behind the paper's FID 1.28 (experiments/imagenet/README.md): DM only from scratch, then the GAN
    # term at lr 5e-7 from that run's best checkpoint (--ckpt_only_path: weights only)
    "imagenet64_dm": Recipe(
        "ImageNet-64 1-step, distribution matching only (phase 1 of the FID-1.28 model)",
        {"backbone": "edm", "teacher_config": "imagenet64", "denoising_step_list": [999], "generator_lr": 2e-6,
         "guidance_lr": 2e-6, "dfake_gen_update_ratio": 5, "real_guidance_scale": 1.0, "cls_on_clean_image": False,
         "gen_cls_loss_weight": 0.0, "guidance_cls_loss_weight": 0.0, "diffusion_gan": False, **_PUBLISHED_LOOP},
        {"paper": {"batch_size": 40, "mixed_precision": "bf16"}},
        source="experiments/imagenet/imagenet_lr2e-6_scratch.sh"),
    "imagenet64_gan_resume": Recipe(
        "ImageNet-64 1-step, phase 2 from an imagenet64_dm run (init_from=): lr 5e-7, GAN 3e-3 / 1e-2",
        {"backbone": "edm", "teacher_config": "imagenet64", "denoising_step_list": [999], "generator_lr": 5e-7,
         "guidance_lr": 5e-7, "dfake_gen_update_ratio": 5, "real_guidance_scale": 1.0, "cls_on_clean_image": True,
         "gen_cls_loss_weight": 3e-3, "guidance_cls_loss_weight": 1e-2, "diffusion_gan": True,
         "diffusion_gan_max_timestep": 1000, **_PUBLISHED_LOOP},
        {"paper": {"batch_size": 40, "mixed_precision": "bf16"}},
        source="experiments/imagenet/imagenet_gan_classifier_genloss3e-3_diffusion1000_lr5e-7_resume.sh",
        needs=("init_from",)),
    # phase 1 of SD1.5: experiments/sdv1.5/laion6.25_sd_baseline_8node_guidance1.75_lr1e-5_seed10_dfake10_from_
    # scratch.sh (64 GPUs x 32, --use_fp16 = bf16): distribution matching only, no GAN flags
    "sd15": Recipe(
        "SD1.5 1-step (conditioning timestep 999), phase 1: lr 1e-5, guidance 1.75, dfake ratio 10, no GAN",
        {"backbone": "sd", "denoising_step_list": [999], "generator_lr": 1e-5, "guidance_lr": 1e-5,
         "real_guidance_scale": 1.75, "dfake_gen_update_ratio": 10, **_SD_GAN_OFF, **_PUBLISHED_LOOP},
        {"paper": {"resolution": 512, "batch_size": 32}},
        source="experiments/sdv1.5/laion6.25_sd_baseline_8node_guidance1.75_lr1e-5_seed10_dfake10_from_scratch.sh"),
    # phase 2 of SD1.5: experiments/sdv1.5/laion6.25_sd_baseline_8node_guidance1.75_lr5e-7_seed10_dfake10_
    # diffusion1000_gan1e-3_noode_resume_fixdata.sh: --ckpt_only_path = phase 1's checkpoint (weights only), GAN
    # 1e-3 / 1e-2 on diffusion-noised real latents (--real_image_path)
    "sd15_gan": Recipe(
        "SD1.5 1-step, phase 2 from a phase-1 run (init_from=): lr 5e-7, guidance 1.75, dfake ratio 10, GAN 1e-3",
        {"backbone": "sd", "denoising_step_list": [999], "generator_lr": 5e-7, "guidance_lr": 5e-7,
         "real_guidance_scale": 1.75, "dfake_gen_update_ratio": 10, "cls_on_clean_image": True,
         "gen_cls_loss_weight": 1e-3, "guidance_cls_loss_weight": 1e-2, "diffusion_gan": True,
         "diffusion_gan_max_timestep": 1000, **_PUBLISHED_LOOP},
        {"paper": {"resolution": 512, "batch_size": 32}},
        source="experiments/sdv1.5/laion6.25_sd_baseline_8node_guidance1.75_lr5e-7_seed10_dfake10_diffusion1000_"
               "gan1e-3_noode_resume_fixdata.sh",
        needs=("init_from",)),
    # experiments/sdxl/sdxl_cond999_8node_lr5e-7_denoising4step_diffusion1000_gan5e-3_guidance8_noinit_noode_
    # backsim_scratch.sh (64 GPUs x 2, FSDP)
    "sdxl_4step": Recipe(
        "SDXL 4-step (999, 749, 499, 249) with backward simulation, guidance 8, GAN 5e-3, FSDP",
        {"backbone": "sd", "denoising_step_list": [999, 749, 499, 249], "backward_simulation": True,
         "generator_lr": 5e-7, "guidance_lr": 5e-7, "real_guidance_scale": 8.0, "dfake_gen_update_ratio": 5,
         **_SDXL_GAN, **_PUBLISHED_LOOP},
        {"paper": {"resolution": 1024, "batch_size": 2, "fsdp": "full_shard", "fsdp_wrap": "sdxl"}},
        source="experiments/sdxl/sdxl_cond999_8node_lr5e-7_denoising4step_diffusion1000_gan5e-3_guidance8_noinit_"
               "noode_backsim_scratch.sh"),
    # experiments/sdxl/sdxl_cond999_8node_lr5e-5_denoising4step_diffusion1000_gan5e-3_guidance8_noinit_noode_
    # backsim_scratch_lora.sh (--generator_lora)
    "sdxl_4step_lora": Recipe(
        "SDXL 4-step as a LoRA (rank 64) on the frozen teacher, lr 5e-5",
        {"backbone": "sd", "denoising_step_list": [999, 749, 499, 249], "backward_simulation": True,
         "generator_lr": 5e-5, "guidance_lr": 5e-5, "real_guidance_scale": 8.0, "dfake_gen_update_ratio": 5,
         "lora_rank": 64, "lora_alpha": 8.0, **_SDXL_GAN, **_PUBLISHED_LOOP},
        {"paper": {"resolution": 1024, "batch_size": 2, "fsdp": "full_shard", "fsdp_wrap": "sdxl"}},
        source="experiments/sdxl/sdxl_cond999_8node_lr5e-5_denoising4step_diffusion1000_gan5e-3_guidance8_noinit_"
               "noode_backsim_scratch_lora.sh"),
    # experiments/sdxl/sdxl_cond399_8node_lr5e-7_1step_diffusion1000_gan5e-3_guidance8_noinit_noode.sh (its
    # --generator_ckpt_path ODE-pair warm-up is not part of this recipe)
    "sdxl_1step": Recipe(
        "SDXL 1-step at conditioning timestep 399, guidance 8, GAN 5e-3 (the paper's ODE-pair warm-up is not "
        "part of this recipe)",
        {"backbone": "sd", "denoising_step_list": [399], "generator_lr": 5e-7, "guidance_lr": 5e-7,
         "real_guidance_scale": 8.0, "dfake_gen_update_ratio": 5, **_SDXL_GAN, **_PUBLISHED_LOOP},
        {"paper": {"resolution": 1024, "batch_size": 2, "fsdp": "full_shard", "fsdp_wrap": "sdxl"}},
        source="experiments/sdxl/sdxl_cond399_8node_lr5e-7_1step_diffusion1000_gan5e-3_guidance8_noinit_noode.sh"),
    # ---- toy analogues --------------------------------------------------------------------------------------
    "digits_1step": Recipe(
        "toy ImageNet-64 analogue: 1-step from the digits EDM teacher, distribution matching only",
        {"backbone": "edm", "denoising_step_list": [999], "generator_lr": 5e-5, "guidance_lr": 5e-5,
         "dfake_gen_update_ratio": 5, "real_guidance_scale": 1.0, "cls_on_clean_image": False,
         "gen_cls_loss_weight": 0.0, "guidance_cls_loss_weight": 0.0, "ema_decay": 0.99, **_TOY}),
    "digits_1step_gan": Recipe(
        "toy ImageNet-64 analogue: as digits_1step plus the GAN term",
        {"backbone": "edm", "denoising_step_list": [999], "generator_lr": 5e-5, "guidance_lr": 5e-5,
         "dfake_gen_update_ratio": 5, "real_guidance_scale": 1.0, "cls_on_clean_image": True,
         "gen_cls_loss_weight": 3e-2, "guidance_cls_loss_weight": 1e-1, "diffusion_gan": True,
         "diffusion_gan_max_timestep": 1000, "gan_head_lr": 5e-4, "ema_decay": 0.99, **_TOY}),
    "toy_sd15_1step": Recipe(
        "toy SD1.5 analogue: 1-step at timestep 999 with CFG on the teacher and the GAN term",
        {"backbone": "sd", "denoising_step_list": [999], "generator_lr": 5e-5, "guidance_lr": 5e-5,
         "real_guidance_scale": 1.75, "dfake_gen_update_ratio": 5, "cls_on_clean_image": True,
         "gen_cls_loss_weight": 3e-2, "guidance_cls_loss_weight": 1e-1, "diffusion_gan": True,
         "gan_head_lr": 5e-4, "ema_decay": 0.99, **_TOY}),
    "toy_sdxl_4step": Recipe(
        "toy SDXL analogue: 4-step (999, 749, 499, 249) with backward simulation, CFG and the GAN term",
        {"backbone": "sd", "denoising_step_list": [999, 749, 499, 249], "backward_simulation": True,
         "generator_lr": 5e-5, "guidance_lr": 5e-5, "real_guidance_scale": 4.0, "dfake_gen_update_ratio": 5,
         "max_grad_norm": 10.0, "cls_on_clean_image": True, "gen_cls_loss_weight": 3e-2,
         "guidance_cls_loss_weight": 1e-1, "diffusion_gan": True, "gan_head_lr": 5e-4, "ema_decay": 0.99, **_TOY}),
    "toy_sdxl_1step": Recipe(
        "toy SDXL analogue: 1-step at conditioning timestep 399",
        {"backbone": "sd", "denoising_step_list": [399], "generator_lr": 5e-5, "guidance_lr": 5e-5,
         "real_guidance_scale": 4.0, "dfake_gen_update_ratio": 5, "max_grad_norm": 10.0, "cls_on_clean_image": True,
         "gen_cls_loss_weight": 3e-2, "guidance_cls_loss_weight": 1e-1, "diffusion_gan": True,
         "gan_head_lr": 5e-4, "ema_decay": 0.99, **_TOY}),
}


# The digits/toy analogues the workflow trains at tiny and toy scale: the recipes that follow no released launch
# script (the paper recipes name theirs in `source`). workflow/rules/dmd2.smk builds its wildcard patterns from this.
TOY_RECIPES: tuple[str, ...] = tuple(name for name, recipe in RECIPES.items() if not recipe.source)


def presets_for(recipe: str) -> dict[str, dict[str, Any]]:
    """Per-scale presets with the recipe layered on (what `shared.config.resolve` takes)."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")
    r = RECIPES[recipe]
    return {s: {**base, **r.settings, **r.scales.get(s, {})} for s, base in SCALE_PRESETS.items()}
