"""DMD2 training: distil a diffusion teacher into a 1- to 4-step generator.

Three networks: the generator (initialised from the teacher, optionally a LoRA on it), the frozen teacher (real
denoiser), and the fake denoiser (critic, initialised from the teacher and trained, plus a GAN head on its
bottleneck with `cls_on_clean_image`). Loss and step logic: losses.py, loop.py; backbones: backbones.py.

    python projects/dmd2/train.py recipe=digits_1step_gan teacher=results/toy/dmd2/teacher \
        data=data/toy/dmd2/digits_lmdb run_dir=results/toy/dmd2/digits_1step_gan
    python -m projects.dmd2.train recipe=sdxl_4step scale=paper teacher=downloads/sdxl-base data=... run_dir=...
    torchrun --standalone --nproc_per_node 2 -m projects.dmd2.train ...      (DDP; gloo on CPU)

    python -m projects.dmd2.train recipe=sd15_gan scale=paper init_from=<the sd15 run_dir> ...   (phase 2)

Recipes (recipe=NAME; see recipes.py): imagenet64, imagenet64_dm, imagenet64_gan_resume, sd15, sd15_gan, sdxl_4step,
sdxl_4step_lora, sdxl_1step, digits_1step, digits_1step_gan, toy_sd15_1step, toy_sdxl_4step, toy_sdxl_1step.
init_from: a DMD2 run_dir of ours (generator.safetensors + the latest checkpoint's fake denoiser and GAN head) or
a released DMD2 training checkpoint folder (pytorch_model.bin = generator, pytorch_model_1.bin = guidance model:
fake_unet.*, cls_pred_branch.*); weights only, as DMD2's --ckpt_only_path.
Outputs in run_dir: checkpoints/ (resumed from automatically), metrics.jsonl, generator.safetensors (EMA weights
when ema_decay > 0, LoRA merged, original key names), generator.json (how to sample it), grid.png, config.yaml.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import DistributedDataParallelKwargs

from shared.config import Presets, cli, option, resolve
from shared.data import LMDBDataset
from shared.io import atomic_path, write_json
from shared.plots import image_grid
from shared.train.lora import add_lora
from shared.train.trainer import TrainConfig, Trainer
from projects.dmd2.backbones import load_backbone
from projects.dmd2.loop import GENERATOR_CONDS, DMD2Step, StepOptions
from projects.dmd2.losses import (DistributionMatchingLoss, FakeDenoisingLoss, GANDiscriminatorLoss,
                                  GANGeneratorLoss, GANNoise)
from projects.dmd2.networks import (GAN_HEAD_LAYOUTS, LORA_TARGETS, FakeScore, GANHead, export_state_dict,
                                    load_published_guidance)
from projects.dmd2.recipes import RECIPES, SCALE_PRESETS


@dataclass
class Config(TrainConfig):
    scale: str = "toy"
    recipe: str = "digits_1step_gan"
    run_dir: str = "results/toy/dmd2/digits_1step_gan"
    backbone: str = field(default="edm", metadata={"choices": ("edm", "sd")})  # edm: pixel space, class labels;
    #   sd: an SD1.5/SDXL pipeline folder
    teacher: str = ""  # edm: folder with edm.json + model.safetensors, or a weights file; sd: pipeline folder
    teacher_config: str = ""  # edm: EDM_CONFIGS name when `teacher` is a bare weights file (imagenet64)
    teacher_strip_prefix: str = ""  # edm: key prefix to strip from a released checkpoint's state dict
    data: str = ""  # LMDB from prepare.py (images+labels for edm, latents+captions for sd)
    resolution: int = 0  # sd: image resolution; 0 = the UNet's sample_size x the VAE factor
    batch_size: int = field(default=32, metadata={"min": 1})  # per process
    generator_lr: float = 2e-6
    guidance_lr: float = 2e-6
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 0.01
    # generator updated every this many steps; the fake denoiser every step
    dfake_gen_update_ratio: int = field(default=5, metadata={"min": 1})
    min_step_percent: float = 0.02
    max_step_percent: float = 0.98
    real_guidance_scale: float = 1.0
    denoising_step_list: list[int] = field(default_factory=lambda: [999])  # one entry: 1-step at that timestep
    backward_simulation: bool = True
    cls_on_clean_image: bool = False  # the GAN head on the fake denoiser's bottleneck
    gen_cls_loss_weight: float = 0.0
    guidance_cls_loss_weight: float = 0.0
    diffusion_gan: bool = False
    diffusion_gan_max_timestep: int = 1000
    gan_head_width: int = 0  # 0 = bottleneck channels
    gan_head_layout: str = option("published", choices=GAN_HEAD_LAYOUTS,
                                  help="published: DMD2's cls_pred_branch, down to 1x1; toy: stops at 2x2 (narrow)")
    gan_head_lr: float = 0.0  # 0 = guidance_lr (as DMD2); a fresh head needs more than a few hundred tiny steps
    generator_cond: str = option("random", choices=GENERATOR_CONDS,
                                 help="random: uniform labels / prompts from train_prompts (DMD2); real: the batch's")
    train_prompts: str = ""  # sd, generator_cond=random: prompt file (one per line); "" = `data`'s captions, drawn
    init_from: str = ""  # start generator + fake denoiser (+ GAN head) from a run_dir or a released checkpoint
    lora_rank: int = 0  # > 0: the generator is a LoRA on the frozen teacher copy
    lora_alpha: float = 8.0
    lora_dropout: float = 0.0
    fsdp_wrap: str = "sdxl"  # FSDP wrap family (shared.train.fsdp.WRAP_CLASSES) when fsdp is set
    grid_size: int = 4  # grid.png is grid_size^2 samples of the final generator
    num_workers: int = 0
    threads: int = 0  # torch CPU threads; 0 = torch default


# presets by scale and by recipe (recipes.py): shared.config picks the recipe named on the command line, in a YAML
# file or in main's cfg, so --help and the saved config.yaml show the recipe's values
PRESETS = Presets(SCALE_PRESETS, key="recipe", variants=RECIPES)


def _trainer(cfg) -> Trainer:
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)]  # GAN head unused on non-GAN paths
    if not cfg.fsdp:
        return Trainer(cfg, kwargs_handlers=handlers)
    from shared.train.fsdp import fsdp_plugin

    # the preset alone wraps nothing; a UNet needs its block classes wrapped (cfg.fsdp still says the preset)
    return Trainer(cfg, kwargs_handlers=handlers, fsdp_plugin=fsdp_plugin(cfg.fsdp, wrap=cfg.fsdp_wrap))


def build(cfg, trainer: Trainer | None = None):
    """Backbone, generator, fake score and the step object (tests drive these directly)."""
    kw = {}
    if cfg.backbone == "edm":
        kw = {"config": cfg.teacher_config, "strip_prefix": cfg.teacher_strip_prefix}
    elif cfg.resolution:
        kw = {"resolution": cfg.resolution}
    backbone = load_backbone(cfg.backbone, cfg.teacher, **kw)
    device = trainer.device if trainer is not None else torch.device("cpu")
    backbone.to(device)
    generator = backbone.copy_teacher()
    gan = cfg.cls_on_clean_image and (cfg.gen_cls_loss_weight > 0 or cfg.guidance_cls_loss_weight > 0)
    head = GANHead(*backbone.bottleneck_shape(), width=cfg.gan_head_width, layout=cfg.gan_head_layout) if gan else None
    fake = FakeScore(backbone.copy_teacher(), head)
    if cfg.init_from:
        init_weights(cfg.init_from, generator, fake)
    if cfg.lora_rank > 0:
        add_lora(generator, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, targets=LORA_TARGETS)
    betas = (cfg.adam_beta1, cfg.adam_beta2)
    opt_g = torch.optim.AdamW([p for p in generator.parameters() if p.requires_grad], lr=cfg.generator_lr,
                              betas=betas, weight_decay=cfg.weight_decay)
    groups = [{"params": fake.unet.parameters()}]
    if head is not None:
        groups.append({"params": head.parameters(), "lr": cfg.gan_head_lr or cfg.guidance_lr})
    opt_f = torch.optim.AdamW(groups, lr=cfg.guidance_lr, betas=betas, weight_decay=cfg.weight_decay)
    if trainer is not None:
        generator, _ = trainer.add("generator", generator, opt_g, trainable_only=cfg.lora_rank > 0,
                                   schedule_steps=max(1, cfg.max_steps // cfg.dfake_gen_update_ratio))
        fake, _ = trainer.add("fake", fake, opt_f, ema=False)
    noise = GANNoise(cfg.diffusion_gan, cfg.diffusion_gan_max_timestep)
    opts = StepOptions(list(cfg.denoising_step_list), cfg.backward_simulation, cfg.dfake_gen_update_ratio,
                       cfg.gen_cls_loss_weight if gan else 0.0, cfg.guidance_cls_loss_weight if gan else 0.0, cfg.seed,
                       cfg.generator_cond)
    step = DMD2Step(backbone, trainer, generator, fake, opts,
                    DistributionMatchingLoss(cfg.min_step_percent, cfg.max_step_percent, cfg.real_guidance_scale),
                    FakeDenoisingLoss(), GANGeneratorLoss(noise), GANDiscriminatorLoss(noise),
                    prompts=prompt_set(cfg))
    return backbone, step, (opt_g, opt_f)


class _Captions:
    """The captions of an LMDB as a random-access prompt set (read one at a time, not all up front)."""

    def __init__(self, path: str):
        self.data = LMDBDataset(path, fields=["caption"])

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> str:
        return self.data[i]["caption"]


def prompt_set(cfg):
    """The generator's prompts for the sd backbone with generator_cond=random (DMD2's --train_prompt_path), else
    None. Without train_prompts: the captions of the training LMDB, drawn independently of the real batch."""
    if cfg.backbone != "sd" or cfg.generator_cond != "random":
        return None
    if cfg.train_prompts:
        from projects.dmd2.prompts import read_prompts

        return read_prompts(cfg.train_prompts)
    if not cfg.data:
        raise ValueError("generator_cond=random on the sd backbone needs train_prompts= or data=")
    return _Captions(cfg.data)


def _first_file(folder: Path, names: tuple[str, ...]) -> Path:
    for n in names:
        if (folder / n).is_file():
            return folder / n
    raise FileNotFoundError(f"{folder}: none of {', '.join(names)} (init_from= wants a DMD2 run_dir or a released "
                            f"training checkpoint folder)")


def init_weights(path: str, generator, fake: FakeScore) -> None:
    """Generator and fake denoiser (+ GAN head when the source has one) from `path`: a DMD2 run_dir of ours, or a
    released DMD2 training checkpoint folder (accelerate's save_state: generator, then the guidance model)."""
    from projects.dmd2.edm import load_state_dict_file
    from shared.train.checkpoint import Checkpointer

    folder = Path(path)
    if (folder / "generator.safetensors").is_file():  # one of our runs
        generator.load_state_dict(load_state_dict_file(folder / "generator.safetensors"), strict=True)
        info = Checkpointer(folder / "checkpoints").latest()
        if info is None:
            raise FileNotFoundError(f"{folder}/checkpoints: no complete checkpoint to take the fake denoiser from")
        sd = Checkpointer.load_tensors(info, "model.fake")
        fake.unet.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith("unet.")}, strict=True)
        head = {k[5:]: v for k, v in sd.items() if k.startswith("head.")}
        if fake.head is not None and head:
            fake.head.load_state_dict(head, strict=True)
        return
    gen_file = _first_file(folder, ("pytorch_model.bin", "model.safetensors"))
    guidance_file = _first_file(folder, ("pytorch_model_1.bin", "model_1.safetensors"))
    generator.load_state_dict(load_state_dict_file(gen_file), strict=True)
    load_published_guidance(fake, load_state_dict_file(guidance_file))


