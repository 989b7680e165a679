"""Generation from a distilled generator or from the teacher (baselines), with one seed per sample.

Every sample's noise, including the fresh noise of a multi-step generator's re-noising, is drawn from its own
torch.Generator seeded with that sample's seed: a sample is the same whichever batch or shard it is drawn in.

    gen, info, backbone = load_generator("results/toy/dmd2/digits_1step_gan")
    images = few_step_generate(backbone, gen, prompts, info["denoising_step_list"], seeds=range(16))     # [-1, 1]
    images = teacher_generate(backbone, prompts, "edm_euler", 32, seeds=range(16))
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from projects.dmd2.backbones import Backbone, load_backbone
from projects.dmd2.edm import load_state_dict_file
from projects.dmd2.loop import few_step


def _per_sample_noise(shape, seeds: Sequence[int], device) -> tuple[torch.Tensor, callable]:
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def draw(like_shape):
        return torch.stack([torch.randn(like_shape[1:], generator=g) for g in gens]).to(device)

    def noise_fn(x):
        return draw(x.shape).to(x.dtype)

    return draw(shape), noise_fn


@torch.no_grad()
def few_step_generate(backbone: Backbone, net, prompts: Sequence[str], timesteps: Sequence[int], seeds: Sequence[int],
                      batch_size: int = 64, decode: bool = True) -> torch.Tensor:
    """Images in [-1, 1] (B, 3, H, W) from the few-step generator `net` run on `timesteps`."""
    out = []
    device = next(net.parameters()).device
    for i in range(0, len(prompts), batch_size):
        p, s = list(prompts[i:i + batch_size]), list(seeds[i:i + batch_size])
        cond, _ = backbone.condition(p)
        noise, noise_fn = _per_sample_noise(backbone.sample_shape(len(p)), s, device)
        x = few_step(backbone, net, noise, cond, list(timesteps), noise_fn=noise_fn)
        out.append((backbone.decode(x) if decode else x).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def teacher_generate(backbone: Backbone, prompts: Sequence[str], sampler: str, steps: int, seeds: Sequence[int],
                     guidance_scale: float = 1.0, batch_size: int = 64) -> torch.Tensor:
    """The teacher sampled with a shared.samplers preset (diffusers scheduler)."""
    from shared.samplers import sample

    out = []
    device = next(backbone.teacher.parameters()).device
    for i in range(0, len(prompts), batch_size):
        p, s = list(prompts[i:i + batch_size]), list(seeds[i:i + batch_size])
        cond, uncond = backbone.condition(p)
        x_T, _ = _per_sample_noise(backbone.sample_shape(len(p)), s, device)
        if backbone.name == "edm":
            net = backbone.teacher.model  # EDM schedulers apply c_in/c_skip/c_out; they want the raw network F
            denoiser = lambda x, t, class_labels: net(x, t, class_labels)  # noqa: E731
            kw = {"prediction_type": "epsilon", "sigma_min": float(backbone.sigmas[0]),
                  "sigma_max": float(backbone.sigmas[-1]), "sigma_data": backbone.sigma_data}
        else:
            unet = backbone.teacher
            denoiser = lambda x, t, **c: unet(x, t, return_dict=False, **c)[0]  # noqa: E731
            kw = {"prediction_type": backbone.prediction_type, "schedule": dict(backbone.pipe.scheduler.config)}
        x = sample(denoiser, x_T.shape, sampler, steps, generator=None, x_T=x_T, cond=cond,
                   uncond=uncond if guidance_scale != 1.0 else None, guidance_scale=guidance_scale,
                   progress=False, **kw)
        out.append(backbone.decode(x).float().cpu())
    return torch.cat(out)


def load_generator(run_or_file: str | Path, teacher: str = "", device: str = "cpu"):
    """(generator net, info, backbone) from a training run folder (generator.safetensors + generator.json), or
    a released weights file with `teacher` (+ info beside it or defaults): DMD2's SDXL UNet .bin/.safetensors
    loads into the teacher pipeline's UNet config."""
    path = Path(run_or_file)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such generator (a training run folder or a weights file)")
    info_path = path / "generator.json" if path.is_dir() else path.with_suffix(".json")
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    weights = path / "generator.safetensors" if path.is_dir() else path
    kind = info.get("backbone", "sd")
    teacher = teacher or info.get("teacher", "")
    kw = {}
    if kind == "edm":
        kw = {"config": info.get("teacher_config", ""), "strip_prefix": info.get("teacher_strip_prefix", "")}
    elif info.get("resolution"):
        kw = {"resolution": info["resolution"]}
    backbone = load_backbone(kind, teacher, **kw).to(device)
    net = backbone.copy_teacher().eval().requires_grad_(False)
    net.load_state_dict(load_state_dict_file(weights), strict=True)
    return net.to(device), info, backbone


def prompts_for_grid(backbone: Backbone, n: int) -> list[str]:
    """Toy prompts covering digits and colours; class indices for an ImageNet-size label set."""
    from shared.toy.dataset import COLOUR_NAMES, caption

    if backbone.name == "edm" and backbone.label_dim not in (80,):
        return [str((i * 97) % backbone.label_dim) for i in range(n)]
    return [caption(i % 10, COLOUR_NAMES[(i // 10 + i) % len(COLOUR_NAMES)]) for i in range(n)]


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    arr = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in arr]
