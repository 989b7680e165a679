"""DMD2 paper recipes against the released launch scripts (values written out here from tianweiy/DMD2's
experiments/*.sh and the argparse defaults of main/train_sd.py / main/edm/train_edm.py), the published GAN head
(`cls_pred_branch` of main/sd_guidance.py / main/edm/edm_guidance.py), and real-score CFG only above scale 1."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from projects.dmd2.networks import FakeScore, GANHead, load_published_guidance
from projects.dmd2.recipes import RECIPES
from projects.dmd2.train import Config
from shared.config import resolve

torch.set_num_threads(1)

# recipe -> what its launch script (and the trainer defaults it leaves alone) says
PUBLISHED = {
    "imagenet64": dict(generator_lr=2e-6, guidance_lr=2e-6, batch_size=40, dfake_gen_update_ratio=5,
                       real_guidance_scale=1.0, cls_on_clean_image=True, gen_cls_loss_weight=3e-3,
                       guidance_cls_loss_weight=1e-2, diffusion_gan=True, diffusion_gan_max_timestep=1000,
                       denoising_step_list=[999]),
    "imagenet64_dm": dict(generator_lr=2e-6, guidance_lr=2e-6, batch_size=40, dfake_gen_update_ratio=5,
                          real_guidance_scale=1.0, cls_on_clean_image=False, gen_cls_loss_weight=0.0,
                          guidance_cls_loss_weight=0.0, denoising_step_list=[999]),
    "imagenet64_gan_resume": dict(generator_lr=5e-7, guidance_lr=5e-7, batch_size=40, dfake_gen_update_ratio=5,
                                  real_guidance_scale=1.0, cls_on_clean_image=True, gen_cls_loss_weight=3e-3,
                                  guidance_cls_loss_weight=1e-2, diffusion_gan=True, diffusion_gan_max_timestep=1000,
                                  denoising_step_list=[999]),
    "sd15": dict(generator_lr=1e-5, guidance_lr=1e-5, batch_size=32, resolution=512, dfake_gen_update_ratio=10,
                 real_guidance_scale=1.75, cls_on_clean_image=False, gen_cls_loss_weight=0.0,
                 guidance_cls_loss_weight=0.0, denoising_step_list=[999]),
    "sd15_gan": dict(generator_lr=5e-7, guidance_lr=5e-7, batch_size=32, resolution=512, dfake_gen_update_ratio=10,
                     real_guidance_scale=1.75, cls_on_clean_image=True, gen_cls_loss_weight=1e-3,
                     guidance_cls_loss_weight=1e-2, diffusion_gan=True, diffusion_gan_max_timestep=1000,
                     denoising_step_list=[999]),
    "sdxl_4step": dict(generator_lr=5e-7, guidance_lr=5e-7, batch_size=2, resolution=1024, dfake_gen_update_ratio=5,
                       real_guidance_scale=8.0, gen_cls_loss_weight=5e-3, guidance_cls_loss_weight=1e-2,
                       diffusion_gan=True, diffusion_gan_max_timestep=1000, backward_simulation=True,
                       denoising_step_list=[999, 749, 499, 249]),
    "sdxl_4step_lora": dict(generator_lr=5e-5, guidance_lr=5e-5, batch_size=2, resolution=1024,
                            dfake_gen_update_ratio=5, real_guidance_scale=8.0, gen_cls_loss_weight=5e-3,
                            guidance_cls_loss_weight=1e-2, lora_rank=64, backward_simulation=True,
                            denoising_step_list=[999, 749, 499, 249]),
    "sdxl_1step": dict(generator_lr=5e-7, guidance_lr=5e-7, batch_size=2, resolution=1024, dfake_gen_update_ratio=5,
                       real_guidance_scale=8.0, gen_cls_loss_weight=5e-3, guidance_cls_loss_weight=1e-2,
                       denoising_step_list=[399]),
}
# every released run: --max_grad_norm 10 (train_sd.py default, restated by the SD scripts; train_edm.py default),
# constant_with_warmup over --warmup_step 500, --use_fp16 = bfloat16, generator conditioning of its own
LOOP = dict(max_grad_norm=10.0, lr_schedule="warmup", warmup_steps=500, mixed_precision="bf16",
            generator_cond="random", gan_head_layout="published")


def _resolved(recipe: str, scale: str):
    from projects.dmd2.train import PRESETS

    return resolve(Config, {"recipe": recipe, "scale": scale}, PRESETS)


@pytest.mark.parametrize("recipe", sorted(PUBLISHED))
def test_paper_recipes_follow_the_published_scripts(recipe):
    r = RECIPES[recipe]
    assert r.source.startswith("experiments/") and r.source.endswith(".sh") and recipe in PUBLISHED
    cfg = _resolved(recipe, "paper")
    for key, want in {**PUBLISHED[recipe], **LOOP}.items():
        assert cfg[key] == want, (recipe, key, cfg[key], want)
    # the lr 5e-7 resume runs continue phase 1's weights
    assert (recipe in ("sd15_gan", "imagenet64_gan_resume")) == ("init_from" in r.needs)


def test_every_paper_recipe_is_checked_and_toy_recipes_keep_their_measured_settings():
    assert {n for n, r in RECIPES.items() if r.source} == set(PUBLISHED)
    for name in ("digits_1step", "digits_1step_gan", "toy_sd15_1step", "toy_sdxl_4step", "toy_sdxl_1step"):
        cfg = _resolved(name, "toy")
        assert (cfg.generator_cond, cfg.gan_head_layout, cfg.lr_schedule, cfg.warmup_steps) == \
            ("real", "toy", "constant", 0), name
        assert cfg.max_grad_norm == (10.0 if "sdxl" in name else 1.0), name


def test_recipe_that_needs_init_from_refuses_without_it(tmp_path):
    from projects.dmd2 import train

    with pytest.raises(ValueError, match="sd15_gan needs init_from"):
        train.main({"recipe": "sd15_gan", "scale": "tiny", "teacher": "x", "data": "y",
                    "run_dir": str(tmp_path / "run")})


# ---- the published GAN head ----------------------------------------------------------------------------------
def published_head(channels: int, size: int) -> nn.Sequential:
    """DMD2's cls_pred_branch, as main/sd_guidance.py (SD1.5: 8x8; SDXL: 32x32) and main/edm/edm_guidance.py
    (ImageNet-64: 8x8, 768 channels) write it out: stride-2 4x4 convs to 4x4, a stride-4 4x4 conv to 1x1, a 1x1
    conv to the logit, GroupNorm(32) + SiLU after each but the last."""
    layers: list[nn.Module] = []
    while size > 4:
        layers += [nn.Conv2d(channels, channels, kernel_size=4, stride=2, padding=1), nn.GroupNorm(32, channels),
                   nn.SiLU()]
        size //= 2
    layers += [nn.Conv2d(channels, channels, kernel_size=4, stride=4, padding=0), nn.GroupNorm(32, channels),
               nn.SiLU(), nn.Conv2d(channels, 1, kernel_size=1, stride=1, padding=0)]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("channels,size,n_layers", [(1280, 8, 7), (1280, 32, 13), (768, 8, 7)])
def test_published_head_has_the_released_key_names_and_shapes(channels, size, n_layers):
    with torch.device("meta"):
        ours = GANHead(channels, size, layout="published")
        theirs = published_head(channels, size)
    assert len(theirs) == n_layers
    want = {f"net.{k}": tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == want


def test_published_head_computes_what_the_released_one_computes_and_loads_a_guidance_checkpoint():
    torch.manual_seed(0)
    theirs = published_head(64, 8)
    unet = nn.Conv2d(4, 4, 1)  # stands in for the fake denoiser
    ckpt = {**{f"cls_pred_branch.{k}": v for k, v in theirs.state_dict().items()},
            **{f"fake_unet.{k}": v + 1 for k, v in unet.state_dict().items()},
            **{f"real_unet.{k}": v for k, v in unet.state_dict().items()}}  # the frozen teacher: skipped
    fake = FakeScore(nn.Conv2d(4, 4, 1), GANHead(64, 8, layout="published"))
    assert load_published_guidance(fake, ckpt) == []
    assert torch.equal(fake.unet.weight, unet.weight + 1)
    h = torch.randn(5, 64, 8, 8)
    assert theirs(h).shape == (5, 1, 1, 1)
    torch.testing.assert_close(fake.head(h), theirs(h).squeeze(dim=(1, 2, 3)), rtol=0, atol=0)
    # a phase-1 checkpoint has no head: the head stays fresh and is reported
    missing = load_published_guidance(fake, {k: v for k, v in ckpt.items() if not k.startswith("cls_")})
    assert missing and all(k.startswith("net.") for k in missing)
    with pytest.raises(KeyError, match="fake_unet"):
        load_published_guidance(fake, {"cls_pred_branch.0.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="gan_head_layout=toy"):
        GANHead(16, 2, layout="published")


# ---- real-score CFG -------------------------------------------------------------------------------------------
def test_real_score_guidance_is_applied_only_above_scale_one(tmp_path):
    from projects.dmd2.backbones import EDMBackbone
    from projects.dmd2.tiny import save_tiny_edm

    bb = EDMBackbone.load(save_tiny_edm(tmp_path / "edm", seed=1))

    def net(x, sigma, class_labels):  # x0 = x + 1 with a label, x + 0 without: guided x0 = x + scale
        return x + class_labels.sum(dim=1).view(-1, 1, 1, 1)

    x, t = torch.randn(2, 3, 4, 4), torch.tensor([500, 700])
    cond, uncond = bb.condition(["3", "17"])
    for scale, shift in ((0.5, 1.0), (1.0, 1.0), (2.0, 2.0), (1.75, 1.75)):  # DMD2: CFG_GUIDANCE = scale > 1
        torch.testing.assert_close(bb.guided_denoise(net, x, t, cond, uncond, scale), x + shift, rtol=0, atol=1e-6)


def test_uniform_generator_labels(tmp_path):
    from projects.dmd2.backbones import EDMBackbone
    from projects.dmd2.tiny import save_tiny_edm

    bb = EDMBackbone.load(save_tiny_edm(tmp_path / "edm", seed=1))
    torch.manual_seed(0)
    cond, uncond = bb.draw_condition(8000)
    onehot = cond["class_labels"]
    assert onehot.shape == (8000, bb.label_dim) and torch.equal(onehot.sum(1), torch.ones(8000))
    counts = onehot.sum(0)  # 100 expected per class, sd 10
    assert counts.min() > 60 and counts.max() < 140
    assert torch.count_nonzero(uncond["class_labels"]) == 0