def generator_info(cfg) -> dict:
    return {"backbone": cfg.backbone, "teacher": cfg.teacher, "teacher_config": cfg.teacher_config,
            "teacher_strip_prefix": cfg.teacher_strip_prefix, "resolution": cfg.resolution,
            "denoising_step_list": list(cfg.denoising_step_list), "recipe": cfg.recipe, "scale": cfg.scale}


@torch.no_grad()
def save_grid(backbone, generator, timesteps, path: Path, n: int, seed: int = 0) -> None:
    from projects.dmd2.generation import few_step_generate, prompts_for_grid, to_pil

    prompts = prompts_for_grid(backbone, n * n)
    images = few_step_generate(backbone, generator, prompts, timesteps, seeds=list(range(seed, seed + n * n)))
    with atomic_path(path) as tmp:
        image_grid(to_pil(images), n).save(tmp, format="PNG")


def main(cfg=None):
    cfg = resolve(Config, cfg, PRESETS)
    for key in RECIPES[cfg.recipe].needs:
        if not cfg[key]:
            raise ValueError(f"recipe={cfg.recipe} needs {key}= ({RECIPES[cfg.recipe].description})")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if not cfg.teacher or not cfg.data:
        raise ValueError("teacher= and data= are required (see prepare.py and train_teacher.py)")
    trainer = _trainer(cfg)
    backbone, step, _ = build(cfg, trainer)
    fields = ["image", "label"] if cfg.backbone == "edm" else ["latent", "caption"]
    loader = trainer.loader(LMDBDataset(cfg.data, fields=fields), cfg.batch_size, num_workers=cfg.num_workers)
    for batch in trainer.batches(loader):
        trainer.log(**step.step(batch, trainer.global_step))

    run_dir = Path(cfg.run_dir)
    unit = trainer.unit("generator")
    ema = trainer.ema("generator")
    raw = unit.raw
    if ema is not None:
        with ema.swap(raw):
            weights = export_state_dict(raw)
    else:
        weights = export_state_dict(raw)
    if trainer.is_main:
        from safetensors.torch import save_file

        with atomic_path(run_dir / "generator.safetensors") as tmp:
            save_file(weights, str(tmp), metadata={"step": str(trainer.global_step)})
        write_json(run_dir / "generator.json", generator_info(cfg))
        net = backbone.copy_teacher()
        net.load_state_dict(weights)
        save_grid(backbone, net.eval(), list(cfg.denoising_step_list), run_dir / "grid.png", cfg.grid_size, cfg.seed)
    trainer.finish({"steps": trainer.global_step, "skipped_steps": trainer.skipped_steps})
    return run_dir


if __name__ == "__main__":
    cli(main, Config, PRESETS, __doc__)
